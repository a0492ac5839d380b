//! Binlog positions as real types.
//!
//! * [`BinlogPosition`] is where a reader resumes: a binlog file name and a byte offset in it.
//!   Positions order by the file's numeric sequence (`mariadb-bin.000012` > `mariadb-bin.000009`)
//!   and then by offset, so they can be compared across rotations.
//! * [`SourcePos`] is the identity of one produced record: file sequence, event end offset, row
//!   index inside the rows event and a sub-index (0 = change record, 1 = the tombstone that follows
//!   a delete). Every record carries it (Kafka header `rtis.pos` and the envelope's `source`), and
//!   positions are strictly increasing in binlog order. On restart the producer reads the last
//!   record of each partition and skips everything at or below it: that is how a crash between the
//!   broker's ack and the checkpoint never yields a duplicate.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A binlog file name and the byte offset of the next event to read in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BinlogPosition {
    pub file: String,
    pub pos: u64,
}

impl BinlogPosition {
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        Self {
            file: file.into(),
            pos,
        }
    }

    /// Numeric suffix of the file name (`mysql-bin.000042` → 42).
    pub fn file_seq(&self) -> u64 {
        file_seq(&self.file)
    }
}

/// Numeric suffix of a binlog file name; 0 when it has none.
pub fn file_seq(file: &str) -> u64 {
    file.rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

impl Ord for BinlogPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.file_seq(), &self.file, self.pos).cmp(&(other.file_seq(), &other.file, other.pos))
    }
}

impl PartialOrd for BinlogPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// Error for positions that do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid position {input:?}: expected {expected}")]
pub struct ParsePositionError {
    pub input: String,
    pub expected: &'static str,
}

impl FromStr for BinlogPosition {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePositionError {
            input: s.to_string(),
            expected: "FILE:POS, e.g. mysql-bin.000003:157",
        };
        let (file, pos) = s.rsplit_once(':').ok_or_else(err)?;
        if file.is_empty() {
            return Err(err());
        }
        let pos = pos.parse().map_err(|_| err())?;
        Ok(Self::new(file, pos))
    }
}

/// Identity and order of one produced record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SourcePos {
    /// Binlog file sequence number.
    pub file_seq: u64,
    /// End offset of the rows event (the `log_pos` of its header).
    pub pos: u64,
    /// Row index inside the rows event.
    pub row: u32,
    /// 0 for the change record, 1 for the tombstone that follows a delete.
    pub sub: u8,
}

/// A record position for people: `mysql-bin.000042:1234` when the files' base name is known.
pub fn describe(binlog_base: Option<&str>, pos: &SourcePos) -> String {
    match binlog_base {
        Some(base) => format!("{base}.{:06}:{}", pos.file_seq, pos.pos),
        None => format!("file #{} offset {}", pos.file_seq, pos.pos),
    }
}

impl fmt::Display for SourcePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.file_seq, self.pos, self.row, self.sub
        )
    }
}

impl FromStr for SourcePos {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePositionError {
            input: s.to_string(),
            expected: "FILESEQ:POS:ROW:SUB, e.g. 3:1024:0:0",
        };
        let mut it = s.split(':');
        let mut next = || it.next().ok_or_else(err);
        let file_seq = next()?.parse().map_err(|_| err())?;
        let pos = next()?.parse().map_err(|_| err())?;
        let row = next()?.parse().map_err(|_| err())?;
        let sub = next()?.parse().map_err(|_| err())?;
        if it.next().is_some() {
            return Err(err());
        }
        Ok(Self {
            file_seq,
            pos,
            row,
            sub,
        })
    }
}

/// The identity of a source server: binlog positions of one server mean nothing on another
/// (a failover, a different server behind the same address). `server_id` is unique among the
/// servers of a replication topology; MySQL also has a `server_uuid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceId {
    pub server_id: u32,
    pub server_uuid: Option<String>,
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.server_uuid {
            Some(u) => write!(f, "{}/{u}", self.server_id),
            None => write!(f, "{}", self.server_id),
        }
    }
}

