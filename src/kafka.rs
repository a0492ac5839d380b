//! Kafka: producer set-up, topic checks, the Java-compatible partitioner, the schema topic and
//! reading the last record of every partition (the producer's duplicate filter on restart).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::checkpoint::SortKey;
use crate::config::kafka_client_config;
use crate::error::{Error, Result};
use crate::position::SourcePos;

/// Header carrying a record's [`SourcePos`].
pub const POS_HEADER: &str = "rtis.pos";
/// Header carrying a snapshot record's [`SortKey`].
pub const SNAPSHOT_KEY_HEADER: &str = "rtis.snapshot-key";

/// The last record of a partition, as far as resuming needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub pos: SourcePos,
    /// Set when the last record is a snapshot row.
    pub snapshot_key: Option<SortKey>,
}

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

/// The idempotent producer: acks=all, in order per partition, and no gap.
///
/// `message_timeout_ms` is librdkafka's local message timeout; the pipeline passes 0 (never)
/// and enforces its own delivery deadline instead (`--delivery-timeout-ms`). The reason: when a
/// record times out inside librdkafka, the idempotent producer bumps its epoch and goes on
/// sending the *later* records, which then land behind a gap. The restarted session would find
/// a later record at the partition's tail and skip the lost one as "already delivered". With no
/// local timeout and `enable.gapless.guarantee`, librdkafka never sends a record after one that
/// failed; rtis fails the session instead, drops the producer (purging what was not sent) and
/// resumes from the checkpoint.
pub fn create_producer(
    brokers: &str,
    extra: &[String],
    message_timeout_ms: u64,
) -> Result<FutureProducer> {
    let mut cfg = kafka_client_config(brokers, extra)?;
    // user options first, safety settings last: these cannot be overridden
    cfg.set("enable.idempotence", "true")
        .set("enable.gapless.guarantee", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("message.timeout.ms", message_timeout_ms.to_string());
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

/// Number of partitions of `topic`, or `None` if it does not exist. Errors when the broker
/// cannot be reached.
pub fn partition_count(brokers: &str, extra: &[String], topic: &str) -> Result<Option<i32>> {
    let consumer: BaseConsumer = kafka_client_config(brokers, extra)?
        .create()
        .map_err(|e| Error::kafka("creating a metadata client", e))?;
    let md = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| {
            Error::BrokerUnavailable(format!(
                "--brokers: cannot reach the Kafka broker at {brokers} within {}s ({e}); \
                 expected a reachable Kafka-API broker",
                METADATA_TIMEOUT.as_secs()
            ))
        })?;
    let t = md.topics().iter().find(|t| t.name() == topic);
    match t {
        None => Ok(None),
        Some(t) => match t.error() {
            Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => {
                Ok(None)
            }
            Some(e) => Err(Error::Preflight(format!(
                "topic {topic}: broker reports {:?}",
                RDKafkaErrorCode::from(e)
            ))),
            None if t.partitions().is_empty() => Ok(None),
            None => Ok(Some(t.partitions().len() as i32)),
        },
    }
}

/// Creates a topic (no-op if it exists).
pub async fn create_topic(
    brokers: &str,
    extra: &[String],
    topic: &str,
    partitions: i32,
    config: &[(&str, &str)],
) -> Result<()> {
    let admin = admin(brokers, extra)?;
    let mut nt = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in config {
        nt = nt.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let res = admin
        .create_topics([&nt], &opts)
        .await
        .map_err(|e| Error::kafka(format!("creating topic {topic}"), e))?;
    for r in res {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(Error::Preflight(format!(
                    "creating topic {t} with {partitions} partitions failed: {code:?}"
                )))
            }
        }
    }
    // wait until the metadata shows it
    for _ in 0..50 {
        if partition_count(brokers, extra, topic)?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::Preflight(format!(
        "topic {topic} was created but does not show up in the metadata"
    )))
}

