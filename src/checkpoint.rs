//! Checkpoints in SQLite.
//!
//! One row: the binlog position (and GTID) after the last transaction whose records were all
//! acknowledged by the broker, the commit time of that transaction and the highest
//! `last_updated` value acknowledged. A running producer holds an exclusive `flock` on the file,
//! so a second producer (or a `reset`) on the same file fails at start instead of interleaving
//! checkpoints; the lock dies with the process, also on kill -9. The database is in WAL mode with
//! `synchronous=FULL`: a commit is durable when `save` returns, and `rtis-producer status` can
//! read it while the producer runs.
//!
//! Writes never run on the async runtime's workers: [`CheckpointWriter`] owns the connection on
//! a dedicated thread and is fed through a `watch` channel, which coalesces checkpoints that
//! arrive while a write (with `synchronous=FULL`) is in progress — batching comes for free.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::position::{BinlogPosition, SourceId, SourcePos};

/// What is durable after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Where to resume reading: the start of the first transaction not fully acknowledged.
    pub position: BinlogPosition,
    /// GTID of the last acknowledged transaction, where the server has GTIDs.
    pub gtid: Option<String>,
    /// Binlog event time of the last acknowledged transaction (ms since epoch).
    pub last_commit_ts_ms: i64,
    /// Highest `last_updated` (µs since epoch) among acknowledged records.
    pub last_updated_us: Option<i64>,
    /// Set while a snapshot is in progress (streaming then starts at `position`, its anchor).
    pub snapshot: Option<SnapshotState>,
    /// Set when a transaction's records were committed only in part (a source transaction too
    /// large for one Kafka transaction): its records at or below this position are in the
    /// topic, and reading resumes at `position` (the transaction's start) skipping them.
    pub resume_after: Option<SourcePos>,
    /// The server the position belongs to (positions mean nothing on another server).
    pub source: Option<SourceId>,
    /// Written by `rtis-producer reset`: this checkpoint overrides the one in the topic on the
    /// next start.
    pub reset: bool,
}

impl Checkpoint {
    /// A checkpoint at `position` with nothing else known.
    pub fn at(position: BinlogPosition) -> Self {
        Self {
            position,
            gtid: None,
            last_commit_ts_ms: 0,
            last_updated_us: None,
            snapshot: None,
            resume_after: None,
            source: None,
            reset: false,
        }
    }

    /// The record of this checkpoint in `<topic>-checkpoints` (JSON), written by `connector`.
    pub fn to_json(&self, connector: &str) -> String {
        serde_json::json!({
            "connector": connector,
            "binlog_file": self.position.file,
            "binlog_pos": self.position.pos,
            "gtid": self.gtid,
            "last_commit_ts_ms": self.last_commit_ts_ms,
            "last_updated_us": self.last_updated_us,
            "snapshot": self.snapshot.as_ref().map(|s| serde_json::json!({
                "since_us": s.since_us,
                "cursor": s.cursor.map(|c| c.to_string()),
                "rows": s.rows,
                "only": s.only,
            })),
            "resume_after": self.resume_after.map(|p| p.to_string()),
            "source": self.source.as_ref().map(ToString::to_string),
            "written_at_ms": now_ms(),
        })
        .to_string()
    }

