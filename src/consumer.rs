//! `rtis-consumer`: Kafka → JSON lines, one file per partition, exactly once in the files.
//!
//! * The file is the source of truth for progress: on assignment the consumer truncates a torn
//!   last line, reads the offset of the last whole line (of the data file and of the dead-letter
//!   file) and starts the partition at the next offset. The group's committed offset is written
//!   after each fsync, for monitoring only.
//! * Lines are appended in batches, each batch followed by `fsync`, before the next poll; on a
//!   revoke the pending batch is written and synced before the partition is given up. An
//!   exclusive `flock` on each file guards against two writers.
//! * A record that cannot be decoded goes whole to `<topic>-<partition>.dead.jsonl`.
//! * A partition that no member consumes (its committed offset stands still with records to
//!   read) makes the member rejoin the group ([`GroupWatch`]), so survivors take over a dead
//!   member's partitions also where the coordinator forgets to rebalance (tansu 0.6.0).
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
/// How often the lag gauges are refreshed from the broker's high watermarks, and the other
/// members' partitions are checked for a stall ([`GroupWatch`]).
const LAG_REFRESH: Duration = Duration::from_secs(5);
/// The shortest stall of another member's partition that makes this member rejoin.
const MIN_STALL: Duration = Duration::from_secs(15);

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
                if let Err(e) = consumer.assign(tpl) {
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
                let _ = consumer.unassign();
            }
            other => tracing::warn!(error = ?other, "rebalance error"),
        }
    }
}

/// Finds partitions that no live member consumes, checked every [`LAG_REFRESH`].
///
/// A coordinator moves a dead member's partitions by rebalancing: every live member is told
/// (its heartbeat answers REBALANCE_IN_PROGRESS) and gets a new assignment. tansu 0.6.0 drops a
/// member whose session expired without doing so: the group keeps its old generation and
/// assignment, and the dead member's partitions are never read again. (Its DescribeGroups
/// fails on sqlite storage, so group membership cannot be asked for.) Every rtis member commits
/// the group offset after each fsync, so a partition owned by a live member has a committed
/// offset that moves whenever there is something to read. When, for a partition this member
/// does not own, there are records past the committed offset and that offset has not moved
/// for the stall period, the member leaves and rejoins the group, which opens a new
/// generation and hands the partition out again. On Apache Kafka a dead member's partitions
/// move after `session.timeout.ms`, well within the stall period (three session timeouts, at
/// least 15 s), so this stays quiet; a needless rejoin would cost one rebalance, since the files
/// carry the progress. After a rejoin the clocks restart: at most one rejoin per period.
#[derive(Debug)]
pub struct GroupWatch {
    stall: Duration,
    /// Per partition not owned here: its committed offset and since when it is unchanged.
    seen: HashMap<i32, (i64, Instant)>,
}

impl GroupWatch {
    pub fn new(stall: Duration) -> Self {
        Self {
            stall,
            seen: HashMap::new(),
        }
    }

    /// Takes one look at the partitions this member does not own, as `(partition, committed
    /// offset or -1, high watermark)`; returns a stalled partition when the member should
    /// rejoin.
    pub fn observe(&mut self, now: Instant, others: &[(i32, i64, i64)]) -> Option<i32> {
        self.seen.retain(|p, _| others.iter().any(|o| o.0 == *p));
        let mut stalled = None;
        for &(p, committed, high) in others {
            let e = self.seen.entry(p).or_insert((committed, now));
            if e.0 != committed || committed.max(0) >= high {
                *e = (committed, now); // moving, or nothing to read
            } else if now.duration_since(e.1) >= self.stall {
                stalled = Some(p);
            }
        }
        if stalled.is_some() {
            self.seen.clear();
        }
        stalled
    }
}

/// Checks the partitions this member does not own ([`GroupWatch`]) and rejoins the group when
/// one of them stalled.
fn watch_group(
    consumer: &BaseConsumer<Ctx>,
    topic: &str,
    partitions: i32,
    watch: &mut GroupWatch,
) -> Result<()> {
    let ctx = consumer.context();
    let owned: Vec<i32> = ctx.files.lock().unwrap().keys().copied().collect();
    let mut tpl = TopicPartitionList::new();
    for p in (0..partitions).filter(|p| !owned.contains(p)) {
        tpl.add_partition(topic, p);
    }
    let mut others = Vec::new();
    if tpl.count() > 0 {
        let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(2)) else {
            return Ok(()); // the next check tries again
        };
        for e in committed.elements() {
            let Ok((_, high)) =
                consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(2))
            else {
                return Ok(());
            };
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            others.push((e.partition(), offset, high));
        }
    }
    let Some(stalled) = watch.observe(Instant::now(), &others) else {
        return Ok(());
    };
    tracing::warn!(
        partition = stalled,
        stalled_for_s = watch.stall.as_secs(),
        "no member of the group consumes this partition (its committed offset stands still with records to read); leaving and rejoining the group so its partitions are handed out again"
    );
    // leaving revokes (flush, fsync, unlock) and ends this member id; records polled meanwhile
    // belong to no owned partition and are not written (the files carry the progress)
    consumer.unsubscribe();
    let left = Instant::now();
    while left.elapsed() < Duration::from_secs(1) || !ctx.files.lock().unwrap().is_empty() {
        if left.elapsed() > Duration::from_secs(10) {
            break;
        }
        let _ = consumer.poll(Duration::from_millis(100));
    }
    consumer
        .subscribe(&[topic])
        .map_err(|e| Error::kafka(format!("resubscribing to {topic}"), e))
}

