//! What rtis relies on of Apache Kafka, through rdkafka and rtis's own helpers: topic creation
//! with a replication factor, transactions (committed records visible, aborted ones not, an
//! earlier producer of the same transactional id fenced), reading partition tails and a
//! partition's end past transaction markers, and durability across kill -9 — on one node and
//! on a three-node cluster that loses a partition's leader.
mod common;

use std::time::Duration;

use common::{unique, Broker};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rtis::kafka::{self, Replication};

fn txn_producer(b: &Broker, id: &str) -> FutureProducer {
    let p = kafka::create_producer(&b.bootstrap(), &[], id, 10_000).unwrap();
    p.init_transactions(Duration::from_secs(30)).unwrap();
    p
}

/// Sends `n` records per partition (key `k<i>`, header `rtis.writer`=`writer`) in the open
/// transaction and waits for their acknowledgements.
async fn send(p: &FutureProducer, topic: &str, partitions: i32, n: usize, writer: &str) {
    let mut futs = Vec::new();
    for part in 0..partitions {
        for i in 0..n {
            let key = format!("k{part}-{i}");
            let headers = OwnedHeaders::new().insert(Header {
                key: kafka::WRITER_HEADER,
                value: Some(writer.as_bytes()),
            });
            futs.push(
                p.send_result(
                    FutureRecord::to(topic)
                        .key(&key)
                        .payload("v")
                        .partition(part)
                        .headers(headers),
                )
                .unwrap_or_else(|(e, _)| panic!("produce: {e}")),
            );
        }
    }
    for f in futs {
        f.await.unwrap().unwrap();
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_transactions_fencing_tails_and_kill9() {
    let mut broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = unique("smoke");
    kafka::create_topic(&bs, &[], &topic, 3, Replication::default(), &[])
        .await
        .unwrap();
    let info = {
        let (b, t) = (bs.clone(), topic.clone());
        blocking(move || kafka::topic_info(&b, &[], &t).unwrap().unwrap()).await
    };
    assert_eq!(
        (info.partitions, info.min_replicas, info.brokers),
        (3, 1, 1),
        "one node: replication factor min(3, 1)"
    );

    // a committed transaction, then an aborted one
    let txn_id = unique("txn");
    let p = txn_producer(&broker, &txn_id);
    p.begin_transaction().unwrap();
    send(&p, &topic, 3, 10, "committed").await;
    blocking({
        let p = p.clone();
        move || p.commit_transaction(Duration::from_secs(30)).unwrap()
    })
    .await;
    p.begin_transaction().unwrap();
    send(&p, &topic, 3, 4, "aborted").await;
    blocking({
        let p = p.clone();
        move || p.abort_transaction(Duration::from_secs(30)).unwrap()
    })
    .await;
    let counts = {
        let (b, t) = (bs.clone(), topic.clone());
        blocking(move || kafka::count_committed(&b, &[], &t).unwrap()).await
    };
    assert_eq!(counts, vec![10, 10, 10], "aborted records are never read");
    let ends = common::end_offsets(&bs, &topic).await;
    assert!(
        ends.iter().all(|&e| e > 10),
        "markers and aborted records occupy offsets: {ends:?}"
    );
    let tails = {
        let (b, t) = (bs.clone(), topic.clone());
        blocking(move || kafka::read_partition_tails(&b, &[], &t, 3).unwrap()).await
    };
    for (i, t) in tails.iter().enumerate() {
        let t = t
            .as_ref()
            .unwrap_or_else(|| panic!("partition {i}: no tail"));
        assert_eq!(t.offset, 9, "partition {i}: the last committed record");
        assert_eq!(t.writer.as_deref(), Some("committed"));
    }

    // a second producer of the same transactional id fences the first one
    p.begin_transaction().unwrap();
    send(&p, &topic, 1, 3, "zombie").await;
    let successor = txn_producer(&broker, &txn_id);
    let zombie = blocking({
        let p = p.clone();
        move || p.commit_transaction(Duration::from_secs(30))
    })
    .await;
    let err = zombie.expect_err("the fenced producer cannot commit");
    assert!(
        err.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fenced)
            || matches!(
                p.client().fatal_error(),
                Some((rdkafka::types::RDKafkaErrorCode::Fenced, _))
            ),
        "fenced: {err:?} / {:?}",
        p.client().fatal_error()
    );
    successor.begin_transaction().unwrap();
    send(&successor, &topic, 1, 2, "successor").await;
    blocking({
        let p = successor.clone();
        move || p.commit_transaction(Duration::from_secs(30)).unwrap()
    })
    .await;
    drop((p, successor));
    let counts = {
        let (b, t) = (bs.clone(), topic.clone());
        blocking(move || kafka::count_committed(&b, &[], &t).unwrap()).await
    };
    assert_eq!(
        counts,
        vec![12, 10, 10],
        "nothing of the zombie's transaction"
    );

    // an open transaction keeps the last stable offset below the high watermark: a session
    // start waits for it (here: fails after its timeout, naming the partition), and goes on
    // once it is committed
    let settle = {
        let (b, t) = (bs.clone(), topic.clone());
        move |timeout: Duration| {
            let parts: Vec<(String, i32)> = (0..3).map(|p| (t.clone(), p)).collect();
            kafka::wait_transactions_settled(&b, &[], &parts, timeout)
        }
    };
    blocking({
        let settle = settle.clone();
        move || settle(Duration::from_secs(5)).expect("no transaction open")
    })
    .await;
    let open = txn_producer(&broker, &unique("txn"));
    open.begin_transaction().unwrap();
    send(&open, &topic, 2, 1, "open").await;
    let err = blocking({
        let settle = settle.clone();
        move || settle(Duration::from_secs(2))
    })
    .await
    .expect_err("a transaction is open")
    .to_string();
    assert!(
        err.contains(&format!("{topic}/1")) && !err.contains(&format!("{topic}/2")),
        "names the partitions holding the open transaction: {err}"
    );
    let waiter = tokio::task::spawn_blocking({
        let settle = settle.clone();
        move || settle(Duration::from_secs(60))
    });
    blocking({
        let p = open.clone();
        move || p.commit_transaction(Duration::from_secs(30)).unwrap()
    })
    .await;
    waiter.await.unwrap().expect("settled once committed");
    drop(open);
    let counts = {
        let (b, t) = (bs.clone(), topic.clone());
        blocking(move || kafka::count_committed(&b, &[], &t).unwrap()).await
    };
    assert_eq!(counts, vec![13, 11, 10]);

    // durability: kill -9 and restart, the committed records are still there
    blocking(move || {
        broker.kill9();
        broker.restart();
        let counts = kafka::count_committed(&broker.bootstrap(), &[], &topic).unwrap();
        assert_eq!(counts, vec![13, 11, 10]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_replicates_and_survives_the_leader_kill9() {
    let mut cluster = Broker::cluster();
    let bs = cluster.bootstrap();
    let topic = unique("replicated");
    kafka::create_topic(&bs, &[], &topic, 3, Replication::default(), &[])
        .await
        .unwrap();
    let (leader, replicas, isr) = {
        let c = &cluster;
        c.partition_info(&topic, 0).unwrap()
    };
    assert_eq!(replicas.len(), 3, "RF min(3, 3)");
    assert_eq!(isr.len(), 3);
    let txn_id = unique("txn");
    let p = txn_producer(&cluster, &txn_id);
    p.begin_transaction().unwrap();
    send(&p, &topic, 3, 5, "before").await;
    blocking({
        let p = p.clone();
        move || p.commit_transaction(Duration::from_secs(30)).unwrap()
    })
    .await;

    // the leader of partition 0 dies; another replica leads, writes go on with 2 in sync
    cluster.kill9_node(leader as u32);
    let new_leader = common::eventually(Duration::from_secs(60), "a new leader", || {
        let info = cluster.partition_info(&topic, 0);
        async move { info.filter(|(l, _, _)| *l > 0 && *l != leader).map(|i| i.0) }
    })
    .await;
    assert_ne!(new_leader, leader);
    p.begin_transaction().unwrap();
    send(&p, &topic, 3, 5, "after").await;
    blocking({
        let p = p.clone();
        move || p.commit_transaction(Duration::from_secs(60)).unwrap()
    })
    .await;
    drop(p);
    let counts = {
        let (b, t) = (bs.clone(), topic.clone());
        blocking(move || kafka::count_committed(&b, &[], &t).unwrap()).await
    };
    assert_eq!(counts, vec![10, 10, 10]);

    // the node comes back and catches up: all three in sync again
    blocking(move || {
        cluster.restart_node(leader as u32);
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let isr = cluster.partition_info(&topic, 0).map(|i| i.2.len());
            if isr == Some(3) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ISR back to 3: {isr:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    })
    .await;
}
