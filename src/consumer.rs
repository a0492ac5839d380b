//! `rtis-consumer`: Kafka → JSON lines, one file per partition, exactly once in the files.
//!
//! * The file is the source of truth for progress: on assignment the consumer truncates a torn
//!   last line, reads the offset of the last whole line (of the data file and of the dead-letter
//!   file) and starts the partition at the next offset. The group's committed offset is written
//!   after each fsync, for monitoring only.
//! * Lines are appended in batches, each batch followed by `fsync`, before the next poll; on a
//!   revoke the pending batch is written and synced before the partition is given up. An
//!   exclusive `flock` on each file guards against two writers.
//! * A record that can never be decoded (not rtis's encoding, a corrupt body, a schema the
//!   schema topic does not hold) goes whole to `<topic>-<partition>.dead.jsonl`. A record whose
//!   writer schema cannot be read *right now* (broker hiccup) is retried: its partition is
//!   rewound to it and read again after a backoff.
//! * The group uses the cooperative-sticky assignor: a rebalance moves only the partitions that
//!   change owner (a dead member's, after `session.timeout.ms`), the others keep being written.
//! * Only committed records are read (`isolation.level=read_committed`): records of a producer
//!   transaction that was aborted (a fenced or crashed producer) never reach the files.
//! * A topic that does not exist yet is waited for.
//!
//! All file I/O runs on a dedicated thread, never on the async runtime's workers.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::{json, Value as Json};

use crate::avro::{fingerprint_hex, split_single_object, WriterSchema};
use crate::config::{kafka_client_config, ConsumerConfig};
use crate::error::{chain, Error, Result};
use crate::metrics::ConsumerMetrics;

const BATCH: usize = 1000;
const BATCH_WAIT: Duration = Duration::from_millis(50);
/// How often the lag gauges are refreshed from the broker's high watermarks.
const LAG_REFRESH: Duration = Duration::from_secs(5);
/// How long a record whose writer schema cannot be loaded right now waits before it is read
/// again (doubling up to [`MAX_RETRY_WAIT`]).
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(250);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);
/// How many full reads of the schema topic must miss a fingerprint before the record is taken
/// as undecodable (the schema is published before the first record that uses it, so one read
/// after the record was seen normally finds it).
const UNKNOWN_SCHEMA_READS: u32 = 3;

/// Data file and dead-letter file of one partition, locked while owned.
struct PartitionFiles {
    data: File,
    dead: File,
    next_offset: Option<i64>,
    pending: Vec<u8>,
    pending_dead: Vec<u8>,
    /// Lines in `pending` / `pending_dead` (metrics).
    pending_n: u64,
    pending_dead_n: u64,
    dirty: bool,
}

fn lock(file: &File, path: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // SAFETY: flock on a valid, owned descriptor
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::io(
                format!("{} is locked by another consumer for 30s", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Opens a JSON-lines file, truncates a torn last line and returns the last line's `offset`.
fn open_recover(path: &Path) -> Result<(File, Option<i64>)> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| Error::io(ctx("opening"), e))?;
    lock(&f, path)?;
    let mut content = Vec::new();
    f.read_to_end(&mut content)
        .map_err(|e| Error::io(ctx("reading"), e))?;
    let keep = content
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    if keep < content.len() {
        tracing::warn!(file = %path.display(), bytes = content.len() - keep, "truncating a torn last line");
        f.set_len(keep as u64)
            .map_err(|e| Error::io(ctx("truncating"), e))?;
        f.sync_all().map_err(|e| Error::io(ctx("syncing"), e))?;
    }
    f.seek(SeekFrom::End(0))
        .map_err(|e| Error::io(ctx("seeking"), e))?;
    let last = content[..keep]
        .split(|&b| b == b'\n')
        .rev()
        .find(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<Json>(l)
                .ok()
                .and_then(|j| j.get("offset").and_then(Json::as_i64))
                .ok_or_else(|| {
                    Error::io(
                        ctx("the last line has no offset in"),
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "not an rtis JSON line",
                        ),
                    )
                })
        })
        .transpose()?;
    Ok((f, last))
}

struct Ctx {
    dir: PathBuf,
    topic: String,
    files: Mutex<HashMap<i32, PartitionFiles>>,
    failure: Mutex<Option<Error>>,
    stop: Arc<AtomicBool>,
    metrics: Arc<ConsumerMetrics>,
}