/// Writer schemas by fingerprint, loaded from `<topic>-schemas`.
struct Schemas {
    brokers: String,
    extra: Vec<String>,
    topic: String,
    cache: HashMap<[u8; 8], WriterSchema>,
}

impl Schemas {
    fn reload(&mut self) -> Result<()> {
        let mut cfg = kafka_client_config(&self.brokers, &self.extra)?;
        cfg.set("group.id", "rtis-schema-reader")
            .set("enable.auto.commit", "false");
        let c: BaseConsumer = cfg
            .create()
            .map_err(|e| Error::kafka("creating the schema reader", e))?;
        let (low, high) = c
            .fetch_watermarks(&self.topic, 0, Duration::from_secs(10))
            .map_err(|e| Error::kafka(format!("reading {}", self.topic), e))?;
        if high <= low {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Offset(low))
            .map_err(|e| Error::kafka("schema assignment", e))?;
        c.assign(&tpl)
            .map_err(|e| Error::kafka("schema assignment", e))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if Instant::now() > deadline {
                return Err(Error::Preflight(format!(
                    "reading {} timed out",
                    self.topic
                )));
            }
            let Some(m) = c.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.map_err(|e| Error::kafka(format!("reading {}", self.topic), e))?;
            if let Some(json) = m.payload().and_then(|p| std::str::from_utf8(p).ok()) {
                match WriterSchema::parse(json) {
                    Ok(s) => {
                        self.cache.insert(s.fingerprint, s);
                    }
                    Err(e) => {
                        tracing::warn!(offset = m.offset(), error = %e, "ignoring a bad schema record")
                    }
                }
            }
            if m.offset() >= high - 1 {
                return Ok(());
            }
        }
    }

    fn decode(&mut self, bytes: &[u8]) -> std::result::Result<Json, String> {
        let (fp, body) =
            split_single_object(bytes).ok_or("not Avro single-object encoded (no C3 01 marker)")?;
        if !self.cache.contains_key(&fp) {
            self.reload()
                .map_err(|e| format!("cannot load writer schemas: {e}"))?;
        }
        let schema = self
            .cache
            .get(&fp)
            .ok_or_else(|| format!("unknown writer schema fingerprint {}", fingerprint_hex(&fp)))?;
        crate::avro::decode_to_json(schema, body)
    }
}

