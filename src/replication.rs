//! Replication: reads the binlog as a replica, turns row events of the captured table into
//! records and hands them to the [`Sink`], in binlog order.
//!
//! Correctness rules this module keeps:
//! * Every record carries its [`SourcePos`] (strictly increasing in binlog order). A session
//!   starts at the connector's last committed checkpoint; records at or below its
//!   `resume_after` (a source transaction committed in part) are skipped, and so are records
//!   below a position the topic already covers after a backward `reset`.
//! * Boundaries are only real transaction ends: XID, `COMMIT`/`ROLLBACK`, a standalone
//!   statement (DDL) and rotations outside a transaction — never a `SAVEPOINT` or any other
//!   statement inside a transaction. The sink commits its Kafka transaction only there (or,
//!   for an oversized source transaction, with a checkpoint inside it).
//! * Each rows event is decoded with the schema of its own TABLE_MAP event (FULL row metadata),
//!   so events written before an `ALTER TABLE` decode with the columns they had.
//! * CRC32 of every event is verified (the client library strips it without checking).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::binlog::BinlogChecksumAlg;
use mysql_async::prelude::*;
use mysql_async::{BinlogStreamRequest, Opts};
use tokio::sync::watch;

use crate::avro::{self, SourceInfo, WriterSchema};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::framing::{Framing, Headers};
use crate::kafka::partition_for;
use crate::position::{file_seq, BinlogPosition, SourcePos};
use crate::preflight::{self, SourceFacts};
use crate::schema::{ColumnKind, TableSchema};
use crate::sink::Sink;
use crate::value::{convert, Datum};

/// Writer schemas, record headers and table schema prepared once per distinct TABLE_MAP.
#[derive(Debug)]
pub struct Prepared {
    pub table: TableSchema,
    pub value: WriterSchema,
    pub key: WriterSchema,
    /// What precedes the key and value bodies (see [`crate::framing`]).
    pub headers: Headers,
    pub timestamp_column: Option<usize>,
}

impl Prepared {
    /// Schemas of `table`, framed by `framing` (for `confluent`, registered in the registry
    /// first). `changes`: how the table differs from its previous shape, named in a refusal.
    pub async fn new(
        table: TableSchema,
        ts_col: &str,
        framing: &Framing,
        changes: String,
    ) -> Result<Self> {
        let value = WriterSchema::parse(&avro::envelope_schema_json(&table))?;
        let key = WriterSchema::parse(&avro::key_schema_json(&table))?;
        let headers = framing.headers(&table, &key, &value, changes).await?;
        Ok(Self {
            value,
            key,
            headers,
            timestamp_column: table.column_index(ts_col),
            table,
        })
    }
}

pub use crate::sink::Ack;

/// Counters shared with the caller.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamStats {
    pub records: u64,
    pub skipped_duplicates: u64,
    pub transactions: u64,
}

/// Everything one streaming session needs.
pub struct Streamer<'a> {
    pub opts: Opts,
    pub facts: &'a SourceFacts,
    pub server_id: u32,
    pub heartbeat: Duration,
    /// The transactional writer of this session.
    pub sink: Sink,
    pub partitions: i32,
    /// Records at or below this position are already in the topic (see the module docs).
    pub skip_up_to: Option<SourcePos>,
    pub timestamp_column: String,
    pub stats: StreamStats,
    /// Shared with the metrics endpoint.
    pub metrics: Arc<crate::metrics::ProducerMetrics>,
    /// The configured message size limit, named when a record exceeds it.
    pub max_message_bytes: String,
    /// Highest `last_updated` seen, carried into checkpoints.
    pub last_updated_us: Option<i64>,
    /// How records are framed (`--format`).
    pub framing: Framing,
    // state while streaming
    file: String,
    gtid: Option<String>,
    in_txn: bool,
    /// Inside a two-phase XA transaction (after `XA START`, until its XA PREPARE).
    xa: bool,
    checksum_verified: bool,
    /// The file the stream was requested from, until the server's fake ROTATE confirms it.
    expect_rotate_to: Option<String>,
    tables: HashMap<u64, (Arc<TableMapEvent<'static>>, Arc<Prepared>)>,
    /// Inside a MySQL transaction payload: the rows numbered so far (all its events share the
    /// payload's position, so row numbers run on across its rows events).
    payload_rows: Option<u32>,
    /// The captured table's schema as of its last table map (to describe schema changes).
    last_schema: Option<TableSchema>,
    /// The last statement that may have changed the captured table, and where it was.
    last_ddl: Option<(String, String)>,
    buf: Vec<u8>,
    key_buf: Vec<u8>,
    /// Set while scanning instead of emitting (see [`Streamer::changed_between`]).
    scan: Option<Scan>,
}

/// What a scan of the binlog between a snapshot's anchor and a later read view collects.
struct Scan {
    until: BinlogPosition,
    /// Per primary key changed in between: its row at the anchor (the first change's before
    /// image), or `None` when it did not exist then.
    first: HashMap<i128, Option<Vec<Datum>>>,
    done: bool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The file name of a ROTATE event body (8-byte position, then the name).
///
/// Before the format description arrives the reader cannot know that checksums are on, so the
/// fake ROTATE that starts a stream keeps its 4 CRC32 bytes at the end of the name
/// (mysql_async #189). They are stripped when they are the event's own checksum; cutting at the
/// last digit instead fails whenever a checksum byte happens to be an ASCII digit.
pub fn rotate_name(header: &[u8; 19], body: &[u8]) -> String {
    let name = body.get(8..).unwrap_or_default();
    if name.len() > 4 {
        let (payload, sum) = body.split_at(body.len() - 4);
        let mut h = crc32fast::Hasher::new();
        h.update(header);
        h.update(payload);
        if h.finalize() == u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]) {
            return String::from_utf8_lossy(&name[..name.len() - 4]).into_owned();
        }
    }
    String::from_utf8_lossy(name).into_owned()
}