impl Ctx {
    fn data_path(&self, p: i32) -> PathBuf {
        self.dir.join(format!("{}-{p}.jsonl", self.topic))
    }
    fn dead_path(&self, p: i32) -> PathBuf {
        self.dir.join(format!("{}-{p}.dead.jsonl", self.topic))
    }

    fn open_partition(&self, p: i32) -> Result<PartitionFiles> {
        let (data, a) = open_recover(&self.data_path(p))?;
        let (dead, b) = open_recover(&self.dead_path(p))?;
        let next_offset = a.max(b).map(|o| o + 1);
        Ok(PartitionFiles {
            data,
            dead,
            next_offset,
            pending: Vec::new(),
            pending_dead: Vec::new(),
            pending_n: 0,
            pending_dead_n: 0,
            dirty: false,
        })
    }

    fn fail(&self, e: Error) {
        tracing::error!(error = %chain(&e), "consumer stopping");
        self.failure.lock().unwrap().get_or_insert(e);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Writes and fsyncs every pending batch; returns the offsets to commit.
    fn flush(&self) -> Result<TopicPartitionList> {
        let mut files = self.files.lock().unwrap();
        let mut tpl = TopicPartitionList::new();
        for (p, f) in files.iter_mut() {
            if !f.dirty {
                continue;
            }
            for (file, buf, path) in [
                (&mut f.data, &mut f.pending, self.data_path(*p)),
                (&mut f.dead, &mut f.pending_dead, self.dead_path(*p)),
            ] {
                if buf.is_empty() {
                    continue;
                }
                let whole = file.metadata().map(|m| m.len());
                if let Err(e) = file.write_all(buf).and_then(|_| file.sync_data()) {
                    // a full disk (or a size limit) may have taken part of the batch: cut the
                    // file back to its last whole line, so it never holds half a record
                    if let Ok(len) = whole {
                        let _ = file.set_len(len).and_then(|_| file.sync_data());
                    }
                    return Err(Error::io(
                        format!(
                            "writing {} (the file is kept at its last whole line)",
                            path.display()
                        ),
                        e,
                    ));
                }
                buf.clear();
            }
            self.metrics.written(*p, std::mem::take(&mut f.pending_n));
            self.metrics
                .dead_lettered(*p, std::mem::take(&mut f.pending_dead_n));
            f.dirty = false;
            if let Some(next) = f.next_offset {
                let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(next));
            }
        }
        Ok(tpl)
    }
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                for p in parts {
                    match self.open_partition(p) {
                        Ok(f) => {
                            let off = f.next_offset.map_or(Offset::Beginning, Offset::Offset);
                            tracing::info!(partition = p, offset = ?off, "assigned; resuming from the file");
                            let _ = tpl.set_partition_offset(&self.topic, p, off);
                            self.files.lock().unwrap().insert(p, f);
                        }
                        Err(e) => self.fail(e),
                    }
                }
                // cooperative: only the partitions added by this rebalance are in `tpl`
                if let Err(e) = crate::kafka::assign_rebalanced(consumer, tpl) {
                    self.fail(Error::kafka("assigning partitions", e));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                match self.flush() {
                    Ok(offsets) if offsets.count() > 0 => {
                        let _ = consumer.commit(&offsets, CommitMode::Sync);
                    }
                    Ok(_) => {}
                    Err(e) => self.fail(e),
                }
                let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                let mut files = self.files.lock().unwrap();
                for p in revoked {
                    files.remove(&p); // closing releases the lock
                    tracing::info!(partition = p, "revoked");
                }
                drop(files);
                let _ = crate::kafka::unassign_rebalanced(consumer, tpl);
            }
            other => tracing::warn!(error = ?other, "rebalance error"),
        }
    }
}

/// Why a record could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Undecodable {
    /// Its writer schema cannot be read right now (broker hiccup): read it again later.
    NotNow(String),
    /// It can never be decoded: to the dead-letter file.
    Never(String),
    /// The consumer is not set up to read it (a Confluent-framed record without
    /// `--schema-registry-url`): stop, naming the setting.
    Stop(String),
}

impl Undecodable {
    fn context(self, what: &str) -> Self {
        match self {
            Undecodable::NotNow(m) => Undecodable::NotNow(format!("{what}: {m}")),
            Undecodable::Never(m) => Undecodable::Never(format!("{what}: {m}")),
            Undecodable::Stop(m) => Undecodable::Stop(format!("{what}: {m}")),
        }
    }
}

