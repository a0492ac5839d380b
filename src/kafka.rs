//! Kafka: the transactional producer, topic set-up (partitions, replication), the
//! Java-compatible partitioner, and readers of what a topic holds: the end of a partition
//! (committed records only), the last record of every partition (whose writer it was) and the
//! connector's checkpoint in `<topic>-checkpoints`.
//!
//! Everything here that waits on the broker is blocking (librdkafka calls): call it from a
//! blocking thread (`spawn_blocking`), never from the async runtime's workers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::kafka_client_config;
use crate::error::{Error, Result};
use crate::position::SourcePos;

/// Header carrying a record's [`SourcePos`].
pub const POS_HEADER: &str = "rtis.pos";
/// Header naming the connector that wrote the record (`--name`).
pub const WRITER_HEADER: &str = "rtis.writer";
/// Header naming the source server the record was read from ([`crate::preflight::SourceId`]).
pub const SOURCE_HEADER: &str = "rtis.source";

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka's `Utils.murmur2` (the Java client's default partitioner hash).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const SEED: u32 = 0x9747_b28c;
    let len = data.len();
    let mut h: u32 = SEED ^ len as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if !tail.is_empty() {
        if tail.len() >= 3 {
            h ^= (tail[2] as u32) << 16;
        }
        if tail.len() >= 2 {
            h ^= (tail[1] as u32) << 8;
        }
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Partition of a keyed record, as Kafka's Java client and librdkafka's `murmur2_random` pick it.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as i64 % partitions.max(1) as i64) as i32
}

/// Takes a rebalance's newly assigned partitions the way the group's protocol wants them
/// (cooperative: only those added, incrementally; eager: the whole assignment).
pub fn assign_rebalanced<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
) -> rdkafka::error::KafkaResult<()> {
    match consumer.rebalance_protocol() {
        RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
        _ => consumer.assign(tpl),
    }
}

/// Gives up a rebalance's revoked partitions the way the group's protocol wants them.
pub fn unassign_rebalanced<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
) -> rdkafka::error::KafkaResult<()> {
    match consumer.rebalance_protocol() {
        RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
        _ => consumer.unassign(),
    }
}

/// Replication of the topics rtis creates (`--replication-factor`, `--min-insync-replicas`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replication {
    /// Replicas per partition; `None`: `min(3, brokers in the cluster)`.
    pub factor: Option<i32>,
    /// The topic's `min.insync.replicas`; `None`: 2 with three or more replicas, else 1.
    pub min_insync: Option<i32>,
}

impl Replication {
    /// The factor and `min.insync.replicas` for a cluster of `brokers` brokers.
    pub fn resolve(&self, brokers: usize) -> Result<(i32, i32)> {
        let brokers = brokers.max(1) as i32;
        let factor = self.factor.unwrap_or(brokers.min(3));
        if factor < 1 || factor > brokers {
            return Err(Error::Config(format!(
                "--replication-factor: expected 1..={brokers} (the cluster has {brokers} brokers), found {factor}"
            )));
        }
        let min_insync = self.min_insync.unwrap_or((factor - 1).clamp(1, 2));
        if min_insync < 1 || min_insync > factor {
            return Err(Error::Config(format!(
                "--min-insync-replicas: expected 1..={factor} (the replication factor), found {min_insync}"
            )));
        }
        Ok((factor, min_insync))
    }
}

/// The transactional producer: acks=all, idempotent, every record inside a transaction of
/// `transactional_id` (fencing any earlier producer with the same id when initialised).
///
/// Records time out inside librdkafka after `delivery_timeout_ms`: with transactions a timed-out
/// record makes the transaction abortable, and the session restarts from the last committed
/// checkpoint, so no gap can be filled by later records.
pub fn create_producer(
    brokers: &str,
    extra: &[String],
    transactional_id: &str,
    delivery_timeout_ms: u64,
) -> Result<FutureProducer> {
    let mut cfg = kafka_client_config(brokers, extra)?;
    let txn_timeout = delivery_timeout_ms.max(1000) + 30_000;
    // user options first, safety settings last: these cannot be overridden
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", txn_timeout.to_string())
        .set(
            "message.timeout.ms",
            delivery_timeout_ms.max(1000).to_string(),
        );
    create_with_defaults(cfg)
}

