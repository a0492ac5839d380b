//! Snapshot phase: backfill anchored to a binlog position, resumable after kill -9, handing
//! over to the stream with no gap and no duplicate.
mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::*;
use mysql_async::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

async fn fill(db: &MariaDb, shop: &str, rows: u64) {
    db.exec(
        shop,
        &format!(
            "INSERT INTO product (id, name, category, price, last_updated)
             SELECT seq, CONCAT('product ', seq), IF(seq % 7 = 0, NULL, CONCAT('cat', seq % 13)), (seq % 100000) / 100,
                    TIMESTAMP('2024-01-01') + INTERVAL ((seq * 1000003) % 3600000000) MICROSECOND
             FROM seq_1_to_{rows}"
        ),
    )
    .await;
}

async fn total(broker: &Broker, topic: &str) -> i64 {
    record_count(&broker.bootstrap(), topic).await
}

/// For each key: snapshot rows come before any binlog change, and nothing is duplicated.
fn check_order(lines: &[Value]) {
    let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for l in lines {
        by_key
            .entry(l["key"]["id"].as_str().unwrap().to_string())
            .or_default()
            .push(l);
    }
    for (k, recs) in by_key {
        let mut seen_change = false;
        let mut seen: HashSet<String> = HashSet::new();
        for r in recs {
            if r["op"] == "r" {
                assert!(
                    !seen_change,
                    "key {k}: snapshot row after a binlog change: {r}"
                );
            } else if r["op"] != "tombstone" {
                seen_change = true;
            }
            if r["op"] != "tombstone" {
                let id = format!(
                    "{}|{}|{}|{}|{}",
                    r["op"],
                    r["source"]["file"],
                    r["source"]["pos"],
                    r["source"]["row"],
                    r["after"]
                );
                assert!(seen.insert(id.clone()), "key {k}: duplicate record {id}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_with_concurrent_writes_hands_over_with_no_gap() {
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    let rows = 100_000;
    fill(&db, &shop, rows).await;
    let topic = unique("snap");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = producer_config(&db, &shop, broker, &topic, &dir.path().join("rtis.sqlite"));
    cfg.snapshot_chunk = 5_000;
    // paced, so the writes below fall inside the snapshot (about 4 s)
    cfg.snapshot_max_rows_per_sec = 25_000;
    let producer = InProcess::start(cfg);
    // writes while the snapshot runs: updates, inserts, deletes
    records_at_least(&broker.bootstrap(), &topic, 1, Duration::from_secs(60)).await;
    let mut c = db.conn(&shop).await;
    let mut deleted = Vec::new();
    for i in 0..300u64 {
        let id = 1 + (i * 331) % rows;
        match i % 3 {
            0 => c
                .exec_drop("UPDATE product SET price = price + 1 WHERE id = ?", (id,))
                .await
                .unwrap(),
            1 => c
                .exec_drop(
                    "INSERT INTO product (id, name, price) VALUES (?, 'new', 1.00)",
                    (rows + 1 + i,),
                )
                .await
                .unwrap(),
            _ => {
                c.exec_drop("DELETE FROM product WHERE id = ?", (id,))
                    .await
                    .unwrap();
                deleted.push(id);
            }
        }
        if i % 30 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // a last write marks the end; once the topic stops growing, everything up to it is in
    c.exec_drop(
        "INSERT INTO product (id, name, price) VALUES (999999999, 'sentinel', 1.00)",
        (),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut prev = -1;
    let settled = loop {
        let n = total(broker, &topic).await;
        if n == prev && n >= rows as i64 {
            break n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the topic did not settle ({n} records)"
        );
        prev = n;
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    let lines = drain_topic(
        &broker.bootstrap(),
        &topic,
        settled,
        Duration::from_secs(300),
    )
    .await;
    eprintln!(
        "100k snapshot + changes drained {} records in {:?}",
        lines.len(),
        started.elapsed()
    );
    assert!(
        lines.iter().any(|l| l["after"]["name"] == "sentinel"),
        "the last write arrived"
    );
    producer.stop().await.unwrap();
    let snap = lines.iter().filter(|l| l["op"] == "r").count();
    assert!(snap as u64 >= rows - 200, "snapshot rows: {snap}");
    assert!(lines
        .iter()
        .filter(|l| l["op"] == "r")
        .all(|l| l["source"]["snapshot"] == true));
    check_order(&lines);
    assert_eq!(
        fold(&lines),
        table_state(&db, &shop).await,
        "final state per key equals the table"
    );
    // a key deleted before the snapshot's anchor has no record at all (fold == table covers it);
    // every key deleted after it ends with a delete and a tombstone
    let mut deleted_after_anchor = 0;
    for id in deleted {
        let last: Vec<&Value> = lines
            .iter()
            .filter(|l| l["key"]["id"].as_str() == Some(id.to_string().as_str()))
            .collect();
        let n = last.len();
        if n > 0 {
            deleted_after_anchor += 1;
            assert!(
                n >= 2 && last[n - 2]["op"] == "d" && last[n - 1]["op"] == "tombstone",
                "deleted {id} ends with delete + tombstone: {last:?}"
            );
        }
    }
    assert!(
        deleted_after_anchor > 0,
        "some deletes ran after the anchor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_snapshot_and_at_handover_resumes_without_duplicates() {
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    let rows: i64 = 30_000;
    fill(&db, &shop, rows as u64).await;
    let topic = unique("snapkill");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rtis.sqlite");
    let log = dir.path().join("producer.log");
    // paced so that kills land at the intended fractions (about 3 s for the whole snapshot)
    let args = [
        "--snapshot-chunk",
        "500",
        "--snapshot-max-rows-per-sec",
        "10000",
    ];
    // the fixed points (early, middle, last chunk, the handover) and seeded random instants:
    // 6 kills in CI, 50 with RTIS_LONG=1
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fractions: Vec<f64> = (0..iterations(2, 46))
        .map(|_| rng.random_range(0.0..1.0))
        .chain([0.10, 0.50, 0.99, 1.0])
        .collect();
    fractions.sort_by(f64::total_cmp);
    eprintln!(
        "snapshot kills: {} (seed {seed}, RTIS_SEED replays)",
        fractions.len()
    );
    for fraction in fractions {
        let mut child = spawn_producer(&db, &shop, broker, &topic, &state, &log, &args);
        let target = (rows as f64 * fraction) as i64;
        eventually(
            Duration::from_secs(180),
            &format!("{target} snapshot records"),
            || async { (total(broker, &topic).await >= target).then_some(()) },
        )
        .await;
        child.kill9(); // SIGKILL mid-snapshot (or right at the handover)
        eprintln!(
            "killed at {} records (target {target})",
            total(broker, &topic).await
        );
    }
    let log2 = dir.path().join("producer-final.log");
    let mut child = spawn_producer(&db, &shop, broker, &topic, &state, &log2, &args);
    // changes after the handover are streamed
    eventually(Duration::from_secs(60), "streaming", || async {
        std::fs::read_to_string(&log2)
            .unwrap_or_default()
            .contains("streaming binlog")
            .then_some(())
    })
    .await;
    db.exec(
        &shop,
        "UPDATE product SET name = 'streamed' WHERE id = 5; DELETE FROM product WHERE id = 6",
    )
    .await;
    let lines = drain_topic(
        &broker.bootstrap(),
        &topic,
        rows + 3,
        Duration::from_secs(120),
    )
    .await;
    child.kill9();
    let log_text =
        std::fs::read_to_string(&log).unwrap() + &std::fs::read_to_string(&log2).unwrap();
    assert!(
        log_text.contains("snapshot running") && log_text.matches("rows_done=0 ").count() == 1,
        "the snapshot resumed from its cursor, not from zero:\n{log_text}"
    );
    let snap: Vec<&Value> = lines.iter().filter(|l| l["op"] == "r").collect();
    assert_eq!(
        snap.len() as i64,
        rows,
        "every row exactly once in the snapshot"
    );
    let ids: HashSet<&str> = snap
        .iter()
        .map(|l| l["key"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len() as i64, rows);
    assert_eq!(
        lines.len() as i64,
        rows + 3,
        "snapshot + update + delete + tombstone: {:?}",
        &lines[rows as usize..]
    );
    check_order(&lines);
    assert_eq!(fold(&lines), table_state(&db, &shop).await);

    // the snapshot path and the binlog path encode a row identically: one writer schema each
    // for value and key (information_schema and the binlog's table map agree), and the row read
    // by the snapshot equals the same row read from the binlog's before image
    let r5 = lines
        .iter()
        .find(|l| l["op"] == "r" && l["key"]["id"] == "5")
        .unwrap();
    let u5 = lines
        .iter()
        .find(|l| l["op"] == "u" && l["key"]["id"] == "5")
        .unwrap();
    assert_eq!(r5["after"], u5["before"]);
    assert_eq!(
        schema_fingerprints(broker, &format!("{topic}-schemas"))
            .await
            .len(),
        2
    );
}

/// Distinct keys (fingerprints) in a schema topic (committed records).
async fn schema_fingerprints(broker: &Broker, topic: &str) -> HashSet<String> {
    use rdkafka::message::Message;
    let (bs, t) = (broker.bootstrap(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let mut keys = HashSet::new();
        rtis::kafka::read_to_end(
            &bs,
            &[],
            &t,
            0,
            rdkafka::Offset::Beginning,
            Duration::from_secs(60),
            |m| {
                keys.insert(String::from_utf8(m.key().unwrap().to_vec()).unwrap());
            },
        )
        .unwrap();
        keys
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_only_since_emits_exactly_the_selected_rows_and_exits_zero() {
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    fill(&db, &shop, 2_000).await;
    let topic = unique("since");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("p.log");
    let since = "2024-01-01 00:10:00.000000";
    let mut child = spawn_producer(
        &db,
        &shop,
        broker,
        &topic,
        &dir.path().join("s.sqlite"),
        &log,
        &["--snapshot", "snapshot-only", "--since", since],
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        status.success(),
        "exit 0: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    let mut c = db.conn(&shop).await;
    c.query_drop("SET time_zone = '+00:00'").await.unwrap();
    let want: Vec<u64> = c
        .exec(
            "SELECT id FROM product WHERE last_updated >= ? ORDER BY id",
            (since,),
        )
        .await
        .unwrap();
    assert!(
        !want.is_empty() && want.len() < 2_000,
        "the filter selects a strict subset ({})",
        want.len()
    );
    let lines = drain_topic(
        &broker.bootstrap(),
        &topic,
        want.len() as i64,
        Duration::from_secs(60),
    )
    .await;
    let mut got: Vec<u64> = lines
        .iter()
        .map(|l| l["key"]["id"].as_str().unwrap().parse().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, want);
    assert!(lines
        .iter()
        .all(|l| l["op"] == "r"
            && l["after"]["last_updated"].as_str().unwrap() >= "2024-01-01T00:10:00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_binlog_fails_clearly_or_catches_up_when_needed() {
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    fill(&db, &shop, 50).await;
    let topic = unique("purge");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rtis.sqlite");
    let mut cfg = producer_config(&db, &shop, broker, &topic, &state);
    let p = InProcess::start(cfg.clone());
    drain_topic(&broker.bootstrap(), &topic, 50, Duration::from_secs(60)).await;
    p.stop().await.unwrap();
    // while the producer is down: changes, then the binlog holding them is purged
    db.exec(&shop, "UPDATE product SET name = 'changed while down' WHERE id <= 10; INSERT INTO product (id, name, price) VALUES (1000, 'new while down', 1.00)").await;
    // the server keeps a file while a dump thread or crash recovery may still need it: retry
    eventually(Duration::from_secs(60), "mariadb-bin.000001 purged", || {
        let (db, shop) = (&db, &shop);
        async move {
            let mut c = db.conn(shop).await;
            c.query_drop("FLUSH BINARY LOGS").await.unwrap();
            let newest: String = c
                .query_first("SHOW MASTER STATUS")
                .await
                .unwrap()
                .map(|r: mysql_async::Row| r.get(0).unwrap())
                .unwrap();
            let _ = c
                .query_drop(format!("PURGE BINARY LOGS TO '{newest}'"))
                .await;
            let files: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await.unwrap();
            (!files
                .iter()
                .any(|r| r.get::<String, _>(0).unwrap() == "mariadb-bin.000001"))
            .then_some(())
        }
    })
    .await;
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        rtis::pipeline::run(cfg.clone(), std::future::pending()),
    )
    .await
    .expect("a purged binlog is an error, not a wait")
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("mariadb-bin.000001") && msg.contains("purged") && msg.contains("when-needed"),
        "{msg}"
    );

    cfg.snapshot = rtis::config::SnapshotMode::WhenNeeded;
    let p = InProcess::start(cfg);
    let lines = drain_topic(
        &broker.bootstrap(),
        &topic,
        50 + 11,
        Duration::from_secs(60),
    )
    .await;
    p.stop().await.unwrap();
    let state_now = table_state(&db, &shop).await;
    assert_eq!(fold(&lines), state_now, "rows still present end exact");
}