/// Writer schemas: by fingerprint, loaded from `<topic>-schemas` (single-object records), and
/// by id, from the Schema Registry (Confluent-framed records).
struct Schemas {
    brokers: String,
    extra: Vec<String>,
    topic: String,
    cache: HashMap<[u8; 8], WriterSchema>,
    /// Full reads of the schema topic that missed a fingerprint.
    misses: HashMap<[u8; 8], u32>,
    registry: Option<Arc<crate::registry::Registry>>,
    by_id: HashMap<u32, WriterSchema>,
}

impl Schemas {
    fn reload(&mut self) -> Result<()> {
        let cache = &mut self.cache;
        crate::kafka::read_to_end(
            &self.brokers,
            &self.extra,
            &self.topic,
            0,
            Offset::Beginning,
            Duration::from_secs(30),
            |m| {
                if let Some(json) = m.payload().and_then(|p| std::str::from_utf8(p).ok()) {
                    match WriterSchema::parse(json) {
                        Ok(s) => {
                            cache.insert(s.fingerprint, s);
                        }
                        Err(e) => {
                            tracing::warn!(offset = m.offset(), error = %e, "ignoring a bad schema record")
                        }
                    }
                }
            },
        )
    }

    /// Decodes a key or value in any format rtis writes, told apart by the first byte: `C3`
    /// single-object Avro, `00` Confluent-framed Avro, `{` JSON.
    fn decode(&mut self, bytes: &[u8]) -> std::result::Result<Json, Undecodable> {
        match bytes.first() {
            Some(0xC3) => self.decode_single_object(bytes),
            Some(&crate::registry::CONFLUENT_MAGIC) => self.decode_confluent(bytes),
            Some(b'{') => serde_json::from_slice(bytes)
                .map_err(|e| Undecodable::Never(format!("JSON that does not parse: {e}"))),
            _ => Err(Undecodable::Never(
                "not a format rtis writes (expected Avro single-object C3 01, Confluent-framed \
                 Avro 00, or a JSON object)"
                    .into(),
            )),
        }
    }

    fn decode_confluent(&mut self, bytes: &[u8]) -> std::result::Result<Json, Undecodable> {
        let (id, body) = crate::registry::split_confluent(bytes)
            .ok_or_else(|| Undecodable::Never("Confluent framing shorter than 5 bytes".into()))?;
        let Some(registry) = &self.registry else {
            return Err(Undecodable::Stop(format!(
                "a Confluent-framed record (schema id {id}): expected --schema-registry-url \
                 (RTIS_SCHEMA_REGISTRY_URL) to look its schema up, found none"
            )));
        };
        let schema = match self.by_id.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let json = registry.schema(id).map_err(|e| {
                    if e.is_unavailable() {
                        Undecodable::NotNow(format!("schema id {id}: {e}"))
                    } else if e.is_setup() {
                        // wrong credentials or not a registry's URL: no record would decode
                        Undecodable::Stop(format!(
                            "schema id {id}: {e} (check --schema-registry-url and its credentials)"
                        ))
                    } else {
                        Undecodable::Never(format!("schema id {id}: {e}"))
                    }
                })?;
                slot.insert(WriterSchema::parse(&json).map_err(|e| {
                    Undecodable::Never(format!("schema id {id} from the registry: {e}"))
                })?)
            }
        };
        crate::avro::decode_to_json(schema, body).map_err(Undecodable::Never)
    }

    fn decode_single_object(&mut self, bytes: &[u8]) -> std::result::Result<Json, Undecodable> {
        let (fp, body) = split_single_object(bytes).ok_or_else(|| {
            Undecodable::Never("not Avro single-object encoded (no C3 01 marker)".into())
        })?;
        if !self.cache.contains_key(&fp) {
            self.reload().map_err(|e| {
                Undecodable::NotNow(format!(
                    "cannot load writer schemas from {}: {e}",
                    self.topic
                ))
            })?;
        }
        let Some(schema) = self.cache.get(&fp) else {
            let misses = self.misses.entry(fp).or_default();
            *misses += 1;
            let msg = format!(
                "unknown writer schema fingerprint {} (not in {} after {} full reads)",
                fingerprint_hex(&fp),
                self.topic,
                misses
            );
            return Err(if *misses < UNKNOWN_SCHEMA_READS {
                Undecodable::NotNow(msg)
            } else {
                Undecodable::Never(msg)
            });
        };
        crate::avro::decode_to_json(schema, body).map_err(Undecodable::Never)
    }
}

