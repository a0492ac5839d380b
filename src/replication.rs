//! Replication: reads the binlog as a replica, turns row events of the captured table into
//! records and hands them to the broker, in binlog order.
//!
//! Correctness rules this module keeps:
//! * Every record carries its [`SourcePos`]; a record at or below the last record already in its
//!   partition (read at session start) is skipped — so resuming from a checkpoint that lags the
//!   broker yields no duplicate, and resuming never starts inside a transaction.
//! * Checkpoints are queued only at transaction boundaries (XID, `COMMIT`, standalone DDL, and
//!   rotations outside a transaction), behind every record of that transaction in the ack queue,
//!   so a checkpoint becomes durable only after all earlier records were acknowledged.
//! * Each rows event is decoded with the schema of its own TABLE_MAP event (FULL row metadata),
//!   so events written before an `ALTER TABLE` decode with the columns they had.
//! * CRC32 of every event is verified (the client library strips it without checking).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::binlog::BinlogChecksumAlg;
use mysql_async::prelude::*;
use mysql_async::{BinlogStreamRequest, Opts};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, watch};

use crate::avro::{self, SourceInfo, WriterSchema};
use crate::checkpoint::Checkpoint;
use crate::checkpoint::SortKey;
use crate::error::{Error, Result};
use crate::kafka::{self, partition_for, Tail};
use crate::position::{file_seq, BinlogPosition, SourcePos};
use crate::preflight::{self, SourceFacts};
use crate::schema::TableSchema;
use crate::value::{convert, Datum};

/// Writer schemas and table schema prepared once per distinct TABLE_MAP.
#[derive(Debug)]
pub struct Prepared {
    pub table: TableSchema,
    pub value: WriterSchema,
    pub key: WriterSchema,
    pub timestamp_column: Option<usize>,
}

impl Prepared {
    pub fn new(table: TableSchema, ts_col: &str) -> Result<Self> {
        Ok(Self {
            value: WriterSchema::parse(&avro::envelope_schema_json(&table))?,
            key: WriterSchema::parse(&avro::key_schema_json(&table))?,
            timestamp_column: table.column_index(ts_col),
            table,
        })
    }
}

