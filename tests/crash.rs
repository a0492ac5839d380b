//! kill -9 the producer at random moments while a workload runs; afterwards every committed
//! change is in Kafka exactly once, in order per key, and the fold equals the table.
//! `RTIS_CRASH_ITERATIONS` (default 20) and `RTIS_SEED` (replay) tune it.
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use mysql_async::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Expected records per key, in commit order: op letters (`t` for tombstone).
type Ledger = BTreeMap<u64, Vec<char>>;

async fn workload(db: &MariaDb, shop: &str, seed: u64, stop: &AtomicBool) -> Ledger {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = db.conn(shop).await;
    let mut present: BTreeMap<u64, bool> = BTreeMap::new();
    let mut ledger = Ledger::new();
    while !stop.load(Ordering::SeqCst) {
        let n = if rng.random_bool(0.2) {
            rng.random_range(2..6)
        } else {
            1
        };
        let mut tx = c.start_transaction(Default::default()).await.unwrap();
        let mut pending: Vec<(u64, Vec<char>, Option<bool>)> = Vec::new();
        let mut touched = present.clone();
        for _ in 0..n {
            let id = rng.random_range(1..=150u64);
            let exists = *touched.get(&id).unwrap_or(&false);
            if !exists {
                tx.exec_drop(
                    "INSERT INTO product (id, name, category, price) VALUES (?, ?, ?, ?)",
                    (id, format!("p{id}"), "cat", "1.00"),
                )
                .await
                .unwrap();
                pending.push((id, vec!['c'], Some(true)));
                touched.insert(id, true);
            } else if rng.random_bool(0.75) {
                tx.exec_drop(
                    "UPDATE product SET price = price + 0.01 WHERE id = ?",
                    (id,),
                )
                .await
                .unwrap();
                pending.push((id, vec!['u'], None));
            } else {
                tx.exec_drop("DELETE FROM product WHERE id = ?", (id,))
                    .await
                    .unwrap();
                pending.push((id, vec!['d', 't'], Some(false)));
                touched.insert(id, false);
            }
        }
        tx.commit().await.unwrap();
        // the ledger holds only what COMMIT confirmed
        for (id, ops, now) in pending {
            ledger.entry(id).or_default().extend(ops);
            if let Some(p) = now {
                present.insert(id, p);
            }
        }
        if rng.random_bool(0.3) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..20))).await;
        }
    }
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_producer_during_writes_loses_and_duplicates_nothing() {
    let (iterations, seed) = crash_params();
    eprintln!("crash test: seed {seed} (replay with RTIS_SEED={seed}), {iterations} kills");
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    let topic = unique("crash");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rtis.sqlite");
    let log = dir.path().join("producer.log");
    let mut child = spawn_producer(&db, &shop, broker, &topic, &state, &log, &[]);
    // the workload starts once the snapshot (of the empty table) is over, so every change it
    // makes is read from the binlog (op c/u/d); started earlier, a snapshot taken while it
    // writes would rightly read some of its rows as op r, which the ledger does not model
    streaming(&state).await;

    let stop = AtomicBool::new(false);
    let killer = async {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let sessions = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("session starting")
                .count()
        };
        // sessions logged before the running producer was spawned
        let mut seen = 0;
        for i in 0..iterations {
            // most kills land mid-stream (after the new session started), one in four while
            // the producer starts (fencing, reading the checkpoint, preflight)
            if i % 4 != 3 {
                eventually(
                    Duration::from_secs(60),
                    "the restarted producer's session",
                    || async { (sessions() > seen).then_some(()) },
                )
                .await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
            } else {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
            }
            child.kill9(); // SIGKILL
            if rng.random_bool(0.5) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
            }
            seen = sessions();
            child = spawn_producer(&db, &shop, broker, &topic, &state, &log, &[]);
            if i % 5 == 4 {
                eprintln!("crash test: {} kills", i + 1);
            }
        }
        stop.store(true, Ordering::SeqCst);
    };
    let (ledger, ()) = tokio::join!(workload(&db, &shop, seed, &stop), killer);
    let expected: usize = ledger.values().map(Vec::len).sum();
    eprintln!("crash test: workload done, {expected} records expected");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while record_count(&broker.bootstrap(), &topic).await < expected as i64 {
        if std::time::Instant::now() > deadline {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = log_text.lines().rev().take(40).collect();
            panic!(
                "the producer did not catch up (seed {seed}); log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let lines = drain_topic(
        &broker.bootstrap(),
        &topic,
        expected as i64,
        Duration::from_secs(120),
    )
    .await;
    child.kill9();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: String = log_text
        .lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("crash test: producer log tail:\n{tail}");
    assert!(
        !log_text.contains("panicked"),
        "producer panicked:\n{log_text}"
    );

    // the verifier: nothing lost, nothing duplicated, order per key, fold == table
    let mut expected_ledger = common::ledger::Ledger::new(seed);
    for (id, ops) in &ledger {
        for o in ops.iter().filter(|o| **o != 't') {
            let e = match o {
                'c' => common::ledger::Expected::Create(serde_json::json!({})),
                'u' => common::ledger::Expected::Update(serde_json::json!({})),
                _ => common::ledger::Expected::Delete,
            };
            expected_ledger.push(id.to_string(), e);
        }
    }
    let report = common::ledger::verify(&expected_ledger, &lines, &table_state(&db, &shop).await);
    eprintln!("{}", report.summary("crash (producer kill -9)", iterations));
    report.assert_ok("crash test");
    // kills can land before a session streams (during preflight); most must land mid-stream
    let sessions = log_text.matches("session starting").count();
    let resumed_past_duplicates = log_text
        .matches("skipping records the topic already holds")
        .count();
    eprintln!("crash test: {sessions} sessions, {resumed_past_duplicates} resumed behind the topic and skipped re-sent records");
    assert!(
        sessions > iterations * 3 / 4,
        "the producer streamed between kills ({sessions} sessions)"
    );
}