    /// Parses a record of `<topic>-checkpoints`.
    pub fn from_json(bytes: &[u8]) -> std::result::Result<Self, String> {
        let j: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let str_of = |k: &str| j[k].as_str().map(str::to_string);
        let bad = |k: &str| format!("field {k} missing or malformed");
        let parse_opt =
            |k: &str, v: &serde_json::Value| -> std::result::Result<Option<String>, String> {
                match v {
                    serde_json::Value::Null => Ok(None),
                    serde_json::Value::String(s) => Ok(Some(s.clone())),
                    _ => Err(bad(k)),
                }
            };
        let snapshot = match &j["snapshot"] {
            serde_json::Value::Null => None,
            s => Some(SnapshotState {
                since_us: s["since_us"].as_i64(),
                cursor: parse_opt("snapshot.cursor", &s["cursor"])?
                    .map(|c| c.parse::<SortKey>())
                    .transpose()?,
                rows: s["rows"].as_u64().ok_or_else(|| bad("snapshot.rows"))?,
                only: s["only"].as_bool().unwrap_or(false),
            }),
        };
        Ok(Self {
            position: BinlogPosition::new(
                str_of("binlog_file").ok_or_else(|| bad("binlog_file"))?,
                j["binlog_pos"].as_u64().ok_or_else(|| bad("binlog_pos"))?,
            ),
            gtid: parse_opt("gtid", &j["gtid"])?,
            last_commit_ts_ms: j["last_commit_ts_ms"].as_i64().unwrap_or(0),
            last_updated_us: j["last_updated_us"].as_i64(),
            snapshot,
            resume_after: parse_opt("resume_after", &j["resume_after"])?
                .map(|p| {
                    p.parse()
                        .map_err(|e: crate::position::ParsePositionError| e.to_string())
                })
                .transpose()?,
            source: parse_opt("source", &j["source"])?
                .map(|p| {
                    p.parse()
                        .map_err(|e: crate::position::ParsePositionError| e.to_string())
                })
                .transpose()?,
            reset: false,
        })
    }
}

/// Progress of a snapshot, durable with the records it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotState {
    /// Rows selected have `last_updated >= since` (µs since epoch); `None` selects all rows.
    pub since_us: Option<i64>,
    /// Sort key `(last_updated µs, id)` of the last acknowledged snapshot row.
    pub cursor: Option<SortKey>,
    /// Rows acknowledged so far.
    pub rows: u64,
    /// `snapshot-only`: exit after the snapshot instead of streaming.
    pub only: bool,
}

/// Keyset-pagination key of the snapshot: `(last_updated in µs, primary key)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SortKey {
    pub ts_us: i64,
    pub id: i128,
}

impl std::fmt::Display for SortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.ts_us, self.id)
    }
}

impl std::str::FromStr for SortKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once(':')
            .ok_or_else(|| format!("bad snapshot cursor {s:?}"))?;
        Ok(Self {
            ts_us: a
                .parse()
                .map_err(|_| format!("bad snapshot cursor {s:?}"))?,
            id: b
                .parse()
                .map_err(|_| format!("bad snapshot cursor {s:?}"))?,
        })
    }
}

/// The SQLite file holding the checkpoint.
pub struct CheckpointStore {
    // dropped before `_lock`: closing the lock's descriptor first would drop SQLite's POSIX locks
    conn: Connection,
    path: PathBuf,
    _lock: std::fs::File,
}

/// What `rtis-producer status` shows: the checkpoint, when it was written, whether a producer
/// holds the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub checkpoint: Option<Checkpoint>,
    pub written_at_ms: Option<i64>,
    pub locked: bool,
}