/// What the ack tracker receives, in binlog order.
pub enum Ack {
    Record {
        fut: DeliveryFuture,
        partition: i32,
        /// `c`, `u`, `d`, `r` or `tombstone` (metrics).
        op: &'static str,
        /// The record's source position and size, named if the broker refuses it.
        pos: SourcePos,
        size: usize,
        /// When the session gives up waiting for the acknowledgement (`--delivery-timeout-ms`).
        deadline: tokio::time::Instant,
    },
    /// All records queued before this are part of transactions that end at this checkpoint.
    Commit(Checkpoint),
}

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
    pub producer: &'a FutureProducer,
    pub topic: &'a str,
    pub schema_topic: String,
    pub partitions: i32,
    /// Last record position per partition at session start.
    pub tails: Vec<Option<Tail>>,
    pub acks: mpsc::Sender<Ack>,
    pub published: &'a mut HashSet<[u8; 8]>,
    pub timestamp_column: String,
    pub stats: StreamStats,
    /// Shared with the metrics endpoint.
    pub metrics: Arc<crate::metrics::ProducerMetrics>,
    /// The configured message size limit, named when a record exceeds it.
    pub max_message_bytes: String,
    /// How long a record may wait for its acknowledgement (`--delivery-timeout-ms`).
    pub delivery_timeout: Duration,
    /// Highest `last_updated` seen, carried into checkpoints.
    pub last_updated_us: Option<i64>,
    // state while streaming
    file: String,
    gtid: Option<String>,
    in_txn: bool,
    checksum_verified: bool,
    /// The file the stream was requested from, until the server's fake ROTATE confirms it.
    expect_rotate_to: Option<String>,
    tables: HashMap<u64, (TableMapEvent<'static>, Arc<Prepared>)>,
    /// The captured table's schema as of its last table map (to describe schema changes).
    last_schema: Option<TableSchema>,
    /// The last statement that may have changed the captured table, and where it was.
    last_ddl: Option<(String, String)>,
    buf: Vec<u8>,
    key_buf: Vec<u8>,
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

/// MariaDB GTID event (type 162): seq_no u64, domain_id u32, flags u8.
fn mariadb_gtid(data: &[u8], server_id: u32) -> Option<(String, bool)> {
    if data.len() < 13 {
        return None;
    }
    let seq = u64::from_le_bytes(data[0..8].try_into().ok()?);
    let domain = u32::from_le_bytes(data[8..12].try_into().ok()?);
    let standalone = data[12] & 1 != 0;
    Some((format!("{domain}-{server_id}-{seq}"), standalone))
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
        producer: &'a FutureProducer,
        topic: &'a str,
        partitions: i32,
        tails: Vec<Option<Tail>>,
        acks: mpsc::Sender<Ack>,
        published: &'a mut HashSet<[u8; 8]>,
        timestamp_column: String,
        last_updated_us: Option<i64>,
    ) -> Self {
        Self {
            opts,
            facts,
            server_id,
            heartbeat,
            producer,
            topic,
            schema_topic: format!("{topic}-schemas"),
            partitions,
            tails,
            acks,
            published,
            timestamp_column,
            stats: StreamStats::default(),
            metrics: Arc::default(),
            max_message_bytes: "message.max.bytes".into(),
            delivery_timeout: Duration::from_secs(30),
            last_updated_us,
            file: String::new(),
            gtid: None,
            in_txn: false,
            checksum_verified: false,
            expect_rotate_to: None,
            tables: HashMap::new(),
            last_schema: None,
            last_ddl: None,
            buf: Vec::with_capacity(512),
            key_buf: Vec::with_capacity(32),
        }
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
            let next = tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(()),
                n = stream.next() => Ok(n),
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
            let tme = |id: u64| stream.get_tme(id);
            self.handle(&ev, tme).await?;
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

    async fn handle<'t>(
        &mut self,
        ev: &Event,
        tme: impl Fn(u64) -> Option<&'t TableMapEvent<'static>>,
    ) -> Result<()> {
        self.verify_checksum(ev)?;
        let hdr = ev.header();
        let ty = hdr.event_type_raw();
        // 27 = HEARTBEAT: the source has nothing newer
        self.metrics.contact(ty == 27);
        let log_pos = hdr.log_pos() as u64;
        let ts_ms = hdr.timestamp() as i64 * 1000;
        let bad = |this: &Self, e: std::io::Error| Error::Binlog {
            position: this.here(log_pos),
            msg: format!("cannot parse event type {ty}: {e}"),
        };
        match ty {
            // MariaDB GTID
            162 => {
                if let Some((gtid, standalone)) = mariadb_gtid(ev.data(), hdr.server_id()) {
                    self.gtid = Some(gtid);
                    // a standalone group (DDL) has no BEGIN; it ends with its query
                    self.in_txn = !standalone;
                }
                return Ok(());
            }
            // MariaDB ANNOTATE_ROWS, BINLOG_CHECKPOINT, GTID_LIST
            160 | 161 | 163 => return Ok(()),
            164 => {
                return Err(Error::Binlog {
                    position: self.here(log_pos),
                    msg: "encrypted binlog (START_ENCRYPTION event): set encrypt_binlog=OFF".into(),
                })
            }
            165..=171 => {
                return Err(Error::Binlog {
                    position: self.here(log_pos),
                    msg: format!(
                        "compressed binlog event (type {ty}): rtis does not decode them; set log_bin_compress=OFF"
                    ),
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
                if trimmed.eq_ignore_ascii_case("BEGIN") {
                    self.in_txn = true;
                } else if trimmed.eq_ignore_ascii_case("COMMIT")
                    || trimmed.eq_ignore_ascii_case("ROLLBACK")
                {
                    self.commit(BinlogPosition::new(self.file.clone(), log_pos), ts_ms)
                        .await?;
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
                let same = self.tables.get(&id).is_some_and(|(old, _)| *old == t);
                if !same {
                    let table =
                        TableSchema::from_table_map(&t, &self.facts.collations).map_err(|e| {
                            Error::Binlog {
                                position: self.here(log_pos),
                                msg: e.to_string(),
                            }
                        })?;
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
                    if let Some(old) = &self.last_schema {
                        let changes = crate::schema::describe_changes(old, &table);
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
                    let prepared = Prepared::new(table, &self.timestamp_column)?;
                    self.publish(&prepared).await?;
                    self.tables.insert(id, (t.into_owned(), Arc::new(prepared)));
                }
            }
            EventData::TableMapEvent(t) => {
                // another table; a table id is only reused by the same table
                self.tables.remove(&t.table_id());
            }
            EventData::RowsEvent(rows) => {
                let id = rows.table_id();
                let Some(prepared) = self.tables.get(&id).map(|(_, p)| p.clone()) else {
                    return Ok(()); // another table
                };
                if matches!(rows, RowsEventData::PartialUpdateRowsEvent(_)) {
                    return Err(Error::Binlog {
                        position: self.here(log_pos),
                        msg: "partial JSON update event: set binlog_row_value_options='' (full row images)".into(),
                    });
                }
                let Some(map) = tme(id) else {
                    return Err(Error::Binlog {
                        position: self.here(log_pos),
                        msg: format!("rows event for table id {id} without its table map"),
                    });
                };
                let seq = file_seq(&self.file);
                for (i, row) in rows.rows(map).enumerate() {
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
                        row: i as u32,
                        sub: 0,
                    };
                    self.emit_change(&prepared, before, after, pos, ts_ms)
                        .await?;
                }
            }
            EventData::TransactionPayloadEvent(_) => {
                return Err(Error::Binlog {
                    position: self.here(log_pos),
                    msg: "compressed transaction payload: set binlog_transaction_compression=OFF"
                        .into(),
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
                Some(BinlogValue::Value(v)) => convert(col, v),
                _ => {
                    return Err(Error::Binlog {
                        position: self.here(log_pos),
                        msg: format!("column {}: JSON values are not supported", col.name),
                    })
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

    async fn publish(&mut self, p: &Prepared) -> Result<()> {
        for s in [&p.value, &p.key] {
            if self.published.insert(s.fingerprint) {
                kafka::publish_schema(
                    self.producer,
                    &self.schema_topic,
                    &s.fingerprint_hex(),
                    &s.json,
                    self.delivery_timeout,
                )
                .await?;
                tracing::info!(fingerprint = %s.fingerprint_hex(), topic = %self.schema_topic, "published writer schema");
            }
        }
        Ok(())
    }

    async fn commit(&mut self, position: BinlogPosition, ts_ms: i64) -> Result<()> {
        self.in_txn = false;
        self.stats.transactions += 1;
        let cp = Checkpoint {
            position,
            gtid: self.gtid.clone(),
            last_commit_ts_ms: ts_ms,
            last_updated_us: self.last_updated_us,
            snapshot: None,
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
        if let Some(row) = after.as_deref() {
            self.note_timestamp(p, row);
        }
        let key_of = |this: &mut Self, row: &[Datum]| -> Vec<u8> {
            this.key_buf.clear();
            avro::encode_key(&mut this.key_buf, &p.key, &p.table, row);
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
    /// Snapshot rows all carry the snapshot's anchor position; they are ordered by their sort
    /// key `(last_updated, id)` instead, which is also the order they are read in. A row is
    /// already in the topic when its partition's last record is a snapshot row of the same
    /// anchor with a sort key at or above this one. (A row that changed since the snapshot
    /// started may be read again under a new sort key: that is its newer value, and its binlog
    /// change follows anyway.)
    pub async fn emit_snapshot_row(
        &mut self,
        p: &Prepared,
        row: Vec<Datum>,
        anchor: SourcePos,
        seq: u32,
        sort_key: SortKey,
        ts_ms: i64,
    ) -> Result<()> {
        self.note_timestamp(p, &row);
        self.key_buf.clear();
        avro::encode_key(&mut self.key_buf, &p.key, &p.table, &row);
        let key = self.key_buf.clone();
        let partition = partition_for(&key, self.partitions);
        let sent = self.tails[partition as usize]
            .is_some_and(|t| t.pos == anchor && t.snapshot_key.is_some_and(|k| sort_key <= k));
        if sent {
            if self.stats.skipped_duplicates == 0 {
                tracing::info!(%sort_key, partition, "skipping snapshot rows already in the topic (resumed snapshot)");
            }
            self.stats.skipped_duplicates += 1;
            return Ok(());
        }
        self.send_envelope(
            p,
            &key,
            partition,
            "r",
            None,
            Some(&row),
            anchor,
            seq,
            ts_ms,
            Some(sort_key),
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

    /// Queues a checkpoint behind every record sent so far.
    pub async fn checkpoint(&mut self, cp: Checkpoint) -> Result<()> {
        self.acks
            .send(Ack::Commit(cp))
            .await
            .map_err(|_| Error::StreamLost {
                position: self.file.clone(),
                msg: "the delivery tracker stopped".into(),
            })
    }

    /// Ensures the writer schemas of `p` are in the schema topic.
    pub async fn publish_schemas(&mut self, p: &Prepared) -> Result<()> {
        self.publish(p).await
    }

    fn duplicate(&mut self, partition: i32, pos: &SourcePos) -> bool {
        let dup = self.tails[partition as usize].is_some_and(|t| *pos <= t.pos);
        if dup {
            if self.stats.skipped_duplicates == 0 {
                tracing::info!(position = %pos, partition, "skipping records already in the topic (re-read after a restart)");
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
        let partition = partition_for(key, self.partitions);
        if self.duplicate(partition, &pos) {
            return Ok(());
        }
        self.send_envelope(
            p, key, partition, op, before, after, pos, pos.row, ts_ms, None,
        )
        .await
    }

    /// Encodes an envelope and produces it; `snapshot_key` marks (and orders) a snapshot row.
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
        snapshot_key: Option<SortKey>,
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
            snapshot: snapshot_key.is_some(),
        };
        avro::encode_envelope(
            &mut buf,
            &p.value,
            &p.table,
            op,
            before,
            after,
            &src,
            now_ms(),
        );
        let res = self
            .produce(key, Some(&buf), partition, pos, snapshot_key, op)
            .await;
        self.buf = buf;
        res
    }

    async fn send_tombstone(&mut self, key: &[u8], pos: SourcePos) -> Result<()> {
        let partition = partition_for(key, self.partitions);
        if self.duplicate(partition, &pos) {
            return Ok(());
        }
        self.produce(key, None, partition, pos, None, "tombstone")
            .await
    }

    async fn produce(
        &mut self,
        key: &[u8],
        payload: Option<&[u8]>,
        partition: i32,
        pos: SourcePos,
        snapshot_key: Option<SortKey>,
        op: &'static str,
    ) -> Result<()> {
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(self.topic)
            .key(key)
            .partition(partition)
            .headers(kafka::pos_headers(&pos, snapshot_key.as_ref()));
        if let Some(p) = payload {
            rec = rec.payload(p);
        }
        let size = payload.map_or(0, <[u8]>::len) + key.len();
        let fut = loop {
            match self.producer.send_result(rec) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                    return Err(Error::RecordTooLarge {
                        what: format!("`{}`.`{}`", self.facts.schema.db, self.facts.schema.table),
                        position: self.here(pos.pos),
                        record: pos.to_string(),
                        size,
                        limit: self.max_message_bytes.clone(),
                    })
                }
                Err((e, _)) => return Err(Error::kafka(format!("producing to {}", self.topic), e)),
            }
        };
        self.stats.records += 1;
        self.metrics.sent();
        self.acks
            .send(Ack::Record {
                fut,
                partition,
                op,
                pos,
                size,
                deadline: tokio::time::Instant::now() + self.delivery_timeout,
            })
            .await
            .map_err(|_| Error::StreamLost {
                position: pos.to_string(),
                msg: "the delivery tracker stopped".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn mariadb_gtid_events_decode() {
        let mut d = Vec::new();
        d.extend_from_slice(&42u64.to_le_bytes());
        d.extend_from_slice(&7u32.to_le_bytes());
        d.push(1);
        assert_eq!(mariadb_gtid(&d, 5), Some(("7-5-42".to_string(), true)));
        assert_eq!(mariadb_gtid(&d[..5], 5), None);
    }
}