/// Turns one message into its JSON line (or an error for the dead-letter file).
fn render(
    schemas: &mut Schemas,
    m: &BorrowedMessage<'_>,
) -> std::result::Result<Json, Undecodable> {
    let key = match m.key() {
        Some(k) => schemas.decode(k).map_err(|e| e.context("key"))?,
        None => Json::Null,
    };
    let mut line = serde_json::Map::new();
    line.insert("partition".into(), json!(m.partition()));
    line.insert("offset".into(), json!(m.offset()));
    line.insert("key".into(), key);
    match m.payload() {
        None => {
            line.insert("op".into(), json!("tombstone"));
        }
        Some(v) => {
            let Json::Object(env) = schemas.decode(v).map_err(|e| e.context("value"))? else {
                return Err(Undecodable::Never("value: not a record".into()));
            };
            for (k, v) in env {
                line.insert(k, v);
            }
        }
    }
    Ok(Json::Object(line))
}

fn dead_line(m: &BorrowedMessage<'_>, error: &str) -> Json {
    let b64 = |b: Option<&[u8]>| b.map(|b| base64::engine::general_purpose::STANDARD.encode(b));
    json!({
        "partition": m.partition(),
        "offset": m.offset(),
        "key_base64": b64(m.key()),
        "value_base64": b64(m.payload()),
        "error": error,
    })
}