/// Reads the [`SourcePos`] of the last record of every partition of `topic`.
///
/// Blocking (librdkafka calls): run it with `spawn_blocking`.
pub fn read_partition_tails(
    brokers: &str,
    extra: &[String],
    topic: &str,
    partitions: i32,
) -> Result<Vec<Option<Tail>>> {
    let mut cfg = kafka_client_config(brokers, extra)?;
    cfg.set("group.id", "rtis-producer-tail-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cfg
        .create()
        .map_err(|e| Error::kafka("creating the tail reader", e))?;
    let mut tails = vec![None; partitions as usize];
    let mut tpl = TopicPartitionList::new();
    let mut wanted: HashMap<i32, i64> = HashMap::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, METADATA_TIMEOUT)
            .map_err(|e| {
                Error::BrokerUnavailable(format!(
                    "reading the end offset of {topic}/{p} from {brokers}: {e}"
                ))
            })?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(high - 1))
                .map_err(|e| Error::kafka("building the tail assignment", e))?;
            wanted.insert(p, high - 1);
        }
    }
    if wanted.is_empty() {
        return Ok(tails);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::kafka("assigning the tail reader", e))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !wanted.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(Error::BrokerUnavailable(format!(
                "could not read the last record of {topic} partitions {:?} from {brokers} within 30s",
                wanted.keys().collect::<Vec<_>>()
            )));
        }
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let msg =
            msg.map_err(|e| Error::kafka(format!("reading the last records of {topic}"), e))?;
        let p = msg.partition();
        if wanted.get(&p) != Some(&msg.offset()) {
            continue;
        }
        wanted.remove(&p);
        let header = |name: &str| {
            msg.headers()
                .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        };
        tails[p as usize] = header(POS_HEADER)
            .and_then(|s| s.parse().ok())
            .map(|pos| Tail {
                pos,
                snapshot_key: header(SNAPSHOT_KEY_HEADER).and_then(|s| s.parse().ok()),
            });
        if tails[p as usize].is_none() {
            return Err(Error::Preflight(format!(
                "the last record of {topic} partition {p} (offset {}) has no {POS_HEADER} header: \
                 the topic holds records not written by rtis; use a topic rtis owns",
                msg.offset()
            )));
        }
    }
    Ok(tails)
}

/// Closes a group consumer within `timeout` (leaving the group); returns whether it closed.
///
/// The handle is then abandoned instead of dropped: with tansu 0.6.0, librdkafka's destroy of a
/// group consumer never returns (rdkafka's `Drop` and `rd_kafka_destroy` both wait with no
/// bound). Leaking one client per consumer lifetime is the price; its threads end with the
/// process, and everything it wrote was flushed before.
pub fn close_consumer<C: rdkafka::consumer::ConsumerContext>(
    c: BaseConsumer<C>,
    timeout: Duration,
) -> bool {
    let mut closed = c.close_queue().is_ok();
    if closed {
        let deadline = std::time::Instant::now() + timeout;
        while !c.closed() && std::time::Instant::now() < deadline {
            let _ = c.poll(Duration::from_millis(100));
        }
        closed = c.closed();
    }
    if !closed {
        tracing::warn!(
            timeout_ms = timeout.as_millis() as u64,
            "the consumer did not leave its group in time"
        );
    }
    std::mem::forget(c);
    closed
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

/// Headers of a record.
pub fn pos_headers(pos: &SourcePos, snapshot_key: Option<&SortKey>) -> OwnedHeaders {
    let h = OwnedHeaders::new().insert(Header {
        key: POS_HEADER,
        value: Some(pos.to_string().as_bytes()),
    });
    match snapshot_key {
        Some(k) => h.insert(Header {
            key: SNAPSHOT_KEY_HEADER,
            value: Some(k.to_string().as_bytes()),
        }),
        None => h,
    }
}

/// Publishes a writer schema to the schema topic (keyed by fingerprint) and waits for the ack,
/// at most `timeout`.
pub async fn publish_schema(
    producer: &FutureProducer,
    schema_topic: &str,
    fingerprint_hex: &str,
    json: &str,
    timeout: Duration,
) -> Result<()> {
    let rec = FutureRecord::to(schema_topic)
        .partition(0)
        .key(fingerprint_hex)
        .payload(json);
    match tokio::time::timeout(timeout, producer.send(rec, timeout)).await {
        Err(_) => Err(Error::DeliveryTimeout {
            topic: schema_topic.to_string(),
            partition: 0,
            record: format!("writer schema {fingerprint_hex}"),
            ms: timeout.as_millis() as u64,
        }),
        Ok(r) => r.map(|_| ()).map_err(|(e, _)| Error::Delivery {
            topic: schema_topic.to_string(),
            partition: 0,
            source: e,
        }),
    }
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