/// A plain idempotent producer (no transactions): the benchmark's produce floor and tests.
pub fn create_plain_producer(brokers: &str, extra: &[String]) -> Result<FutureProducer> {
    let mut cfg = kafka_client_config(brokers, extra)?;
    cfg.set("enable.idempotence", "true").set("acks", "all");
    create_with_defaults(cfg)
}

/// Batching defaults the user's `--kafka-option`s may override, then the producer.
fn create_with_defaults(mut cfg: rdkafka::ClientConfig) -> Result<FutureProducer> {
    if cfg.get("linger.ms").is_none() {
        cfg.set("linger.ms", "5");
    }
    if cfg.get("compression.type").is_none() {
        cfg.set("compression.type", "lz4");
    }
    cfg.create()
        .map_err(|e| Error::kafka("creating the producer (check --kafka-option values)", e))
}

fn admin(brokers: &str, extra: &[String]) -> Result<AdminClient<DefaultClientContext>> {
    kafka_client_config(brokers, extra)?
        .create()
        .map_err(|e| Error::kafka("creating the admin client", e))
}

fn unreachable(brokers: &str, e: KafkaError) -> Error {
    Error::BrokerUnavailable(format!(
        "--brokers: cannot reach the Kafka broker at {brokers} within {}s ({e}); \
         expected a reachable Kafka broker",
        METADATA_TIMEOUT.as_secs()
    ))
}

/// What the metadata says of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub partitions: i32,
    /// The smallest replica count among its partitions.
    pub min_replicas: i32,
    /// Brokers in the cluster.
    pub brokers: usize,
}

/// The topic's partitions and replication, or `None` if it does not exist. Errors when the
/// broker cannot be reached.
pub fn topic_info(brokers: &str, extra: &[String], topic: &str) -> Result<Option<TopicInfo>> {
    let consumer: BaseConsumer = kafka_client_config(brokers, extra)?
        .create()
        .map_err(|e| Error::kafka("creating a metadata client", e))?;
    let md = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| unreachable(brokers, e))?;
    let cluster = md.brokers().len();
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match t.error() {
        Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            Ok(None)
        }
        Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::TopicAuthorizationFailed => {
            Err(Error::Preflight(format!(
                "topic {topic}: the broker refuses to describe it (TopicAuthorizationFailed): grant DESCRIBE \
                 (and WRITE or READ) on topic {topic} to this client's principal"
            )))
        }
        Some(e) => Err(Error::Preflight(format!(
            "topic {topic}: broker reports {:?}",
            RDKafkaErrorCode::from(e)
        ))),
        None if t.partitions().is_empty() => Ok(None),
        None => Ok(Some(TopicInfo {
            partitions: t.partitions().len() as i32,
            min_replicas: t
                .partitions()
                .iter()
                .map(|p| p.replicas().len() as i32)
                .min()
                .unwrap_or(0),
            brokers: cluster,
        })),
    }
}

/// Number of partitions of `topic`, or `None` if it does not exist. Errors when the broker
/// cannot be reached.
pub fn partition_count(brokers: &str, extra: &[String], topic: &str) -> Result<Option<i32>> {
    Ok(topic_info(brokers, extra, topic)?.map(|t| t.partitions))
}

/// Brokers in the cluster.
pub fn broker_count(brokers: &str, extra: &[String]) -> Result<usize> {
    let consumer: BaseConsumer = kafka_client_config(brokers, extra)?
        .create()
        .map_err(|e| Error::kafka("creating a metadata client", e))?;
    let md = consumer
        .fetch_metadata(None, METADATA_TIMEOUT)
        .map_err(|e| unreachable(brokers, e))?;
    Ok(md.brokers().len())
}