/// Runs the consumer on the calling thread until `stop` is set. Blocking.
pub fn run_blocking(
    cfg: ConsumerConfig,
    stop: Arc<AtomicBool>,
    metrics: Arc<ConsumerMetrics>,
) -> Result<()> {
    std::fs::create_dir_all(&cfg.out_dir).map_err(|e| {
        Error::io(
            format!("--out-dir: cannot create {}", cfg.out_dir.display()),
            e,
        )
    })?;
    let ctx = Ctx {
        dir: cfg.out_dir.clone(),
        topic: cfg.topic.clone(),
        files: Mutex::new(HashMap::new()),
        failure: Mutex::new(None),
        stop: stop.clone(),
        metrics,
    };
    let mut kcfg = kafka_client_config(&cfg.brokers, &cfg.kafka_options)?;
    for (k, v) in [
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "1000"),
    ] {
        if kcfg.get(k).is_none() {
            kcfg.set(k, v);
        }
    }
    // what exactly-once in the files depends on: not overridable
    kcfg.set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "cooperative-sticky");
    let consumer: BaseConsumer<Ctx> = kcfg
        .create_with_context(ctx)
        .map_err(|e| Error::kafka("creating the consumer (check --kafka-option values)", e))?;
    wait_for_topic(&cfg, &stop)?;
    consumer
        .subscribe(&[&cfg.topic])
        .map_err(|e| Error::kafka(format!("subscribing to {}", cfg.topic), e))?;
    let mut schemas = Schemas {
        brokers: cfg.brokers.clone(),
        extra: cfg.kafka_options.clone(),
        topic: format!("{}-schemas", cfg.topic),
        cache: HashMap::new(),
        misses: HashMap::new(),
        registry: cfg.registry.client()?,
        by_id: HashMap::new(),
    };
    tracing::info!(topic = %cfg.topic, group = %cfg.group, dir = %cfg.out_dir.display(), "consuming");
    let mut batch = 0usize;
    let mut batch_started = Instant::now();
    let mut lag_checked = Instant::now();
    let mut retry_wait = FIRST_RETRY_WAIT;
    while !stop.load(Ordering::SeqCst) {
        if lag_checked.elapsed() >= LAG_REFRESH {
            refresh_lag(&consumer, &cfg.topic);
            lag_checked = Instant::now();
        }
        let timeout = if batch == 0 {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        };
        let polled = consumer.poll(timeout);
        let idle = polled.is_none();
        let mut rewind = None;
        if let Some(res) = polled {
            match res {
                Err(e) => tracing::warn!(error = %e, "consumer error (retrying)"),
                Ok(m) => {
                    let p = m.partition();
                    let mut files = consumer.context().files.lock().unwrap();
                    let wanted = files
                        .get(&p)
                        .is_some_and(|f| f.next_offset.is_none_or(|n| m.offset() >= n));
                    if wanted {
                        let rendered = render(&mut schemas, &m);
                        let f = files.get_mut(&p).expect("owned partition");
                        match rendered {
                            Ok(line) => {
                                serde_json::to_writer(&mut f.pending, &line).expect("json");
                                f.pending.push(b'\n');
                                f.pending_n += 1;
                                retry_wait = FIRST_RETRY_WAIT;
                            }
                            Err(Undecodable::NotNow(err)) => {
                                tracing::warn!(partition = p, offset = m.offset(), error = %err, retry_in_ms = retry_wait.as_millis() as u64, "cannot decode a record right now; reading it again later");
                                rewind = Some((p, m.offset()));
                            }
                            Err(Undecodable::Stop(err)) => {
                                drop(files);
                                consumer.context().fail(Error::Config(format!(
                                    "partition {p} offset {}: {err}",
                                    m.offset()
                                )));
                                break;
                            }
                            Err(Undecodable::Never(err)) => {
                                tracing::warn!(partition = p, offset = m.offset(), error = %err, "dead-lettering an undecodable record");
                                serde_json::to_writer(&mut f.pending_dead, &dead_line(&m, &err))
                                    .expect("json");
                                f.pending_dead.push(b'\n');
                                f.pending_dead_n += 1;
                            }
                        }
                        if rewind.is_none() {
                            f.next_offset = Some(m.offset() + 1);
                            f.dirty = true;
                            if batch == 0 {
                                batch_started = Instant::now();
                            }
                            batch += 1;
                        }
                    }
                }
            }
        }
        if batch > 0
            && (idle || rewind.is_some() || batch >= BATCH || batch_started.elapsed() >= BATCH_WAIT)
        {
            let offsets = consumer.context().flush();
            match offsets {
                Ok(tpl) => {
                    if tpl.count() > 0 {
                        let _ = consumer.commit(&tpl, CommitMode::Async);
                    }
                }
                Err(e) => consumer.context().fail(e),
            }
            batch = 0;
        }
        if let Some((p, offset)) = rewind {
            // the partition is read again from this record; the records of it fetched after it
            // are dropped by the seek
            if let Err(e) = consumer.seek(
                &cfg.topic,
                p,
                Offset::Offset(offset),
                Duration::from_secs(10),
            ) {
                tracing::warn!(partition = p, error = %e, "rewinding the partition failed; retrying");
            }
            let until = Instant::now() + retry_wait;
            // no poll meanwhile: what it returned would have to be rewound as well
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            retry_wait = (retry_wait * 2).min(MAX_RETRY_WAIT);
        }
    }
    if let Err(e) = consumer.context().flush() {
        consumer.context().fail(e);
    }
    let failure = consumer.context().failure.lock().unwrap().take();
    // leaving the group revokes the partitions (flushing their files) and lets others take over
    drop(consumer);
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Waits until `--topic` exists (a consumer may be started before the producer created it).
fn wait_for_topic(cfg: &ConsumerConfig, stop: &AtomicBool) -> Result<()> {
    let mut said = false;
    loop {
        match crate::kafka::partition_count(&cfg.brokers, &cfg.kafka_options, &cfg.topic)? {
            Some(_) => return Ok(()),
            None if !said => {
                tracing::info!(topic = %cfg.topic, brokers = %cfg.brokers, "the topic does not exist yet; waiting for it");
                said = true;
            }
            None => {}
        }
        for _ in 0..10 {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Sets the lag gauge of every assigned partition (high watermark − next offset to write).
fn refresh_lag(consumer: &BaseConsumer<Ctx>, topic: &str) {
    let next: Vec<(i32, Option<i64>)> = consumer
        .context()
        .files
        .lock()
        .unwrap()
        .iter()
        .map(|(p, f)| (*p, f.next_offset))
        .collect();
    // the fetch position moves past transaction markers, which occupy offsets but are no
    // records: with it, a consumer that is caught up shows lag 0, not 1
    let positions = consumer.position().ok();
    for (p, next) in next {
        if let Ok((low, high)) = consumer.fetch_watermarks(topic, p, Duration::from_secs(2)) {
            let fetched = positions
                .as_ref()
                .and_then(|l| l.find_partition(topic, p))
                .and_then(|e| e.offset().to_raw());
            let next = next.unwrap_or(low).max(fetched.unwrap_or(i64::MIN));
            consumer.context().metrics.set_lag(p, (high - next).max(0));
        }
    }
}

/// Runs the consumer until `shutdown` resolves; the work happens on a blocking thread.
pub async fn run(
    cfg: ConsumerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let metrics = Arc::new(ConsumerMetrics::new());
    let m = metrics.clone();
    let server = crate::metrics::start(cfg.metrics_addr.as_deref(), move || m.encode()).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let watcher = tokio::spawn(async move {
        shutdown.await;
        s.store(true, Ordering::SeqCst);
    });
    let res = tokio::task::spawn_blocking(move || run_blocking(cfg, stop, metrics))
        .await
        .expect("consumer thread panicked");
    watcher.abort();
    if let Some(server) = server {
        server.stop().await;
    }
    res
}