/// The 19 header bytes of an event, as they were on the wire.
fn header_bytes(h: &mysql_async::binlog::events::BinlogEventHeader) -> [u8; 19] {
    let mut b = [0u8; 19];
    b[0..4].copy_from_slice(&h.timestamp().to_le_bytes());
    b[4] = h.event_type_raw();
    b[5..9].copy_from_slice(&h.server_id().to_le_bytes());
    b[9..13].copy_from_slice(&h.event_size().to_le_bytes());
    b[13..17].copy_from_slice(&h.log_pos().to_le_bytes());
    b[17..19].copy_from_slice(&h.flags_raw().to_le_bytes());
    b
}

/// `ev`'s format description for events rtis rebuilds from it (decompressed, or taken out of a
/// payload): the same format, with no checksum (the one `ev` came with was verified).
fn checksumless_fde(ev: &Event) -> mysql_async::binlog::events::FormatDescriptionEvent<'static> {
    let mut footer = ev.footer();
    footer.set_checksum_enabled(false);
    ev.fde().clone().with_footer(footer)
}

/// MySQL's TRANSACTION_PAYLOAD_EVENT: a whole transaction's events, usually zstd-compressed.
const PAYLOAD_EVENT: u8 = 40;

/// The events inside a transaction payload, each with the payload's end position as its own
/// (inside a payload no event has a position a reader could resume at: the payload is read
/// whole or not at all) and no checksum (the payload's was verified).
fn payload_events(ev: &Event) -> std::io::Result<Vec<Event>> {
    use std::io::Read;
    let payload: mysql_async::binlog::events::TransactionPayloadEvent<'_> = ev.read_event()?;
    let mut reader = payload.decompressed()?;
    let fde = checksumless_fde(ev);
    let log_pos = ev.header().log_pos();
    let mut out = Vec::new();
    while reader.has_data_left()? {
        let mut bytes = vec![0u8; 19];
        reader.read_exact(&mut bytes)?;
        let size = u32::from_le_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]) as usize;
        if size < 19 {
            return Err(std::io::Error::other(format!(
                "inner event of {size} bytes, shorter than its header"
            )));
        }
        bytes.resize(size, 0);
        reader.read_exact(&mut bytes[19..])?;
        bytes[13..17].copy_from_slice(&log_pos.to_le_bytes());
        out.push(Event::read(&fde, &bytes[..])?);
    }
    Ok(out)
}

/// MariaDB GTID event flags (`Gtid_log_event::FL_*`).
const GTID_STANDALONE: u8 = 1;
const GTID_PREPARED_XA: u8 = 64;

/// A MariaDB GTID event's (type 162: seq_no u64, domain_id u32, flags u8) `domain-server-seq`
/// and flags.
fn mariadb_gtid(data: &[u8], server_id: u32) -> Option<(String, u8)> {
    if data.len() < 13 {
        return None;
    }
    let seq = u64::from_le_bytes(data[0..8].try_into().ok()?);
    let domain = u32::from_le_bytes(data[8..12].try_into().ok()?);
    Some((format!("{domain}-{server_id}-{seq}"), data[12]))
}

/// A statement in the binlog that changes the captured table without row events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatementProblem {
    /// INSERT/UPDATE/DELETE/REPLACE/LOAD DATA logged as a statement.
    Dml,
    /// TRUNCATE: every row goes, with no row events.
    Truncate,
}

impl StatementProblem {
    fn message(self, db: &str, table: &str, stmt: &str, at: &str) -> String {
        match self {
            StatementProblem::Dml => format!(
                "a change to `{db}`.`{table}` is logged as a statement (`{stmt}`), not as row events: rtis \
                 reads row events only, so it cannot tell which rows changed, and stops here rather than \
                 skip it (the checkpoint stays before this transaction). A session wrote it with \
                 binlog_format STATEMENT or MIXED (SET SESSION binlog_format overrides the server's ROW). \
                 Make every writer use ROW; then start over with a new --topic and --state (a fresh \
                 snapshot), or `reset --to-position` past {at} if consumers may miss this change"
            ),
            StatementProblem::Truncate => format!(
                "`{stmt}` empties `{db}`.`{table}` without row events, so no delete records can be \
                 emitted for its rows and consumers would keep rows the table no longer has. rtis stops \
                 here (the checkpoint stays before it). To go on: start over with a new --topic and \
                 --state (a fresh snapshot), or `reset --to-position` {at} if consumers are told to \
                 drop their copy of the table themselves. DELETE FROM `{table}` is captured row by row"
            ),
        }
    }
}

/// Whether `sql` (a QUERY event run in database `current_db`) changes `db`.`table` without row
/// events. The table counts as named when an identifier equal to it (case-insensitively, quoted
/// or not) is qualified with `db`, or unqualified while `current_db` is `db`.
fn statement_problem(
    sql: &str,
    current_db: &str,
    db: &str,
    table: &str,
) -> Option<StatementProblem> {
    let body = strip_leading_comments(sql);
    let first: String = body
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    let problem = match first.as_str() {
        "insert" | "update" | "delete" | "replace" | "load" => StatementProblem::Dml,
        "truncate" => StatementProblem::Truncate,
        _ => return None,
    };
    names_table(body, current_db, db, table).then_some(problem)
}

fn strip_leading_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("/*") {
            match rest.find("*/") {
                Some(end) => s = &rest[end + 2..],
                None => return "",
            }
        } else if s.starts_with("--") || s.starts_with('#') {
            match s.find('\n') {
                Some(end) => s = &s[end + 1..],
                None => return "",
            }
        } else {
            return s;
        }
    }
}

/// Identifiers of `sql` in order, with whether each is qualified by the one before (`a`.`b`).
fn identifiers(sql: &str) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    let b = sql.as_bytes();
    let mut i = 0;
    let mut after_dot = false;
    while i < b.len() {
        let c = b[i];
        if c == b'`' {
            let mut name = String::new();
            i += 1;
            while i < b.len() {
                if b[i] == b'`' {
                    if b.get(i + 1) == Some(&b'`') {
                        name.push('`');
                        i += 2;
                        continue;
                    }
                    break;
                }
                let ch = sql[i..].chars().next().expect("char boundary");
                name.push(ch);
                i += ch.len_utf8();
            }
            i += 1;
            out.push((name, after_dot));
            after_dot = false;
        } else if c == b'\'' || c == b'"' {
            // a string literal: skip it (backslash escapes and doubled quotes)
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            after_dot = false;
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            out.push((sql[start..i].to_string(), after_dot));
            after_dot = false;
        } else {
            after_dot = c == b'.';
            i += 1;
        }
    }
    out
}