/// Creates a topic (no-op if it exists), replicated as `replication` resolves for the cluster,
/// and waits until its metadata shows it.
pub async fn create_topic(
    brokers: &str,
    extra: &[String],
    topic: &str,
    partitions: i32,
    replication: Replication,
    config: &[(&str, &str)],
) -> Result<()> {
    let (b, x) = (brokers.to_string(), extra.to_vec());
    let cluster = tokio::task::spawn_blocking(move || broker_count(&b, &x))
        .await
        .expect("metadata")?;
    let (factor, min_insync) = replication.resolve(cluster)?;
    let admin = admin(brokers, extra)?;
    let min_isr = min_insync.to_string();
    let mut nt = NewTopic::new(topic, partitions, TopicReplication::Fixed(factor))
        .set("min.insync.replicas", &min_isr);
    for (k, v) in config {
        nt = nt.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let res = admin
        .create_topics([&nt], &opts)
        .await
        .map_err(|e| Error::kafka(format!("creating topic {topic}"), e))?;
    for r in res {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed)) => {
                return Err(Error::Preflight(format!(
                    "creating topic {t}: the broker refuses (authorization failed): grant CREATE on topic {t} \
                     (or on the cluster) to this client's principal, or create the topic beforehand"
                )))
            }
            Err((t, code)) => {
                return Err(Error::Preflight(format!(
                    "creating topic {t} with {partitions} partitions, replication factor {factor} and \
                     min.insync.replicas={min_insync} failed: {code:?}"
                )))
            }
        }
    }
    // wait until the metadata shows it (every partition with a leader)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (b, x, t) = (brokers.to_string(), extra.to_vec(), topic.to_string());
        let info = tokio::task::spawn_blocking(move || topic_info(&b, &x, &t))
            .await
            .expect("metadata")?;
        if info.is_some_and(|i| i.partitions == partitions) {
            tracing::info!(
                topic,
                partitions,
                replication_factor = factor,
                min_insync_replicas = min_insync,
                "created topic"
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Preflight(format!(
                "topic {topic} was created but does not show up in the metadata within 30 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The readers' client context: the end of a partition is what they wait for, not an error
/// (librdkafka also reports it as a client-wide error, which the default context logs).
pub struct ReaderContext;

impl rdkafka::ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::warn!(error = %error, reason, "Kafka client error (retrying)");
        }
    }
}
impl rdkafka::consumer::ConsumerContext for ReaderContext {}

type Reader = BaseConsumer<ReaderContext>;

/// A consumer that reads committed records only, assigned by hand (no group).
fn reader(brokers: &str, extra: &[String], what: &str) -> Result<Reader> {
    reader_at(brokers, extra, what, "read_committed")
}

fn reader_at(brokers: &str, extra: &[String], what: &str, isolation: &str) -> Result<Reader> {
    let mut cfg = kafka_client_config(brokers, extra)?;
    cfg.set("group.id", "rtis-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // these reads run at start-up and wait for the end of a partition: do not let each
        // empty fetch wait the default 500 ms
        .set("fetch.wait.max.ms", "20")
        .set("isolation.level", isolation);
    cfg.create_with_context(ReaderContext)
        .map_err(|e| Error::kafka(format!("creating the {what}"), e))
}

/// Waits until no transaction is open on the given partitions: each one's last stable offset
/// (what a `read_committed` reader may see) equals its high watermark. A session reads its
/// checkpoint and the partition tails only then, so a commit of an earlier producer of the
/// connector that is still being completed (markers not yet written, e.g. while the cluster
/// recovers from too few in-sync replicas) cannot land after those reads, unseen by them.
/// Blocking; fails as a transient broker error after `timeout`.
pub fn wait_transactions_settled(
    brokers: &str,
    extra: &[String],
    partitions: &[(String, i32)],
    timeout: Duration,
) -> Result<()> {
    let committed = reader_at(brokers, extra, "transaction probe", "read_committed")?;
    let all = reader_at(brokers, extra, "transaction probe", "read_uncommitted")?;
    let deadline = Instant::now() + timeout;
    let mut logged = false;
    loop {
        let mut open = Vec::new();
        for (topic, p) in partitions {
            let end = |c: &Reader| {
                c.fetch_watermarks(topic, *p, METADATA_TIMEOUT)
                    .map(|(_, high)| high)
                    .map_err(|e| {
                        Error::BrokerUnavailable(format!(
                            "reading the end offsets of {topic}/{p} from {brokers}: {e}"
                        ))
                    })
            };
            // the high watermark first: a stable offset read after it is never behind a
            // transaction that was open before
            let high = end(&all)?;
            let stable = end(&committed)?;
            if stable < high {
                open.push(format!(
                    "{topic}/{p} (last stable offset {stable}, high watermark {high})"
                ));
            }
        }
        if open.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::BrokerUnavailable(format!(
                "a transaction is still open on {} after {}s: an earlier producer's commit or abort \
                 is not complete (the cluster recovering?), or another transactional writer holds one open",
                open.join(", "),
                timeout.as_secs()
            )));
        }
        if !logged {
            tracing::info!(partitions = %open.join(", "), "waiting for an open transaction to complete before reading the checkpoint");
            logged = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads `topic`/`partition` from `from` up to its end (for committed records, the last stable
/// offset), calling `f` on every record. Blocking.
pub fn read_to_end(
    brokers: &str,
    extra: &[String],
    topic: &str,
    partition: i32,
    from: Offset,
    timeout: Duration,
    f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<()> {
    let c = reader(brokers, extra, &format!("reader of {topic}"))?;
    read_range(&c, brokers, topic, partition, from, timeout, f)
}

/// [`read_to_end`] on a reader the caller keeps (one client for several reads).
fn read_range(
    c: &Reader,
    brokers: &str,
    topic: &str,
    partition: i32,
    from: Offset,
    timeout: Duration,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<()> {
    let (low, high) = c
        .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
        .map_err(|e| {
            Error::BrokerUnavailable(format!(
                "reading the end offset of {topic}/{partition} from {brokers}: {e}"
            ))
        })?;
    if high <= low {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, from)
        .map_err(|e| Error::kafka(format!("assigning {topic}/{partition}"), e))?;
    c.assign(&tpl)
        .map_err(|e| Error::kafka(format!("assigning {topic}/{partition}"), e))?;
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        if Instant::now() > deadline {
            return Err(Error::BrokerUnavailable(format!(
                "could not read {topic}/{partition} to its end from {brokers} within {}s{}",
                timeout.as_secs(),
                last_error.map_or(String::new(), |e| format!(" (last error: {e})"))
            )));
        }
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
            // a node of the cluster is down or the partition's leader moves: librdkafka goes
            // on with the others and the new leader
            Some(Err(e)) if !permanent(&e) => last_error = Some(e),
            Some(Err(e)) => return Err(Error::kafka(format!("reading {topic}/{partition}"), e)),
            Some(Ok(m)) => f(&m),
        }
    }
}

/// Whether a consumer error will not go away by waiting.
fn permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::Fatal
        )
    ) || matches!(e, KafkaError::MessageConsumptionFatal(_))
}

/// The last committed record of a partition, as far as the writer check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub offset: i64,
    pub pos: Option<SourcePos>,
    /// `rtis.writer`: the connector that wrote it (absent: not written by this rtis).
    pub writer: Option<String>,
    /// `rtis.source`: the source server it was read from.
    pub source: Option<String>,
    /// The `--format` its key is written in (by its first byte).
    pub format: Option<&'static str>,
}