/// Takes the exclusive, non-blocking `flock` that marks the file as in use by a producer.
fn try_lock(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // SAFETY: flock on a valid, owned descriptor
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(Some(file))
    } else {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(e)
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl CheckpointStore {
    /// Opens (creating if needed) and locks the store. Blocking: call from a blocking context.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |msg: String| Error::State {
            path: path.to_path_buf(),
            msg,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                err(format!(
                    "cannot create the directory {}: {e} (check --state)",
                    dir.display()
                ))
            })?;
        }
        // a file that is there before the first open must hold rtis's table (checked below): a
        // truncated or foreign file is never mistaken for a first start
        let existed = path.exists();
        let lock = try_lock(path)
            .map_err(|e| {
                err(format!(
                    "cannot open: {e} (check --state and its permissions)"
                ))
            })?
            .ok_or_else(|| {
                err("locked by another running rtis-producer; use a separate --state file per producer".into())
            })?;
        let conn = Connection::open(path).map_err(|e| {
            err(format!(
                "cannot open: {e} (check --state and its permissions)"
            ))
        })?;
        let locked = |e: rusqlite::Error| {
            let busy = matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            );
            if busy {
                err("locked by another running rtis-producer; use a separate --state file per producer".into())
            } else if matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
            ) {
                err(format!(
                    "the file is corrupt or not an rtis checkpoint ({e}); refusing to start from an unknown \
                     position. Restore it from a backup, or move it aside to start anew (the topic's last \
                     records still prevent duplicates)"
                ))
            } else {
                err(format!("{e}"))
            }
        };
        // a `status` reader may hold SQLite's lock for a moment
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(locked)?;
        if existed && !has_checkpoint_table(&conn).map_err(locked)? {
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            return Err(err(format!(
                "the file exists but holds no rtis checkpoint ({size} bytes: truncated, or not an rtis \
                 state file); refusing to start from an unknown position. Restore it from a backup, or \
                 delete it to start anew with a snapshot (the topic's last records still prevent \
                 duplicates)"
            )));
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(locked)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(locked)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(locked)?;
        if check != "ok" {
            // SQLite's report spans lines; the error is one line
            let check = check.split_whitespace().collect::<Vec<_>>().join(" ");
            return Err(err(format!(
                "integrity check failed ({check}); refusing to start from an unknown position. \
                 Restore it from a backup, or delete it to start anew with a snapshot"
            )));
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS checkpoint (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                binlog_file TEXT NOT NULL,
                binlog_pos INTEGER NOT NULL,
                gtid TEXT,
                last_commit_ts_ms INTEGER NOT NULL,
                last_updated_us INTEGER,
                snapshot_since_us INTEGER,
                snapshot_cursor TEXT,
                snapshot_rows INTEGER,
                snapshot_only INTEGER,
                written_at_ms INTEGER NOT NULL
            );",
        )
        .map_err(locked)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS request (id INTEGER PRIMARY KEY CHECK (id = 1), kind TEXT NOT NULL);",
        )
        .map_err(locked)?;
        // columns added after the first version
        let cols: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('checkpoint')")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .map_err(locked)?;
        for (name, ty) in [
            ("resume_after", "TEXT"),
            ("source", "TEXT"),
            ("reset_pending", "INTEGER"),
        ] {
            if !cols.iter().any(|c| c == name) {
                conn.execute_batch(&format!("ALTER TABLE checkpoint ADD COLUMN {name} {ty}"))
                    .map_err(locked)?;
            }
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Reads the checkpoint without taking the producer's lock (for `status`). Blocking.
    pub fn inspect(path: &Path) -> Result<Status> {
        let err = |msg: String| Error::State {
            path: path.to_path_buf(),
            msg,
        };
        if !path.is_file() {
            return Err(err(
                "no such file (check --state; a producer creates it on its first start)".into(),
            ));
        }
        // probe the lock on a descriptor closed before SQLite opens the file
        let locked = try_lock(path)
            .map_err(|e| err(format!("cannot open: {e}")))?
            .is_none();
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(format!("cannot open: {e}")))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| err(e.to_string()))?;
        let has_table = has_checkpoint_table(&conn).map_err(|e| {
            err(format!(
                "not a readable rtis checkpoint ({e}); it may be corrupt"
            ))
        })?;
        if !has_table {
            return Err(err(
                "holds no rtis checkpoint table (truncated, or not an rtis state file)".into(),
            ));
        }
        let written_at_ms = conn
            .query_row(
                "SELECT written_at_ms FROM checkpoint WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| err(format!("cannot read the checkpoint: {e}")))?;
        let checkpoint = load_from(&conn, path)?;
        Ok(Status {
            checkpoint,
            written_at_ms,
            locked,
        })
    }

    /// Removes the checkpoint and asks the next start for a new snapshot, whatever checkpoint
    /// the topic holds (`reset --snapshot`). The request ends with the next checkpoint saved.
    pub fn request_snapshot(&self) -> Result<()> {
        self.clear()?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO request (id, kind) VALUES (1, 'snapshot')",
                [],
            )
            .map(|_| ())
            .map_err(|e| Error::State {
                path: self.path.clone(),
                msg: format!("cannot record the snapshot request: {e}"),
            })
    }

    /// Whether `reset --snapshot` asked for a new snapshot.
    pub fn snapshot_requested(&self) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT count(*) FROM request WHERE kind = 'snapshot'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| Error::State {
                path: self.path.clone(),
                msg: format!("cannot read the requests: {e}"),
            })
    }

    /// Removes the checkpoint: the next start behaves like a first start (`--snapshot`).
    pub fn clear(&self) -> Result<()> {
        self.conn
            .execute("DELETE FROM checkpoint", [])
            .map(|_| ())
            .map_err(|e| Error::State {
                path: self.path.clone(),
                msg: format!("cannot clear the checkpoint: {e}"),
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Result<Option<Checkpoint>> {
        load_from(&self.conn, &self.path)
    }

    pub fn save(&self, cp: &Checkpoint) -> Result<()> {
        if !cp.reset {
            // a checkpoint of a new run answers a pending `reset --snapshot`
            self.conn
                .execute("DELETE FROM request", [])
                .map_err(|e| Error::State {
                    path: self.path.clone(),
                    msg: format!("cannot write the checkpoint: {e}"),
                })?;
        }
        self.conn
            .execute(
                "INSERT INTO checkpoint (id, binlog_file, binlog_pos, gtid, last_commit_ts_ms, last_updated_us,
                    snapshot_since_us, snapshot_cursor, snapshot_rows, snapshot_only, written_at_ms,
                    resume_after, source, reset_pending)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT(id) DO UPDATE SET binlog_file = ?1, binlog_pos = ?2, gtid = ?3,
                   last_commit_ts_ms = ?4, last_updated_us = ?5, snapshot_since_us = ?6,
                   snapshot_cursor = ?7, snapshot_rows = ?8, snapshot_only = ?9, written_at_ms = ?10,
                   resume_after = ?11, source = ?12, reset_pending = ?13",
                params![
                    cp.position.file,
                    cp.position.pos as i64,
                    cp.gtid,
                    cp.last_commit_ts_ms,
                    cp.last_updated_us,
                    cp.snapshot.as_ref().and_then(|s| s.since_us),
                    cp.snapshot.as_ref().and_then(|s| s.cursor.map(|c| c.to_string())),
                    cp.snapshot.as_ref().map(|s| s.rows as i64),
                    cp.snapshot.as_ref().map(|s| s.only as i64),
                    now_ms(),
                    cp.resume_after.map(|p| p.to_string()),
                    cp.source.as_ref().map(ToString::to_string),
                    cp.reset as i64,
                ],
            )
            .map(|_| ())
            .map_err(|e| Error::State {
                path: self.path.clone(),
                msg: format!("cannot write the checkpoint: {e}"),
            })
    }
}

fn has_checkpoint_table(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'checkpoint'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// An optional text column parsed with `FromStr`.
fn parsed<T: std::str::FromStr>(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    let text: Option<String> = r.get(i)?;
    text.map(|t| {
        t.parse::<T>().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                i,
                rusqlite::types::Type::Text,
                e.to_string().into(),
            )
        })
    })
    .transpose()
}

