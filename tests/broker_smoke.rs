//! Exactly what rtis uses of the Kafka-API broker, through rdkafka: topic creation,
//! idempotent acks=all produce, fetch from an offset, a two-member group, offset commit and
//! fetch, and durability across kill -9.
mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{unique, Broker};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

fn consumer(b: &Broker, group: &str) -> BaseConsumer {
    rtis::config::kafka_client_config(&b.bootstrap(), &[])
        .unwrap()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_supports_what_rtis_uses() {
    let mut broker = Broker::start();
    let topic = unique("smoke");
    rtis::kafka::create_topic(&broker.bootstrap(), &[], &topic, 3, &[])
        .await
        .unwrap();
    assert_eq!(
        rtis::kafka::partition_count(&broker.bootstrap(), &[], &topic).unwrap(),
        Some(3)
    );

    let producer = rtis::kafka::create_producer(&broker.bootstrap(), &[], 30_000).unwrap();
    for i in 0..30i32 {
        let key = format!("k{i}");
        let payload = format!("v{i}");
        let p = i % 3;
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&payload)
                    .partition(p),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {i}: {e}"));
    }

    // fetch from a given offset
    let c = consumer(&broker, &unique("g"));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 1, Offset::Offset(4))
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut got = Vec::new();
    while got.len() < 6 {
        if let Some(m) = c.poll(Duration::from_secs(10)) {
            let m = m.unwrap();
            got.push((
                m.offset(),
                String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
            ));
        } else {
            panic!("no record from offset 4; got {got:?}");
        }
    }
    assert_eq!(got[0], (4, "v13".to_string()));
    assert_eq!(got.last().unwrap().0, 9);

    // a group of two shares the partitions, commits and reads back its offsets
    let group = unique("grp");
    let (a, b) = (consumer(&broker, &group), consumer(&broker, &group));
    a.subscribe(&[&topic]).unwrap();
    b.subscribe(&[&topic]).unwrap();
    let mut seen: BTreeMap<String, (i32, i64)> = BTreeMap::new();
    let parts = |c: &BaseConsumer| -> HashSet<i32> {
        c.assignment()
            .map(|t| t.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    };
    let mut stable = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < 30 || !stable {
        assert!(
            std::time::Instant::now() < deadline,
            "group: consumed {} of 30, assignments {:?} / {:?}",
            seen.len(),
            parts(&a),
            parts(&b)
        );
        for c in [&a, &b] {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                seen.insert(
                    String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                    (m.partition(), m.offset()),
                );
                c.commit_message(&m, CommitMode::Sync).unwrap();
            }
        }
        let (pa, pb) = (parts(&a), parts(&b));
        stable =
            !pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb) && pa.len() + pb.len() == 3;
    }
    let committed = a.committed(Duration::from_secs(10)).unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .sum();
    assert!(total > 0, "committed offsets readable: {committed:?}");
    a.unsubscribe();
    b.unsubscribe();
    for _ in 0..5 {
        a.poll(Duration::from_millis(100));
        b.poll(Duration::from_millis(100));
    }
    drop(c);
    drop(producer);
    let closed_a = rtis::kafka::close_consumer(a, Duration::from_secs(5));
    let closed_b = rtis::kafka::close_consumer(b, Duration::from_secs(5));
    assert!(closed_a && closed_b, "both members leave the group");

    // durability: kill -9 and restart, the data is still there
    broker.kill9();
    broker.restart();
    let tails = tokio::task::spawn_blocking({
        let (bs, t) = (broker.bootstrap(), topic.clone());
        move || {
            let c: BaseConsumer = rtis::config::kafka_client_config(&bs, &[])
                .unwrap()
                .set("group.id", "x")
                .create()
                .unwrap();
            (0..3)
                .map(|p| c.fetch_watermarks(&t, p, Duration::from_secs(20)).unwrap())
                .collect::<Vec<_>>()
        }
    })
    .await
    .unwrap();
    assert_eq!(tails, vec![(0, 10), (0, 10), (0, 10)]);
}