fn header(m: &BorrowedMessage<'_>, name: &str) -> Option<String> {
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

/// Reads the last committed record of every partition of `topic` (`None`: no committed record).
///
/// Transaction markers and aborted records occupy offsets, so the last record is searched for
/// in windows growing back from the end; all partitions are read at once, on one client.
/// Blocking.
pub fn read_partition_tails(
    brokers: &str,
    extra: &[String],
    topic: &str,
    partitions: i32,
) -> Result<Vec<Option<Tail>>> {
    let c = reader(brokers, extra, "tail reader")?;
    let mut tails = vec![None; partitions as usize];
    // per partition: (low watermark, end of the window still to search)
    let mut open: HashMap<i32, (i64, i64)> = HashMap::new();
    for p in 0..partitions {
        let (low, high) = c
            .fetch_watermarks(topic, p, METADATA_TIMEOUT)
            .map_err(|e| {
                Error::BrokerUnavailable(format!(
                    "reading the end offset of {topic}/{p} from {brokers}: {e}"
                ))
            })?;
        if high > low {
            open.insert(p, (low, high));
        }
    }
    let mut window = 64i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !open.is_empty() {
        let mut tpl = TopicPartitionList::new();
        let mut starts = HashMap::new();
        for (&p, &(low, end)) in &open {
            let start = (end - window).max(low);
            starts.insert(p, start);
            tpl.add_partition_offset(topic, p, Offset::Offset(start))
                .map_err(|e| Error::kafka(format!("assigning {topic}/{p}"), e))?;
        }
        c.assign(&tpl)
            .map_err(|e| Error::kafka(format!("assigning {topic}"), e))?;
        let mut reading: std::collections::HashSet<i32> = open.keys().copied().collect();
        let mut last_error = None;
        while !reading.is_empty() {
            if Instant::now() > deadline {
                return Err(Error::BrokerUnavailable(format!(
                    "could not read the ends of {topic} (partitions {reading:?}) from {brokers} within 60s{}",
                    last_error.map_or(String::new(), |e: KafkaError| format!(" (last error: {e})"))
                )));
            }
            match c.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    reading.remove(&p);
                }
                Some(Err(e)) if !permanent(&e) => last_error = Some(e),
                Some(Err(e)) => return Err(Error::kafka(format!("reading {topic}"), e)),
                Some(Ok(m)) => {
                    let p = m.partition();
                    if let Some(&(_, end)) = open.get(&p) {
                        if m.offset() < end {
                            tails[p as usize] = Some(Tail {
                                offset: m.offset(),
                                pos: header(&m, POS_HEADER).and_then(|s| s.parse().ok()),
                                writer: header(&m, WRITER_HEADER),
                                source: header(&m, SOURCE_HEADER),
                                format: m.key().and_then(crate::framing::format_of),
                            });
                        }
                    }
                }
            }
        }
        // partitions whose window held only markers or aborted records: search further back
        open.retain(|p, (low, end)| {
            let start = starts[p];
            *end = start;
            tails[*p as usize].is_none() && start > *low
        });
        window = window.saturating_mul(8);
    }
    Ok(tails)
}