fn load_from(conn: &Connection, path: &Path) -> Result<Option<Checkpoint>> {
    conn.query_row(
        "SELECT binlog_file, binlog_pos, gtid, last_commit_ts_ms, last_updated_us,
                        snapshot_since_us, snapshot_cursor, snapshot_rows, snapshot_only,
                        resume_after, source, reset_pending
                 FROM checkpoint WHERE id = 1",
        [],
        |r| {
            let rows: Option<i64> = r.get(7)?;
            let cursor: Option<String> = r.get(6)?;
            let cursor = match cursor {
                Some(c) => Some(c.parse::<SortKey>().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        6,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })?),
                None => None,
            };
            Ok(Checkpoint {
                position: BinlogPosition::new(r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64),
                gtid: r.get(2)?,
                last_commit_ts_ms: r.get(3)?,
                last_updated_us: r.get(4)?,
                snapshot: rows.map(|rows| SnapshotState {
                    since_us: r.get(5).ok().flatten(),
                    cursor,
                    rows: rows as u64,
                    only: r.get::<_, Option<i64>>(8).ok().flatten().unwrap_or(0) != 0,
                }),
                resume_after: parsed(r, 9)?,
                source: parsed(r, 10)?,
                reset: r.get::<_, Option<i64>>(11)?.unwrap_or(0) != 0,
            })
        },
    )
    .optional()
    .map_err(|e| Error::State {
        path: path.to_path_buf(),
        msg: format!("cannot read the checkpoint: {e}"),
    })
}