impl FromStr for SourceId {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePositionError {
            input: s.to_string(),
            expected: "SERVER_ID[/SERVER_UUID], e.g. 1 or 1/3e11fa47-71ca-11e1-9e33-c80aa9429562",
        };
        let (id, uuid) = match s.split_once('/') {
            Some((id, uuid)) if !uuid.is_empty() => (id, Some(uuid.to_string())),
            Some(_) => return Err(err()),
            None => (s, None),
        };
        Ok(Self {
            server_id: id.parse().map_err(|_| err())?,
            server_uuid: uuid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_id_round_trips_and_rejects_garbage() {
        for text in ["7", "4294967295", "1/3e11fa47-71ca-11e1-9e33-c80aa9429562"] {
            let id: SourceId = text.parse().unwrap();
            assert_eq!(id.to_string(), text);
        }
        let mysql: SourceId = "1/3e11fa47-71ca-11e1-9e33-c80aa9429562".parse().unwrap();
        assert_eq!(mysql.server_id, 1);
        assert_eq!(
            mysql.server_uuid.as_deref(),
            Some("3e11fa47-71ca-11e1-9e33-c80aa9429562")
        );
        for bad in ["", "x", "1/", "-1", "4294967296", "/uuid"] {
            let e = bad.parse::<SourceId>().unwrap_err();
            assert!(e.to_string().contains("SERVER_ID"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn positions_are_described_with_the_binlog_file_name() {
        let pos = SourcePos {
            file_seq: 1,
            pos: 63050,
            row: 2,
            sub: 0,
        };
        assert_eq!(
            describe(Some("mariadb-bin"), &pos),
            "mariadb-bin.000001:63050"
        );
        assert_eq!(describe(None, &pos), "file #1 offset 63050");
    }

    #[test]
    fn binlog_position_orders_by_file_sequence_then_offset() {
        let a: BinlogPosition = "mysql-bin.000009:900".parse().unwrap();
        let b: BinlogPosition = "mysql-bin.000010:4".parse().unwrap();
        let c: BinlogPosition = "mysql-bin.000010:120".parse().unwrap();
        assert!(a < b && b < c);
        // lexical order would put 1000000 before 999999; sequence order does not
        let d: BinlogPosition = "mysql-bin.999999:4".parse().unwrap();
        let e: BinlogPosition = "mysql-bin.1000000:4".parse().unwrap();
        assert!(d < e);
    }

    #[test]
    fn binlog_position_round_trips_and_rejects_garbage() {
        let p = BinlogPosition::new("mariadb-bin.000003", 1234);
        assert_eq!(p.to_string(), "mariadb-bin.000003:1234");
        assert_eq!(p.to_string().parse::<BinlogPosition>().unwrap(), p);
        assert_eq!(p.file_seq(), 3);
        for bad in ["", "file", ":12", "f:", "f:-1", "f:x"] {
            let err = bad.parse::<BinlogPosition>().unwrap_err();
            assert!(err.to_string().contains("FILE:POS"), "{bad}: {err}");
        }
    }

    #[test]
    fn source_pos_is_totally_ordered_and_round_trips() {
        let a = SourcePos {
            file_seq: 1,
            pos: 500,
            row: 3,
            sub: 0,
        };
        let b = SourcePos { sub: 1, ..a };
        let c = SourcePos {
            row: 4,
            sub: 0,
            ..a
        };
        let d = SourcePos {
            file_seq: 2,
            pos: 4,
            row: 0,
            sub: 0,
        };
        assert!(a < b && b < c && c < d);
        for p in [a, b, c, d] {
            assert_eq!(p.to_string().parse::<SourcePos>().unwrap(), p);
        }
        assert!("1:2:3".parse::<SourcePos>().is_err());
        assert!("1:2:3:4:5".parse::<SourcePos>().is_err());
    }
}