/// Turns one message into its JSON line (or an error for the dead-letter file).
fn render(schemas: &mut Schemas, m: &BorrowedMessage<'_>) -> std::result::Result<Json, String> {
    let key = match m.key() {
        Some(k) => schemas.decode(k).map_err(|e| format!("key: {e}"))?,
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
            let Json::Object(env) = schemas.decode(v).map_err(|e| format!("value: {e}"))? else {
                return Err("value: not a record".into());
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
        .set("partition.assignment.strategy", "roundrobin");
    let consumer: BaseConsumer<Ctx> = kcfg
        .create_with_context(ctx)
        .map_err(|e| Error::kafka("creating the consumer (check --kafka-option values)", e))?;
    let Some(partitions) =
        crate::kafka::partition_count(&cfg.brokers, &cfg.kafka_options, &cfg.topic)?
    else {
        return Err(Error::Preflight(format!(
            "--topic: expected topic {} to exist on {}, found none",
            cfg.topic, cfg.brokers
        )));
    };
    consumer
        .subscribe(&[&cfg.topic])
        .map_err(|e| Error::kafka(format!("subscribing to {}", cfg.topic), e))?;
    let mut schemas = Schemas {
        brokers: cfg.brokers.clone(),
        extra: cfg.kafka_options.clone(),
        topic: format!("{}-schemas", cfg.topic),
        cache: HashMap::new(),
    };
    tracing::info!(topic = %cfg.topic, group = %cfg.group, dir = %cfg.out_dir.display(), "consuming");
    let mut batch = 0usize;
    let mut batch_started = Instant::now();
    let mut lag_checked = Instant::now();
    let session_ms: u64 = kcfg
        .get("session.timeout.ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(45_000);
    let mut watch = GroupWatch::new(Duration::from_millis(3 * session_ms).max(MIN_STALL));
    while !stop.load(Ordering::SeqCst) {
        if lag_checked.elapsed() >= LAG_REFRESH {
            refresh_lag(&consumer, &cfg.topic);
            if let Err(e) = watch_group(&consumer, &cfg.topic, partitions, &mut watch) {
                consumer.context().fail(e);
            }
            lag_checked = Instant::now();
        }
        let timeout = if batch == 0 {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        };
        let polled = consumer.poll(timeout);
        let idle = polled.is_none();
        if let Some(res) = polled {
            match res {
                Err(e) => tracing::warn!(error = %e, "consumer error (retrying)"),
                Ok(m) => {
                    let p = m.partition();
                    let rendered = render(&mut schemas, &m);
                    let mut files = consumer.context().files.lock().unwrap();
                    if let Some(f) = files.get_mut(&p) {
                        if f.next_offset.is_none_or(|n| m.offset() >= n) {
                            match rendered {
                                Ok(line) => {
                                    serde_json::to_writer(&mut f.pending, &line).expect("json");
                                    f.pending.push(b'\n');
                                    f.pending_n += 1;
                                }
                                Err(err) => {
                                    tracing::warn!(partition = p, offset = m.offset(), error = %err, "dead-lettering an undecodable record");
                                    serde_json::to_writer(
                                        &mut f.pending_dead,
                                        &dead_line(&m, &err),
                                    )
                                    .expect("json");
                                    f.pending_dead.push(b'\n');
                                    f.pending_dead_n += 1;
                                }
                            }
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
        if batch > 0 && (idle || batch >= BATCH || batch_started.elapsed() >= BATCH_WAIT) {
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
    }
    if let Err(e) = consumer.context().flush() {
        consumer.context().fail(e);
    }
    let failure = consumer.context().failure.lock().unwrap().take();
    // leaving the group revokes the partitions (flushing their files) and lets others take over
    crate::kafka::close_consumer(consumer, Duration::from_secs(10));
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
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
    for (p, next) in next {
        if let Ok((low, high)) = consumer.fetch_watermarks(topic, p, Duration::from_secs(2)) {
            consumer
                .context()
                .metrics
                .set_lag(p, high - next.unwrap_or(low));
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

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(15);

    #[test]
    fn a_partition_whose_offset_stands_still_with_records_to_read_is_stalled() {
        let t0 = Instant::now();
        let mut w = GroupWatch::new(S);
        // partition 1 belongs to another member, which commits as it writes
        assert_eq!(w.observe(t0, &[(1, 100, 150)]), None);
        assert_eq!(w.observe(t0 + S, &[(1, 140, 200)]), None, "moving");
        // it died: the offset stands at 140 while records keep arriving
        assert_eq!(
            w.observe(t0 + S * 2 - Duration::from_secs(1), &[(1, 140, 260)]),
            None
        );
        assert_eq!(w.observe(t0 + S * 2, &[(1, 140, 300)]), Some(1));
        // the clocks restart after a rejoin: no second rejoin before another full period
        assert_eq!(
            w.observe(t0 + S * 2 + Duration::from_secs(5), &[(1, 140, 300)]),
            None
        );
        assert_eq!(
            w.observe(t0 + S * 3 + Duration::from_secs(5), &[(1, 140, 300)]),
            Some(1)
        );
    }

    #[test]
    fn idle_owned_and_never_committed_partitions() {
        let t0 = Instant::now();
        let mut w = GroupWatch::new(S);
        // nothing to read: a standing offset is fine for ever
        for i in 0..10 {
            assert_eq!(w.observe(t0 + S * i, &[(0, 500, 500)]), None);
        }
        // a partition nobody ever committed: stalled one period after it last had nothing to read
        let five = Duration::from_secs(5);
        assert_eq!(w.observe(t0, &[(2, -1, 0)]), None, "empty");
        assert_eq!(
            w.observe(t0 + five, &[(2, -1, 7)]),
            None,
            "records just arrived"
        );
        assert_eq!(w.observe(t0 + five * 2, &[(2, -1, 9)]), None);
        assert_eq!(w.observe(t0 + five * 3, &[(2, -1, 9)]), Some(2));
        // a partition this member took over leaves the list, and is judged anew when it returns
        let mut w = GroupWatch::new(S);
        assert_eq!(w.observe(t0, &[(1, 10, 20)]), None);
        assert_eq!(w.observe(t0 + S, &[]), None);
        assert_eq!(w.observe(t0 + S * 2, &[(1, 10, 20)]), None);
        assert_eq!(w.observe(t0 + S * 3, &[(1, 10, 20)]), Some(1));
    }
}