/// Writes checkpoints on a dedicated thread, latest value wins.
pub struct CheckpointWriter {
    tx: watch::Sender<Option<Checkpoint>>,
    thread: std::thread::JoinHandle<Result<CheckpointStore>>,
}

impl CheckpointWriter {
    pub fn spawn(store: CheckpointStore) -> Self {
        Self::spawn_observed(store, |_| {})
    }

    /// Like [`spawn`](Self::spawn); `written` is called after each durable write.
    pub fn spawn_observed(
        store: CheckpointStore,
        on_written: impl Fn(&Checkpoint) + Send + 'static,
    ) -> Self {
        let (tx, mut rx) = watch::channel(None::<Checkpoint>);
        let thread = std::thread::Builder::new()
            .name("rtis-checkpoint".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("current-thread runtime");
                let mut written: Option<Checkpoint> = None;
                loop {
                    let open = rt.block_on(rx.changed()).is_ok();
                    let cp = rx.borrow_and_update().clone();
                    if let Some(cp) = cp {
                        if written.as_ref() != Some(&cp) {
                            store.save(&cp)?;
                            on_written(&cp);
                            tracing::debug!(position = %cp.position, "checkpoint written");
                            written = Some(cp);
                        }
                    }
                    if !open {
                        return Ok(store);
                    }
                }
            })
            .expect("spawn checkpoint thread");
        Self { tx, thread }
    }

    /// Queues a checkpoint; it replaces any not yet written.
    pub fn update(&self, cp: Checkpoint) {
        self.tx.send_replace(Some(cp));
    }

    /// Whether the writer thread stopped (it does so only on a write error).
    pub fn is_dead(&self) -> bool {
        self.thread.is_finished()
    }

    /// Writes the last queued checkpoint and returns the store.
    pub async fn finish(self) -> Result<CheckpointStore> {
        drop(self.tx);
        let thread = self.thread;
        let path = PathBuf::from("checkpoint");
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Err(Error::State {
                path,
                msg: "the checkpoint writer thread panicked".into(),
            }),
            Err(e) => Err(Error::State {
                path,
                msg: format!("waiting for the checkpoint writer failed: {e}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(pos: u64) -> Checkpoint {
        Checkpoint {
            position: BinlogPosition::new("mariadb-bin.000001", pos),
            gtid: Some("0-1-5".into()),
            last_commit_ts_ms: 1_700_000_000_000,
            last_updated_us: Some(1_700_000_000_000_001),
            snapshot: (pos % 2 == 0).then_some(SnapshotState {
                since_us: Some(5),
                cursor: Some(SortKey {
                    ts_us: 7,
                    id: u64::MAX as i128,
                }),
                rows: pos,
                only: true,
            }),
            resume_after: (pos % 3 == 0).then_some(SourcePos {
                file_seq: 1,
                pos,
                row: 2,
                sub: 1,
            }),
            source: Some(SourceId {
                server_id: 7,
                server_uuid: (pos % 2 == 1).then(|| "3e11fa47-71ca-11e1-9e33-c80aa9429562".into()),
            }),
            reset: pos % 5 == 0,
        }
    }

    #[test]
    fn checkpoint_records_round_trip_as_json() {
        for p in [99, 100, 102, 105] {
            let mut c = cp(p);
            c.reset = false; // not part of the topic's record
            let json = c.to_json("shop-connector");
            let j: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(j["connector"], "shop-connector");
            assert_eq!(Checkpoint::from_json(json.as_bytes()).unwrap(), c, "{json}");
        }
        let e = Checkpoint::from_json(b"{\"binlog_pos\": 4}").unwrap_err();
        assert!(e.contains("binlog_file"), "{e}");
        assert!(Checkpoint::from_json(b"nope").is_err());
    }

    #[test]
    fn saves_loads_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/rtis.sqlite");
        let store = CheckpointStore::open(&path).unwrap();
        assert_eq!(store.load().unwrap(), None);
        store.save(&cp(100)).unwrap();
        store.save(&cp(200)).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp(200)));
        let second = CheckpointStore::open(&path)
            .err()
            .expect("second open must fail");
        assert!(
            second
                .to_string()
                .contains("locked by another running rtis-producer"),
            "{second}"
        );
        drop(store);
        let again = CheckpointStore::open(&path).unwrap();
        assert_eq!(again.load().unwrap(), Some(cp(200)));
    }

    #[test]
    fn inspect_reads_while_locked_and_clear_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rtis.sqlite");
        let e = CheckpointStore::inspect(&path).unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
        let store = CheckpointStore::open(&path).unwrap();
        let st = CheckpointStore::inspect(&path).unwrap();
        assert_eq!((st.checkpoint, st.locked), (None, true));
        store.save(&cp(100)).unwrap();
        let st = CheckpointStore::inspect(&path).unwrap();
        assert_eq!(st.checkpoint, Some(cp(100)));
        assert!(st.locked && st.written_at_ms.is_some());
        // inspecting must not break the producer's hold on the file
        store.save(&cp(102)).unwrap();
        assert!(CheckpointStore::open(&path).is_err(), "still locked");
        drop(store);
        let st = CheckpointStore::inspect(&path).unwrap();
        assert_eq!((st.checkpoint, st.locked), (Some(cp(102)), false));
        let store = CheckpointStore::open(&path).unwrap();
        store.clear().unwrap();
        assert_eq!(store.load().unwrap(), None);
    }

    #[test]
    fn refuses_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rtis.sqlite");
        std::fs::write(
            &path,
            b"this is not sqlite at all, just some bytes that fill a header..........",
        )
        .unwrap();
        let e = CheckpointStore::open(&path).err().expect("must refuse");
        assert!(e.to_string().contains("corrupt"), "{e}");
    }

    #[test]
    fn refuses_a_truncated_or_foreign_file_but_not_a_cleared_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rtis.sqlite");
        let store = CheckpointStore::open(&path).unwrap();
        store.save(&cp(100)).unwrap();
        drop(store);
        // truncated to nothing (SQLite would happily treat it as a new, empty database)
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        let _ = std::fs::remove_file(dir.path().join("rtis.sqlite-wal"));
        let e = CheckpointStore::open(&path).err().expect("must refuse");
        let msg = e.to_string();
        assert!(msg.contains("holds no rtis checkpoint"), "{msg}");
        assert!(
            msg.contains("0 bytes") && msg.contains("rtis.sqlite"),
            "{msg}"
        );
        let e = CheckpointStore::inspect(&path).unwrap_err();
        assert!(e.to_string().contains("no rtis checkpoint table"), "{e}");
        // refusing leaves the file as it was: every later start refuses too
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(CheckpointStore::open(&path).is_err());

        // some other SQLite database
        let foreign = dir.path().join("other.sqlite");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        let e = CheckpointStore::open(&foreign).err().expect("must refuse");
        assert!(e.to_string().contains("holds no rtis checkpoint"), "{e}");

        // a cleared checkpoint (reset --snapshot) is a deliberate first start
        let cleared = dir.path().join("cleared.sqlite");
        let store = CheckpointStore::open(&cleared).unwrap();
        store.save(&cp(100)).unwrap();
        store.clear().unwrap();
        drop(store);
        let store = CheckpointStore::open(&cleared).unwrap();
        assert_eq!(store.load().unwrap(), None);
    }

    #[tokio::test]
    async fn writer_thread_writes_the_latest_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rtis.sqlite");
        let w = CheckpointWriter::spawn(CheckpointStore::open(&path).unwrap());
        for p in 1..=500 {
            w.update(cp(p));
        }
        let store = w.finish().await.unwrap();
        assert_eq!(store.load().unwrap(), Some(cp(500)));
    }
}