/// Reads the last value of `key` in partition 0 of the compacted `topic` (committed records
/// only), or `None`. Blocking.
pub fn read_last_value(
    brokers: &str,
    extra: &[String],
    topic: &str,
    key: &str,
) -> Result<Option<Vec<u8>>> {
    let mut last = None;
    read_to_end(
        brokers,
        extra,
        topic,
        0,
        Offset::Beginning,
        Duration::from_secs(60),
        |m| {
            if m.key() == Some(key.as_bytes()) {
                last = m.payload().map(<[u8]>::to_vec);
            }
        },
    )?;
    Ok(last)
}

/// The producer's message size limit as configured, for error messages.
pub fn message_max_bytes(extra: &[String]) -> String {
    crate::config::parse_kafka_options(extra)
        .ok()
        .and_then(|o| o.into_iter().rev().find(|(k, _)| k == "message.max.bytes"))
        .map_or_else(
            || "message.max.bytes=1000000, librdkafka's default".to_string(),
            |(_, v)| format!("message.max.bytes={v}"),
        )
}

/// Headers of a change record: its source position, the connector that wrote it and the
/// source server.
pub fn record_headers(pos: &SourcePos, writer: &str, source: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: POS_HEADER,
            value: Some(pos.to_string().as_bytes()),
        })
        .insert(Header {
            key: WRITER_HEADER,
            value: Some(writer.as_bytes()),
        })
        .insert(Header {
            key: SOURCE_HEADER,
            value: Some(source.as_bytes()),
        })
}

/// Counts of committed records per partition (tests and tools: offsets include transaction
/// markers, so end offsets do not count records). Blocking.
pub fn count_committed(brokers: &str, extra: &[String], topic: &str) -> Result<Vec<i64>> {
    let Some(n) = partition_count(brokers, extra, topic)? else {
        return Ok(vec![]);
    };
    let mut counts = HashMap::new();
    for p in 0..n {
        let mut k = 0i64;
        read_to_end(
            brokers,
            extra,
            topic,
            p,
            Offset::Beginning,
            Duration::from_secs(120),
            |_| k += 1,
        )?;
        counts.insert(p, k);
    }
    Ok((0..n).map(|p| counts[&p]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_java_client() {
        // vectors from Kafka's UtilsTest.testMurmur2
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), want, "{:?}", std::str::from_utf8(data));
        }
    }

    #[test]
    fn message_size_limit_is_named_as_configured() {
        assert_eq!(
            message_max_bytes(&[]),
            "message.max.bytes=1000000, librdkafka's default"
        );
        assert_eq!(
            message_max_bytes(&["linger.ms=1".into(), "message.max.bytes=20000".into()]),
            "message.max.bytes=20000"
        );
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        for n in 1..8 {
            for k in 0..200u32 {
                let key = k.to_be_bytes();
                let p = partition_for(&key, n);
                assert!((0..n).contains(&p));
                assert_eq!(p, partition_for(&key, n));
            }
        }
    }
}