fn names_table(sql: &str, current_db: &str, db: &str, table: &str) -> bool {
    let ids = identifiers(sql);
    ids.iter().enumerate().any(|(i, (name, qualified))| {
        name.eq_ignore_ascii_case(table)
            && if *qualified {
                i > 0 && ids[i - 1].0.eq_ignore_ascii_case(db)
            } else {
                current_db.eq_ignore_ascii_case(db)
            }
    })
}

fn uuid(sid: &[u8; 16]) -> String {
    let h: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl<'a> Streamer<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        opts: Opts,
        facts: &'a SourceFacts,
        server_id: u32,
        heartbeat: Duration,
        sink: Sink,
        partitions: i32,
        skip_up_to: Option<SourcePos>,
        timestamp_column: String,
        last_updated_us: Option<i64>,
    ) -> Self {
        Self {
            opts,
            facts,
            server_id,
            heartbeat,
            sink,
            partitions,
            skip_up_to,
            timestamp_column,
            stats: StreamStats::default(),
            metrics: Arc::default(),
            max_message_bytes: "message.max.bytes".into(),
            last_updated_us,
            framing: Framing::default(),
            file: String::new(),
            gtid: None,
            in_txn: false,
            xa: false,
            checksum_verified: false,
            expect_rotate_to: None,
            tables: HashMap::new(),
            payload_rows: None,
            last_schema: None,
            last_ddl: None,
            buf: Vec::with_capacity(512),
            key_buf: Vec::with_capacity(32),
            scan: None,
        }
    }

    /// Reads the binlog from `from` (a snapshot's anchor) to `until` (the position of a newer
    /// consistent read view) without emitting anything, and returns every primary key of the
    /// table changed in between with its row as it was at `from` (`None`: it did not exist).
    /// A snapshot resumed in a new view uses it to emit exactly the rows of the anchor.
    pub async fn changed_between(
        &mut self,
        from: &BinlogPosition,
        until: &BinlogPosition,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<HashMap<i128, Option<Vec<Datum>>>>> {
        if until <= from {
            return Ok(Some(HashMap::new()));
        }
        self.scan = Some(Scan {
            until: until.clone(),
            first: HashMap::new(),
            done: false,
        });
        let res = self.run(from, shutdown).await;
        let scan = self.scan.take().expect("scan state");
        // state of the scan's stream must not leak into the streaming that follows
        self.tables.clear();
        self.in_txn = false;
        self.checksum_verified = false;
        res?;
        Ok(scan.done.then_some(scan.first))
    }

    fn here(&self, pos: u64) -> String {
        format!("{}:{pos}", self.file)
    }

    /// Streams from `start` until shutdown or an error.
    pub async fn run(
        &mut self,
        start: &BinlogPosition,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<()> {
        let mut conn = preflight::connect(&self.opts).await?;
        let hb_ns = self.heartbeat.as_nanos() as u64;
        let mut setup = vec![
            format!("SET @master_heartbeat_period = {hb_ns}"),
            format!("SET @source_heartbeat_period = {hb_ns}"),
        ];
        if self.facts.mariadb {
            // receive GTID events as such, not rewritten to BEGIN queries
            setup.push("SET @mariadb_slave_capability = 4".into());
        }
        for q in setup {
            conn.query_drop(q)
                .await
                .map_err(|e| Error::mysql("preparing the replication session", e))?;
        }
        self.file = start.file.clone();
        self.expect_rotate_to = Some(start.file.clone());
        let req = BinlogStreamRequest::new(self.server_id)
            .with_filename(start.file.as_bytes())
            .with_pos(start.pos);
        let mut stream = conn
            .get_binlog_stream(req)
            .await
            .map_err(|e| Error::mysql(format!("requesting the binlog from {start}"), e))?;
        tracing::info!(position = %start, "streaming binlog");
        let idle = self.heartbeat * 3 + Duration::from_secs(2);
        // a watchdog that ticks a few times per idle period, instead of a timer per event
        let mut watchdog = tokio::time::interval(idle / 4);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut events_since_tick = 1u64;
        let mut silent_since = tokio::time::Instant::now();
        loop {
            let idle_commit = self.sink.can_commit_idle();
            let next = tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    if self.scan.is_some() {
                        return Ok(()); // nothing was sent
                    }
                    // what is complete is committed; a transaction cut off mid-way is committed
                    // up to its last record (the checkpoint says where inside it to resume)
                    self.sink.finish(self.in_txn).await?;
                    return Ok(());
                }
                n = stream.next() => Ok(n),
                // nothing ready from the source: commit what is complete
                _ = std::future::ready(()), if idle_commit => {
                    self.sink.commit().await?;
                    continue;
                }
                _ = watchdog.tick() => Err(()),
            };
            let ev = match next {
                Err(()) => {
                    if events_since_tick > 0 {
                        events_since_tick = 0;
                        silent_since = tokio::time::Instant::now();
                    } else if silent_since.elapsed() >= idle {
                        return Err(Error::StreamLost {
                            position: self.file.clone(),
                            msg: format!("no event or heartbeat for {}s", idle.as_secs()),
                        });
                    }
                    continue;
                }
                Ok(None) => {
                    return Err(Error::StreamLost {
                        position: self.file.clone(),
                        msg: "the server closed the replication stream".into(),
                    })
                }
                Ok(Some(Err(e))) => {
                    return Err(match e {
                        mysql_async::Error::Server(s) if s.code == 1236 => Error::Binlog {
                            position: self.file.clone(),
                            msg: format!("the server cannot send the binlog: {}", s.message),
                        },
                        mysql_async::Error::Io(_) => Error::StreamLost {
                            position: self.file.clone(),
                            msg: e.to_string(),
                        },
                        other => Error::mysql("reading the binlog stream", other),
                    })
                }
                Ok(Some(Ok(ev))) => ev,
            };
            events_since_tick += 1;
            self.verify_checksum(&ev)?;
            let ev = self.uncompressed(ev)?;
            if ev.header().event_type_raw() == PAYLOAD_EVENT {
                self.handle_payload(&ev).await?;
            } else {
                self.handle(&ev).await?;
            }
            if self.scan.as_ref().is_some_and(|s| s.done) {
                return Ok(());
            }
        }
    }

    fn verify_checksum(&mut self, ev: &Event) -> Result<()> {
        let hdr = ev.header();
        if hdr.timestamp() == 0 && hdr.event_type_raw() == 4 {
            return Ok(()); // fake rotate: sent before the format description, no checksum known
        }
        let Ok(Some(alg)) = ev.footer().get_checksum_alg() else {
            return Ok(());
        };
        if alg != BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32 {
            return Ok(());
        }
        if let Some(sum) = ev.checksum() {
            let want = u32::from_le_bytes(sum);
            let got = ev.calc_checksum(alg);
            if want != got {
                return Err(Error::Binlog {
                    position: self.here(hdr.log_pos() as u64),
                    msg: format!(
                        "event type {} fails its CRC32 check (stored {want:08x}, computed {got:08x}): \
                         corrupt binlog or network",
                        hdr.event_type_raw()
                    ),
                });
            }
            self.checksum_verified = true;
        }
        Ok(())
    }

    /// A MariaDB compressed event (`log_bin_compress`) as the plain event it stands for (see
    /// [`crate::compressed`]); any other event as it is. Its checksum was verified on the
    /// bytes the server sent; the rebuilt event carries none.
    fn uncompressed(&self, ev: Event) -> Result<Event> {
        let hdr = ev.header();
        let ty = hdr.event_type_raw();
        let Some(plain) = crate::compressed::uncompressed_type(ty) else {
            return Ok(ev);
        };
        let err = |msg: String| Error::Binlog {
            position: self.here(hdr.log_pos() as u64),
            msg: format!("compressed event (type {ty}, log_bin_compress) does not decode: {msg}"),
        };
        let post = ev
            .fde()
            .event_type_header_lengths()
            .get(ty as usize - 1)
            .copied()
            .ok_or_else(|| {
                err("the format description gives no post-header length for it".into())
            })?;
        let body = crate::compressed::uncompress(ty, ev.data(), post as usize).map_err(err)?;
        let mut bytes = header_bytes(&hdr).to_vec();
        bytes[4] = plain;
        let size = (bytes.len() + body.len()) as u32;
        bytes[9..13].copy_from_slice(&size.to_le_bytes());
        bytes.extend_from_slice(&body);
        Event::read(&checksumless_fde(&ev), &bytes[..]).map_err(|e| err(e.to_string()))
    }

    /// A MySQL 8 transaction payload (`binlog_transaction_compression=ON`): its events, one by
    /// one, as if they had been in the stream, at the payload's position.
    async fn handle_payload(&mut self, ev: &Event) -> Result<()> {
        let log_pos = ev.header().log_pos() as u64;
        let inner = payload_events(ev).map_err(|e| Error::Binlog {
            position: self.here(log_pos),
            msg: format!(
                "transaction payload (binlog_transaction_compression) does not decode: {e}"
            ),
        })?;
        self.payload_rows = Some(0);
        let mut res = Ok(());
        for ev in &inner {
            res = self.handle(ev).await;
            if res.is_err() {
                break;
            }
        }
        self.payload_rows = None;
        res
    }

    async fn handle(&mut self, ev: &Event) -> Result<()> {
        let hdr = ev.header();
        let ty = hdr.event_type_raw();
        // 27 = HEARTBEAT: the source has nothing newer
        self.metrics.contact(ty == 27);
        if ty == 27 {
            if let Some(scan) = &mut self.scan {
                // caught up with the source: a scan's end is never beyond it
                if BinlogPosition::new(self.file.clone(), hdr.log_pos() as u64) >= scan.until {
                    scan.done = true;
                }
            }
        }
        let log_pos = hdr.log_pos() as u64;
        let ts_ms = hdr.timestamp() as i64 * 1000;
        let bad = |this: &Self, e: std::io::Error| Error::Binlog {
            position: this.here(log_pos),
            msg: format!("cannot parse event type {ty}: {e}"),
        };
        match ty {
            // MariaDB GTID
            162 => {
                if let Some((gtid, flags)) = mariadb_gtid(ev.data(), hdr.server_id()) {
                    self.gtid = Some(gtid);
                    // a standalone group (DDL) has no BEGIN; it ends with its query
                    self.in_txn = flags & GTID_STANDALONE == 0;
                    // the group of a two-phase XA transaction up to its XA PREPARE (its
                    // `XA START` is this event, not a query)
                    self.xa = flags & GTID_PREPARED_XA != 0;
                }
                return Ok(());
            }
            // MariaDB ANNOTATE_ROWS, BINLOG_CHECKPOINT, GTID_LIST
            160 | 161 | 163 => return Ok(()),
            // XA_PREPARE: the end of a two-phase XA transaction's event group (its XA COMMIT or
            // XA ROLLBACK is a group of its own, later); one that changed the captured table
            // stopped at its rows (see below), so this one changed nothing captured
            38 => {
                self.xa = false;
                self.commit(BinlogPosition::new(self.file.clone(), log_pos), ts_ms)
                    .await?;
                return Ok(());
            }
            164 => {
                return Err(Error::Binlog {
                    position: self.here(log_pos),
                    msg: "encrypted binlog (START_ENCRYPTION event): set encrypt_binlog=OFF".into(),
                })
            }
            _ => {}
        }
        let Some(data) = ev.read_data().map_err(|e| bad(self, e))? else {
            return Ok(()); // unknown event type: carries no rows rtis could need
        };
        match data {
            EventData::RotateEvent(r) => {
                let name = if hdr.timestamp() == 0 {
                    rotate_name(&header_bytes(&hdr), ev.data())
                } else {
                    String::from_utf8_lossy(r.name_raw()).into_owned()
                };
                let real = hdr.timestamp() != 0;
                if let Some(expected) = self.expect_rotate_to.take().filter(|_| !real) {
                    if name != expected {
                        return Err(Error::Binlog {
                            position: self.here(log_pos),
                            msg: format!("the server starts the stream in {name:?}, not in the requested {expected:?}"),
                        });
                    }
                }
                self.file = name;
                if real && !self.in_txn {
                    self.commit(BinlogPosition::new(self.file.clone(), r.position()), ts_ms)
                        .await?;
                }
            }
            EventData::GtidEvent(g) => {
                self.gtid = Some(format!("{}:{}", uuid(&g.sid()), g.gno()));
            }
            EventData::QueryEvent(q) => {
                let sql = q.query();
                let trimmed = sql.trim();
                let t = &self.facts.schema;
                if let Some(problem) = statement_problem(trimmed, &q.schema(), &t.db, &t.table) {
                    let stmt: String = trimmed.chars().take(200).collect();
                    return Err(Error::Binlog {
                        position: self.here(log_pos),
                        msg: problem.message(&t.db, &t.table, &stmt, &self.here(log_pos)),
                    });
                }
                let upper: String = trimmed
                    .chars()
                    .take(12)
                    .collect::<String>()
                    .to_ascii_uppercase();
                if upper.starts_with("XA START") {
                    self.xa = true;
                    self.in_txn = true;
                } else if upper.starts_with("XA COMMIT") || upper.starts_with("XA ROLLBACK") {
                    // the group that completes an XA transaction prepared earlier
                    self.commit(BinlogPosition::new(self.file.clone(), log_pos), ts_ms)
                        .await?;
                } else if trimmed.eq_ignore_ascii_case("BEGIN") {
                    self.in_txn = true;
                } else if trimmed.eq_ignore_ascii_case("COMMIT")
                    || trimmed.eq_ignore_ascii_case("ROLLBACK")
                {
                    self.commit(BinlogPosition::new(self.file.clone(), log_pos), ts_ms)
                        .await?;
                } else if self.in_txn {
                    // SAVEPOINT, ROLLBACK TO SAVEPOINT, RELEASE SAVEPOINT, ... inside a
                    // transaction: not its end (a kill here must resume at the transaction's
                    // start, not in its middle)
                    tracing::trace!(position = %self.here(log_pos), statement = %trimmed, "statement inside a transaction");
                } else {
                    // DDL or other standalone statement: a transaction of its own
                    let lower = trimmed.to_ascii_lowercase();
                    if lower.contains(&self.facts.schema.table.to_ascii_lowercase()) {
                        tracing::info!(position = %self.here(log_pos), statement = %trimmed, "DDL may touch the captured table; later events decode with their own table map");
                        let stmt: String = trimmed.chars().take(300).collect();
                        self.last_ddl = Some((self.here(log_pos), stmt));
                    }
                    self.commit(BinlogPosition::new(self.file.clone(), log_pos), ts_ms)
                        .await?;
                }
            }
            EventData::XidEvent(_) => {
                self.commit(BinlogPosition::new(self.file.clone(), log_pos), ts_ms)
                    .await?;
            }
            EventData::TableMapEvent(t)
                if t.database_name() == self.facts.schema.db.as_str()
                    && t.table_name() == self.facts.schema.table.as_str() =>
            {
                let id = t.table_id();
                let same = self.tables.get(&id).is_some_and(|(old, _)| **old == t);
                if !same {
                    let table = TableSchema::from_table_map(&t, &self.facts.collations)
                        .map_err(|e| Error::Binlog {
                            position: self.here(log_pos),
                            msg: e.to_string(),
                        })?
                        .with_zero_dates(self.facts.zero_dates);
                    let after_ddl = || {
                        self.last_ddl.as_ref().map_or_else(
                            || " (the statement that changed it is before this session's start position)".to_string(),
                            |(at, stmt)| format!(" after `{stmt}` at {at}"),
                        )
                    };
                    if let Some(why) = crate::schema::key_problem(&table) {
                        return Err(Error::Binlog {
                            position: self.here(log_pos),
                            msg: format!(
                                "table map of a change{}: {why}. rtis stops here instead of guessing a key; \
                                 the checkpoint stays before this change. Changes made while the table has \
                                 no primary key cannot be captured: restore the primary key, then start over \
                                 with a new --state file (a fresh snapshot)",
                                after_ddl()
                            ),
                        });
                    }
                    let mut changes = Vec::new();
                    if let Some(old) = &self.last_schema {
                        changes = crate::schema::describe_changes(old, &table);
                        if !changes.is_empty() {
                            tracing::warn!(
                                position = %self.here(log_pos),
                                changes = %changes.join("; "),
                                "`{}`.`{}` changed{}: later records use a new writer schema",
                                table.db,
                                table.table,
                                after_ddl()
                            );
                        }
                    }
                    self.last_schema = Some(table.clone());
                    let prepared =
                        self.prepare(table, changes.join("; "))
                            .await
                            .map_err(|e| match e {
                                // a refused schema: say where in the binlog it stopped
                                Error::Schema(msg) => Error::Binlog {
                                    position: self.here(log_pos),
                                    msg,
                                },
                                e => e,
                            })?;
                    self.tables
                        .insert(id, (Arc::new(t.into_owned()), Arc::new(prepared)));
                }
            }
            EventData::TableMapEvent(t) => {
                // another table; a table id is only reused by the same table
                self.tables.remove(&t.table_id());
            }
            EventData::RowsEvent(rows) => {
                let id = rows.table_id();
                // the table map rtis keeps (events inside a transaction payload are not seen by
                // the stream's own table-map cache)
                let Some((map, prepared)) =
                    self.tables.get(&id).map(|(m, p)| (m.clone(), p.clone()))
                else {
                    return Ok(()); // another table
                };
                if self.xa {
                    return Err(Error::Binlog {
                        position: self.here(log_pos),
                        msg: format!(
                            "a two-phase XA transaction (XA START ... XA PREPARE) changes `{}`.`{}`: its rows \
                             are in the binlog before the server knows whether it commits (its XA COMMIT or \
                             XA ROLLBACK comes later, as an event group of its own), and rtis does not hold \
                             prepared transactions, so it stops here rather than emit rows that may be rolled \
                             back; the checkpoint stays before this transaction. Write the table with plain \
                             transactions or XA COMMIT ... ONE PHASE",
                            prepared.table.db, prepared.table.table
                        ),
                    });
                }
                if matches!(rows, RowsEventData::PartialUpdateRowsEvent(_)) {
                    return Err(Error::Binlog {
                        position: self.here(log_pos),
                        msg: "partial JSON update event: set binlog_row_value_options='' (full row images)".into(),
                    });
                }
                let seq = file_seq(&self.file);
                let first = self.payload_rows.unwrap_or(0);
                let mut n = 0u32;
                for (i, row) in rows.rows(&map).enumerate() {
                    n += 1;
                    let (before, after) = row.map_err(|e| bad(self, e))?;
                    let before = before
                        .map(|r| self.datums(&prepared, r, log_pos))
                        .transpose()?;
                    let after = after
                        .map(|r| self.datums(&prepared, r, log_pos))
                        .transpose()?;
                    let pos = SourcePos {
                        file_seq: seq,
                        pos: log_pos,
                        row: first + i as u32,
                        sub: 0,
                    };
                    self.emit_change(&prepared, before, after, pos, ts_ms)
                        .await?;
                }
                if let Some(r) = &mut self.payload_rows {
                    *r += n;
                }
            }
            EventData::TransactionPayloadEvent(_) => {
                return Err(Error::Binlog {
                    position: self.here(log_pos),
                    msg: "a transaction payload inside a transaction payload".into(),
                })
            }
            _ => {}
        }
        Ok(())
    }

    fn datums(&self, prepared: &Prepared, mut row: BinlogRow, log_pos: u64) -> Result<Vec<Datum>> {
        let cols = &prepared.table.columns;
        if row.len() != cols.len() {
            return Err(Error::Binlog {
                position: self.here(log_pos),
                msg: format!(
                    "row image has {} of {} columns: binlog_row_image must be FULL",
                    row.len(),
                    cols.len()
                ),
            });
        }
        let mut out = Vec::with_capacity(cols.len());
        for (i, col) in cols.iter().enumerate() {
            let d = match row.take(i) {
                Some(BinlogValue::Value(v)) if matches!(col.kind, ColumnKind::Set(_)) => {
                    convert(col, crate::value::set_bitmap(v))
                }
                Some(BinlogValue::Value(v)) => convert(col, v),
                // MySQL 8's binary JSON
                Some(BinlogValue::Jsonb(j)) if col.kind == ColumnKind::Json => {
                    match serde_json::Value::try_from(j) {
                        Ok(json) => Ok(Datum::Str(crate::value::canonical_json(json))),
                        Err(e) => {
                            return Err(Error::Binlog {
                                position: self.here(log_pos),
                                msg: format!(
                                    "`{}`.`{}` column {}: binary JSON that cannot be read: {e}",
                                    prepared.table.db, prepared.table.table, col.name
                                ),
                            })
                        }
                    }
                }
                other => {
                    let value = match &other {
                        Some(BinlogValue::Value(v)) => crate::value::shown(v),
                        other => format!("{other:?}"),
                    };
                    return Err(Error::Binlog {
                        position: self.here(log_pos),
                        msg: format!(
                            "`{}`.`{}` column {} ({}): unexpected row value {value}",
                            prepared.table.db,
                            prepared.table.table,
                            col.name,
                            crate::schema::kind_name(col.kind)
                        ),
                    });
                }
            }
            .map_err(|e| Error::Binlog {
                position: self.here(log_pos),
                msg: format!("`{}`.`{}` {e}", prepared.table.db, prepared.table.table),
            })?;
            out.push(d);
        }
        Ok(out)
    }

    /// Prepares a table shape: its schemas, and (before any record uses them) their
    /// publication — into `<topic>-schemas` in the open transaction, or the registry.
    pub async fn prepare(&mut self, table: TableSchema, changes: String) -> Result<Prepared> {
        let p = Prepared::new(table, &self.timestamp_column, &self.framing, changes).await?;
        if matches!(self.framing, Framing::SingleObject) {
            self.sink.publish_schema(&p.value)?;
            self.sink.publish_schema(&p.key)?;
        }
        Ok(p)
    }

    /// A transaction boundary: the next transaction starts at `position`.
    async fn commit(&mut self, position: BinlogPosition, ts_ms: i64) -> Result<()> {
        self.in_txn = false;
        self.xa = false;
        if let Some(scan) = &mut self.scan {
            if position >= scan.until {
                scan.done = true;
            }
            return Ok(());
        }
        self.stats.transactions += 1;
        let cp = Checkpoint {
            gtid: self.gtid.clone(),
            last_commit_ts_ms: ts_ms,
            last_updated_us: self.last_updated_us,
            source: Some(self.facts.source.clone()),
            ..Checkpoint::at(position)
        };
        self.checkpoint(cp).await
    }

    /// Emits one binlog row change (insert, update or delete) as records.
    async fn emit_change(
        &mut self,
        p: &Prepared,
        before: Option<Vec<Datum>>,
        after: Option<Vec<Datum>>,
        pos: SourcePos,
        ts_ms: i64,
    ) -> Result<()> {
        if let Some(scan) = &mut self.scan {
            if !crate::schema::describe_changes(&self.facts.schema, &p.table).is_empty() {
                return Err(Error::Schema(format!(
                    "`{}`.`{}` changed while the snapshot was interrupted (at {}): its rows at the \
                     snapshot's start cannot be rebuilt. Start over with a new --state file and topic \
                     (a fresh snapshot)",
                    p.table.db,
                    p.table.table,
                    self.file
                )));
            }
            let key = p.table.key[0];
            let id = |row: &[Datum]| match row[key] {
                Datum::Int(i) => Some(i as i128),
                Datum::UInt(u) => Some(u as i128),
                _ => None,
            };
            if let Some(b) = &before {
                if let Some(k) = id(b) {
                    scan.first.entry(k).or_insert_with(|| Some(b.clone()));
                }
            }
            if let Some(a) = &after {
                if let Some(k) = id(a) {
                    scan.first.entry(k).or_insert(None);
                }
            }
            return Ok(());
        }
        if let Some(row) = after.as_deref() {
            self.note_timestamp(p, row);
        }
        let key_of = |this: &mut Self, row: &[Datum]| -> Vec<u8> {
            crate::framing::encode_key(&mut this.key_buf, &p.headers, &p.key, &p.table, row);
            this.key_buf.clone()
        };
        match (before, after) {
            (None, Some(a)) => {
                let key = key_of(self, &a);
                self.send(p, &key, "c", None, Some(&a), pos, ts_ms).await
            }
            (Some(b), None) => {
                let key = key_of(self, &b);
                self.send(p, &key, "d", Some(&b), None, pos, ts_ms).await?;
                self.send_tombstone(&key, SourcePos { sub: 1, ..pos }).await
            }
            (Some(b), Some(a)) => {
                let old_key = key_of(self, &b);
                let new_key = key_of(self, &a);
                if old_key == new_key {
                    self.send(p, &new_key, "u", Some(&b), Some(&a), pos, ts_ms)
                        .await
                } else {
                    // the primary key changed: delete the old key, create the new one
                    self.send(p, &old_key, "d", Some(&b), None, pos, ts_ms)
                        .await?;
                    self.send_tombstone(&old_key, SourcePos { sub: 1, ..pos })
                        .await?;
                    self.send(
                        p,
                        &new_key,
                        "c",
                        None,
                        Some(&a),
                        SourcePos { sub: 2, ..pos },
                        ts_ms,
                    )
                    .await
                }
            }
            (None, None) => Ok(()),
        }
    }

    /// Emits one snapshot row (op `r`).
    ///
    /// Snapshot rows all carry the snapshot's anchor position, with `row` = their sequence
    /// number in the snapshot; they are emitted in the anchor's `(last_updated, id)` order.
    pub async fn emit_snapshot_row(
        &mut self,
        p: &Prepared,
        row: Vec<Datum>,
        anchor: SourcePos,
        seq: u32,
        ts_ms: i64,
    ) -> Result<()> {
        self.note_timestamp(p, &row);
        crate::framing::encode_key(&mut self.key_buf, &p.headers, &p.key, &p.table, &row);
        let key = self.key_buf.clone();
        let partition = partition_for(&key, self.partitions);
        self.send_envelope(
            p,
            &key,
            partition,
            "r",
            None,
            Some(&row),
            SourcePos { row: seq, ..anchor },
            seq,
            ts_ms,
            true,
        )
        .await
    }

    /// Tracks the highest `--timestamp-column` value, carried into checkpoints.
    fn note_timestamp(&mut self, p: &Prepared, row: &[Datum]) {
        if let Some(Datum::TimestampMicros(t) | Datum::DateTimeMicros(t)) =
            p.timestamp_column.and_then(|i| row.get(i))
        {
            self.last_updated_us = Some(self.last_updated_us.map_or(*t, |m| m.max(*t)));
        }
    }

    /// Sets the binlog file and GTID reported in `source` (snapshot rows report the anchor's).
    pub fn set_source(&mut self, file: &str, gtid: Option<String>) {
        self.file = file.to_string();
        self.gtid = gtid;
    }

    /// A boundary: every record sent so far is covered by `cp` (the sink commits them
    /// together when its policy says so).
    pub async fn checkpoint(&mut self, cp: Checkpoint) -> Result<()> {
        self.sink.boundary(cp).await
    }

    fn duplicate(&mut self, pos: &SourcePos) -> bool {
        let dup = self.skip_up_to.is_some_and(|t| *pos <= t);
        if dup {
            if self.stats.skipped_duplicates == 0 {
                tracing::info!(position = %pos, "skipping records the topic already holds (resumed inside a transaction, or after a reset)");
            }
            self.stats.skipped_duplicates += 1;
        }
        dup
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &mut self,
        p: &Prepared,
        key: &[u8],
        op: &'static str,
        before: Option<&[Datum]>,
        after: Option<&[Datum]>,
        pos: SourcePos,
        ts_ms: i64,
    ) -> Result<()> {
        if self.duplicate(&pos) {
            return Ok(());
        }
        let partition = partition_for(key, self.partitions);
        self.send_envelope(
            p, key, partition, op, before, after, pos, pos.row, ts_ms, false,
        )
        .await
    }

    /// Encodes an envelope and produces it.
    #[allow(clippy::too_many_arguments)]
    async fn send_envelope(
        &mut self,
        p: &Prepared,
        key: &[u8],
        partition: i32,
        op: &'static str,
        before: Option<&[Datum]>,
        after: Option<&[Datum]>,
        pos: SourcePos,
        source_row: u32,
        ts_ms: i64,
        snapshot: bool,
    ) -> Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let src = SourceInfo {
            server_id: self.facts.server_id,
            file: &self.file,
            pos: pos.pos,
            row: source_row,
            gtid: self.gtid.as_deref(),
            ts_ms,
            snapshot,
            connector: &self.sink.names().connector,
            server_uuid: self.facts.source.server_uuid.as_deref(),
        };
        avro::encode_envelope(
            &mut buf,
            &p.headers.value,
            &p.table,
            op,
            before,
            after,
            &src,
            now_ms(),
        );
        if p.headers.json {
            crate::framing::to_json(&mut buf, &p.value);
        }
        let res = self.produce(key, Some(&buf), partition, pos, op).await;
        self.buf = buf;
        res
    }

    async fn send_tombstone(&mut self, key: &[u8], pos: SourcePos) -> Result<()> {
        if self.duplicate(&pos) {
            return Ok(());
        }
        let partition = partition_for(key, self.partitions);
        self.produce(key, None, partition, pos, "tombstone").await
    }

    async fn produce(
        &mut self,
        key: &[u8],
        payload: Option<&[u8]>,
        partition: i32,
        pos: SourcePos,
        op: &'static str,
    ) -> Result<()> {
        let what = format!("`{}`.`{}`", self.facts.schema.db, self.facts.schema.table);
        let max = self.max_message_bytes.clone();
        self.sink
            .send(key, payload, partition, pos, op, &what, &max)
            .await?;
        self.stats.records += 1;
        if op != "r" {
            self.sink.commit_if_oversized().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event's bytes: the common header (type, size, `log_pos`) and `body`.
    fn event_bytes(ty: u8, log_pos: u32, body: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 19];
        b[0..4].copy_from_slice(&1_700_000_000u32.to_le_bytes());
        b[4] = ty;
        b[5..9].copy_from_slice(&7u32.to_le_bytes());
        b[9..13].copy_from_slice(&((19 + body.len()) as u32).to_le_bytes());
        b[13..17].copy_from_slice(&log_pos.to_le_bytes());
        b.extend_from_slice(body);
        b
    }

    fn lenenc(v: u64, out: &mut Vec<u8>) {
        match v {
            0..=250 => out.push(v as u8),
            _ => {
                out.push(0xfe);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// A MySQL 8 transaction payload (BEGIN, XID) read back as its events, at the payload's
    /// position, zstd-compressed and not.
    #[test]
    fn a_transaction_payload_yields_its_events_at_its_position() {
        use mysql_async::binlog::events::{FormatDescriptionEvent, QueryEvent, XidEvent};
        let mut begin = vec![0u8; 13]; // thread, exec time, db length 0, error 0, status vars 0
        begin.push(0); // empty database name, NUL
        begin.extend_from_slice(b"BEGIN");
        let inner = [
            event_bytes(2, 0, &begin),
            event_bytes(16, 0, &42u64.to_le_bytes()),
        ]
        .concat();
        let fde = FormatDescriptionEvent::new(mysql_async::binlog::BinlogVersion::Version4)
            .with_footer(Default::default());
        for zstd in [true, false] {
            let payload = if zstd {
                zstd::encode_all(&inner[..], 3).unwrap()
            } else {
                inner.clone()
            };
            let mut body = Vec::new();
            // compression type (ZSTD = 0, NONE = 255), uncompressed size, payload size, end
            let (alg, alg_len): (u64, u64) = if zstd { (0, 1) } else { (255, 9) };
            for (field, len, v) in [(2u64, alg_len, alg)]
                .into_iter()
                .chain(zstd.then_some((3, 9, inner.len() as u64)))
                .chain([(1, 9, payload.len() as u64)])
            {
                lenenc(field, &mut body);
                lenenc(len, &mut body);
                lenenc(v, &mut body);
            }
            body.push(0);
            body.extend_from_slice(&payload);
            let outer = Event::read(&fde, &event_bytes(PAYLOAD_EVENT, 9999, &body)[..]).unwrap();
            let events = payload_events(&outer).unwrap_or_else(|e| panic!("zstd {zstd}: {e}"));
            let types: Vec<u8> = events.iter().map(|e| e.header().event_type_raw()).collect();
            assert_eq!(types, [2, 16], "zstd {zstd}");
            assert!(events.iter().all(|e| e.header().log_pos() == 9999));
            let q: QueryEvent<'_> = events[0].read_event().unwrap();
            assert_eq!(q.query(), "BEGIN");
            let x: XidEvent = events[1].read_event().unwrap();
            assert_eq!(x.xid, 42);
        }
        // a payload cut short is an error, not fewer events
        let cut = Event::read(
            &fde,
            &event_bytes(
                PAYLOAD_EVENT,
                9999,
                &[2, 3, 0xfc, 0xff, 0, 1, 1, 30, 0, 1, 2, 3][..],
            )[..],
        )
        .unwrap();
        assert!(payload_events(&cut).is_err());
    }

    #[test]
    fn fake_rotate_names_lose_exactly_their_checksum_bytes() {
        let header = [7u8; 19];
        for name in ["mariadb-bin.000003", "binlog.000012", "mariadb-bin.1000000"] {
            for pos in 0..64u64 {
                let mut body = pos.to_le_bytes().to_vec();
                body.extend_from_slice(name.as_bytes());
                let mut h = crc32fast::Hasher::new();
                h.update(&header);
                h.update(&body);
                let plain = body.clone();
                body.extend_from_slice(&h.finalize().to_le_bytes());
                // whatever the checksum bytes are (digits included), the name comes back whole
                assert_eq!(rotate_name(&header, &body), name);
                assert_eq!(rotate_name(&header, &plain), name);
            }
        }
    }

    #[test]
    fn statements_that_change_the_table_without_row_events_are_found() {
        use StatementProblem::*;
        let p = |sql: &str, cur: &str| statement_problem(sql, cur, "shop", "product");
        assert_eq!(p("INSERT INTO product VALUES (1)", "shop"), Some(Dml));
        assert_eq!(p("/* app */ update `product` set x = 1", "shop"), Some(Dml));
        assert_eq!(
            p("DELETE FROM shop.product WHERE id = 1", "other"),
            Some(Dml)
        );
        assert_eq!(p("REPLACE INTO `shop`.`Product` VALUES (1)", ""), Some(Dml));
        assert_eq!(p("TRUNCATE TABLE product", "shop"), Some(Truncate));
        assert_eq!(p("truncate shop.product", "x"), Some(Truncate));
        // another table, another database, a literal that only mentions the name
        assert_eq!(p("INSERT INTO product_archive VALUES (1)", "shop"), None);
        assert_eq!(p("INSERT INTO other.product VALUES (1)", "shop"), None);
        assert_eq!(p("INSERT INTO product VALUES (1)", "other"), None);
        assert_eq!(p("INSERT INTO log VALUES ('product')", "shop"), None);
        assert_eq!(p("TRUNCATE TABLE log", "shop"), None);
        // DDL and transaction control are not changes without row events
        assert_eq!(p("ALTER TABLE product ADD COLUMN x INT", "shop"), None);
        assert_eq!(p("SAVEPOINT product", "shop"), None);
        // an UPDATE that joins the table may change it: stopping is the safe side
        assert_eq!(
            p(
                "UPDATE log JOIN product ON log.id = product.id SET log.x = 1",
                "shop"
            ),
            Some(Dml)
        );
    }

    #[test]
    fn mariadb_gtid_events_decode() {
        let mut d = Vec::new();
        d.extend_from_slice(&42u64.to_le_bytes());
        d.extend_from_slice(&7u32.to_le_bytes());
        d.push(1);
        assert_eq!(
            mariadb_gtid(&d, 5),
            Some(("7-5-42".to_string(), GTID_STANDALONE))
        );
        assert_eq!(mariadb_gtid(&d[..5], 5), None);
    }
}
