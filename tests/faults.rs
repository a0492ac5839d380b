//! Fault injection and bad input while the producer streams a random workload: broker kill -9
//! and SIGSTOP, MariaDB kill -9, binlog rotation, a producer kill -9 inside 10k-row
//! transactions, an oversize row, incompatible DDL. Each test checks its outcome with the
//! ledger verifier (`tests/common/ledger.rs`: nothing lost, nothing duplicated, order per key,
//! fold == table) and prints one `fault summary:` line.
//!
//! `RTIS_SEED` replays a run; `RTIS_LONG=1` runs the long counts (50+ producer kills);
//! `RTIS_CRASH_ITERATIONS` sets the count of every kill loop.
mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::env::*;
use common::ledger::{verify, Expected, Ledger, Workload};
use common::*;
use mysql_async::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Broker kill -9 and restart, several times, while a workload streams. The producer waits
/// (short outages: librdkafka retries within the delivery timeout) or fails its session and
/// reconnects from the checkpoint (outages longer than the 5 s delivery timeout). Afterwards
/// every committed change is in the topic exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_kill9_and_restart_while_streaming() {
    let n = iterations(3, 50);
    let seed = seed();
    eprintln!("broker kill: seed {seed} (RTIS_SEED={seed} replays), {n} broker kills");
    let mut env = Env::with_own_broker("brokerkill").await;
    let mut producer = env.spawn(&["--delivery-timeout-ms", "5000"]);
    env.wait_streaming(1).await;
    let mut w = Workload::new(env.db.root_url(&env.shop), seed).await;
    let stop = AtomicBool::new(false);
    let broker = &mut *env.broker;
    let mut downtimes = Vec::new();
    let killer = async {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xb40c);
        for i in 0..n {
            sleep_ms(rng.random_range(500..2000)).await;
            broker.kill9();
            // sometimes shorter, sometimes longer than the delivery timeout
            let down = if i % 2 == 0 {
                rng.random_range(100..2000)
            } else {
                rng.random_range(6000..8000)
            };
            sleep_ms(down).await;
            tokio::task::block_in_place(|| broker.restart());
            downtimes.push(down);
        }
        sleep_ms(1500).await;
        stop.store(true, Ordering::SeqCst);
    };
    tokio::join!(w.run_until(&stop), killer);
    let (report, _) = env.verify(&w.ledger).await;
    assert_running(&mut producer, &env);
    let log = env.log_text();
    let failed = log.matches("session failed").count();
    eprintln!("broker kill: outages {downtimes:?} ms; {failed} failed sessions; aborted/uncertain commits {}/{}", w.aborted, w.uncertain);
    eprintln!(
        "{}",
        report.summary("broker_kill9_and_restart_while_streaming", n)
    );
    assert!(!log.contains("panicked"), "producer panicked");
    report.assert_ok("broker kill -9");
    assert!(
        failed >= 1,
        "an outage longer than the delivery timeout fails the session (log tail:\n{})",
        env.log_tail(30)
    );
}

/// The broker is paused (SIGSTOP) for longer than the 3 s delivery timeout while the workload
/// writes. The producer's session fails with a delivery timeout and keeps retrying (it does not
/// exit), and the durable checkpoint never passes the binlog position at which the broker
/// stopped acknowledging: checked after a kill -9 during the pause, and after a graceful stop
/// requested while records are in flight (it exits after the delivery timeout, with an error).
/// After SIGCONT and a restart everything arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_paused_longer_than_the_delivery_timeout() {
    let seed = seed();
    eprintln!("broker pause: seed {seed} (RTIS_SEED={seed} replays)");
    let env = Env::with_own_broker("brokerpause").await;
    let args = ["--delivery-timeout-ms", "3000"];
    let mut producer = env.spawn(&args);
    env.wait_streaming(1).await;
    let mut w = Workload::new(env.db.root_url(&env.shop), seed).await;
    let stop = AtomicBool::new(false);
    let mut checkpoints = Vec::new();
    let driver = async {
        for (phase, graceful) in [(1usize, false), (2, true)] {
            sleep_ms(1500).await;
            let log_len = env.log_text().len();
            env.broker.pause(true);
            // after SIGSTOP no acknowledgement can be produced: whatever commits after this
            // position cannot have been acknowledged while paused
            let paused_at = env.master_pos().await;
            let new_log = || env.log_text()[log_len..].to_string();
            if !graceful {
                // the session fails on the delivery timeout...
                eventually(Duration::from_secs(30), "a delivery timeout", || async {
                    let l = new_log();
                    (l.contains("session failed") && l.contains("not acknowledged within 3000 ms"))
                        .then_some(())
                })
                .await;
                // ...and the next sessions fail too while the broker does not answer, but the
                // producer keeps retrying instead of exiting
                eventually(
                    Duration::from_secs(40),
                    "a second failed session",
                    || async { (new_log().matches("session failed").count() >= 2).then_some(()) },
                )
                .await;
                assert_running(&mut producer, &env);
                producer.kill9();
            } else {
                // a graceful stop while records are in flight and the broker does not answer:
                // the producer waits for them at most the delivery timeout, then exits with an
                // error (no endless retry, no checkpoint past them)
                sleep_ms(500).await;
                let code = terminate(&mut producer, &env, Duration::from_secs(20)).await;
                let l = new_log();
                eprintln!("broker pause: SIGTERM with records in flight: exit code {code:?}");
                assert_eq!(code, Some(2), "{}", env.log_tail(20));
                assert!(
                    l.contains("stopping as requested") && l.contains("not acknowledged within"),
                    "{}",
                    env.log_tail(20)
                );
            }
            let cp = env.checkpoint().expect("a checkpoint");
            let end = env.master_pos().await;
            assert!(
                end > paused_at,
                "phase {phase}: the workload committed while the broker was paused"
            );
            assert!(
                cp <= paused_at,
                "phase {phase}: the checkpoint {cp} passed {paused_at}, where the broker stopped acknowledging (binlog end now {end})"
            );
            checkpoints.push((cp, paused_at, end));
            // the old producer's requests still in the paused broker's socket buffers are
            // processed after SIGCONT, while the new producer starts: its InitProducerId
            // fences them, so they never become visible (tested on three nodes too)
            env.broker.pause(false);
            producer = env.spawn(&args);
            env.wait_streaming(phase + 1).await;
        }
        sleep_ms(1500).await;
        stop.store(true, Ordering::SeqCst);
        producer
    };
    let ((), mut producer) = tokio::join!(w.run_until(&stop), driver);
    let (report, _) = env.verify(&w.ledger).await;
    assert_running(&mut producer, &env);
    for (cp, paused, end) in &checkpoints {
        eprintln!("broker pause: checkpoint {cp} <= paused at {paused} (binlog end {end} before resuming)");
    }
    eprintln!(
        "{}",
        report.summary("broker_paused_longer_than_the_delivery_timeout", 2)
    );
    assert!(!env.log_text().contains("panicked"), "producer panicked");
    report.assert_ok("broker paused");
}

/// MariaDB kill -9 and restart mid-stream: the producer's binlog stream breaks, it reconnects
/// with backoff and resumes from its checkpoint. Commits whose outcome the workload could not
/// see are looked up after the restart (`rtis_txlog`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_kill9_and_restart_mid_stream() {
    let n = iterations(2, 10);
    let seed = seed();
    eprintln!("mariadb kill: seed {seed} (RTIS_SEED={seed} replays), {n} server kills");
    let mut env = Env::new("dbkill").await;
    let mut producer = env.spawn(&[]);
    env.wait_streaming(1).await;
    let mut w = Workload::new(env.db.root_url(&env.shop), seed).await;
    let stop = AtomicBool::new(false);
    let Env { db, log, .. } = &mut env;
    let sessions = |log: &PathBuf| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("streaming binlog")
            .count()
    };
    let killer = async {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xdb);
        for _ in 0..n {
            sleep_ms(rng.random_range(800..2500)).await;
            let before = sessions(log);
            db.kill9();
            sleep_ms(rng.random_range(0..1000)).await;
            tokio::task::block_in_place(|| db.restart());
            eventually(
                Duration::from_secs(60),
                "the producer streaming again",
                || async { (sessions(log) > before).then_some(()) },
            )
            .await;
        }
        sleep_ms(1500).await;
        stop.store(true, Ordering::SeqCst);
    };
    tokio::join!(w.run_until(&stop), killer);
    let (report, _) = env.verify(&w.ledger).await;
    assert_running(&mut producer, &env);
    let log = env.log_text();
    eprintln!(
        "mariadb kill: {} failed sessions, aborted/uncertain commits {}/{}",
        log.matches("session failed").count(),
        w.aborted,
        w.uncertain
    );
    eprintln!(
        "{}",
        report.summary("mariadb_kill9_and_restart_mid_stream", n)
    );
    assert!(!log.contains("panicked"), "producer panicked");
    report.assert_ok("MariaDB kill -9");
}

/// `FLUSH BINARY LOGS` several times mid-stream, and half of the times the producer is killed
/// right after (its checkpoint may then sit on a rotation boundary): no loss, no duplicate, and
/// the records really span the rotated files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_rotation_mid_stream() {
    let n = iterations(6, 30);
    let seed = seed();
    eprintln!("rotation: seed {seed} (RTIS_SEED={seed} replays), {n} rotations");
    let env = Env::new("rotate").await;
    let mut producer = env.spawn(&[]);
    env.wait_streaming(1).await;
    let mut w = Workload::new(env.db.root_url(&env.shop), seed).await;
    let stop = AtomicBool::new(false);
    let mut kills = 0;
    let rotator = async {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x707);
        let mut c = env.db.conn(&env.shop).await;
        for i in 0..n {
            sleep_ms(rng.random_range(300..900)).await;
            c.query_drop("FLUSH BINARY LOGS").await.unwrap();
            if i % 2 == 1 {
                sleep_ms(rng.random_range(0..200)).await;
                producer.kill9();
                producer = env.spawn(&[]);
                kills += 1;
            }
        }
        sleep_ms(1500).await;
        stop.store(true, Ordering::SeqCst);
        producer
    };
    let ((), mut producer) = tokio::join!(w.run_until(&stop), rotator);
    let (report, lines) = env.verify(&w.ledger).await;
    assert_running(&mut producer, &env);
    let files: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l["source"]["file"].as_str())
        .collect();
    eprintln!(
        "rotation: records from {} binlog files, {kills} producer kills",
        files.len()
    );
    eprintln!("{}", report.summary("binlog_rotation_mid_stream", n));
    report.assert_ok("binlog rotation");
    assert!(
        files.len() > n / 2,
        "the records span the rotated files: {files:?}"
    );
}

/// kill -9 the producer binary while it sends the records of one 10k-row transaction (insert,
/// update or delete of 10k rows), several times per transaction, and restart it: each row's
/// change arrives exactly once. CI: 4 kills, 2 per transaction; `RTIS_LONG=1`: 50 kills, up to 5
/// per transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_inside_a_10k_row_transaction() {
    const ROWS: u64 = 10_000;
    // kills in all; transactions follow until that many landed (a kill is skipped when the
    // records of its transaction are already all in the topic)
    let want_kills = iterations(4, 50);
    let kills_per_txn = if long_mode() { 5 } else { 2 };
    let seed = seed();
    eprintln!(
        "big transaction: seed {seed} (RTIS_SEED={seed} replays), {want_kills} kills, up to {kills_per_txn} per transaction"
    );
    let env = Env::new("bigtxn").await;
    // Kafka transactions of at most 500 records: a 10k-row source transaction is committed
    // in parts, and kills land between them (resuming inside the source transaction)
    let args = ["--max-transaction-records", "500"];
    let mut producer = env.spawn(&args);
    env.wait_streaming(1).await;
    let progress = Progress::new(&env.broker.bootstrap(), &env.topic);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ledger = Ledger::new(seed);
    let mut c = env.db.conn(&env.shop).await;
    let (mut kills, mut inside) = (0usize, 0usize);
    let mut t = 0;
    // a kill can come too late (the producer already sent the whole transaction): go on
    // until half of the wanted kills landed inside one
    while kills < want_kills || inside * 2 < want_kills {
        // blocks of ROWS ids: insert a block, update it, delete it, insert the next...
        let block = (t / 3) as u64;
        let (lo, hi) = (block * ROWS + 1, (block + 1) * ROWS);
        let base = progress.total().await;
        let (sql, records) = match t % 3 {
            0 => (
                format!(
                    "INSERT INTO product (id, name, price) SELECT seq, CONCAT('big', seq, '-t{t}'), 1.00 \
                     FROM seq_{lo}_to_{hi}"
                ),
                ROWS,
            ),
            1 => (
                format!(
                    "UPDATE product SET name = CONCAT('big', id, '-t{t}'), price = 2.00 WHERE id BETWEEN {lo} AND {hi}"
                ),
                ROWS,
            ),
            _ => (
                format!("DELETE FROM product WHERE id BETWEEN {lo} AND {hi}"),
                2 * ROWS,
            ),
        };
        c.query_drop(sql).await.unwrap();
        ledger.commit((lo..=hi).map(|id| {
            let image = json!({"id": id.to_string(), "name": format!("big{id}-t{t}")});
            let e = match t % 3 {
                0 => Expected::Create(image),
                1 => Expected::Update(image),
                _ => Expected::Delete,
            };
            (id.to_string(), e)
        }));
        let target = base + records as i64;
        // kill at increasing random points inside this transaction's records, each time after
        // the (restarted) producer sent at least one more of them: it is sending, not starting
        for k in 0..kills_per_txn.min(want_kills.saturating_sub(kills).max(1)) {
            let now = progress.total().await;
            let step = (target - now) / (kills_per_txn - k) as i64;
            if step < 2 {
                break;
            }
            let at = now + rng.random_range(1..step);
            let reached = eventually(Duration::from_secs(60), "records flowing", || async {
                let s = progress.total().await;
                (s >= at).then_some(s)
            })
            .await;
            producer.kill9();
            kills += 1;
            let after = progress.total().await;
            if after < target {
                inside += 1;
            }
            eprintln!(
                "big transaction {t}: kill {k} at {} of {records} records",
                reached.min(target) - base
            );
            if rng.random_bool(0.5) {
                sleep_ms(rng.random_range(0..300)).await;
            }
            producer = env.spawn(&args);
        }
        t += 1;
        assert!(
            t < 8 * want_kills + 8,
            "{t} transactions but only {kills} kills landed"
        );
    }
    let (report, _) = env.verify(&ledger).await;
    assert_running(&mut producer, &env);
    let log = env.log_text();
    let skipped = log
        .matches("skipping records the topic already holds")
        .count();
    eprintln!(
        "big transaction: {kills} kills, {inside} inside a transaction's records, {skipped} restarts skipped records already sent"
    );
    eprintln!(
        "{}",
        report.summary("kill9_inside_a_10k_row_transaction", kills)
    );
    assert!(!log.contains("panicked"), "producer panicked");
    report.assert_ok("kill -9 inside a 10k-row transaction");
    assert!(
        inside * 2 >= want_kills,
        "half the kills land inside a transaction's records ({inside} of {kills})"
    );
    // each restart after such a kill re-read the transaction and skipped what was sent
    assert!(
        skipped >= inside,
        "{skipped} restarts skipped records, {inside} kills inside a transaction"
    );
}

/// A row larger than the client's message limit (`message.max.bytes=20000`) stops the producer
/// with an error naming the table, the binlog position, the size and the setting; nothing
/// after it is sent, the checkpoint stays before it, and a restart with a larger limit delivers
/// it and the rest exactly once. (The client's limit is the one exercised; the broker's is
/// 1 MB by default.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_row_stops_with_an_explicit_error() {
    let env = Env::new("oversize").await;
    env.db
        .exec(
            &env.shop,
            "ALTER TABLE product MODIFY name MEDIUMTEXT NOT NULL",
        )
        .await;
    let mut producer = env.spawn(&["--kafka-option", "message.max.bytes=20000"]);
    env.wait_streaming(1).await;
    let mut ledger = Ledger::new(0);
    let mut c = env.db.conn(&env.shop).await;
    for id in 1..=3u64 {
        c.exec_drop(
            "INSERT INTO product (id, name, price) VALUES (?, ?, 1.00)",
            (id, format!("small{id}")),
        )
        .await
        .unwrap();
        ledger.commit([(
            id.to_string(),
            Expected::Create(json!({"name": format!("small{id}")})),
        )]);
    }
    let before_big = env.master_pos().await;
    let big = "x".repeat(30_000);
    c.exec_drop(
        "INSERT INTO product (id, name, price) VALUES (4, ?, 1.00)",
        (big.clone(),),
    )
    .await
    .unwrap();
    ledger.commit([("4".to_string(), Expected::Create(json!({"name": big})))]);
    c.exec_drop(
        "INSERT INTO product (id, name, price) VALUES (5, 'after', 1.00)",
        (),
    )
    .await
    .unwrap();
    ledger.commit([("5".to_string(), Expected::Create(json!({"name": "after"})))]);

    let code = wait_exit(&mut producer, &env, Duration::from_secs(60)).await;
    let log = env.log_text();
    let err = log
        .lines()
        .find(|l| l.starts_with("rtis-producer: error:"))
        .unwrap_or_else(|| panic!("no error line; log:\n{log}"));
    eprintln!("oversize: exit code {code:?}: {err}");
    assert_eq!(code, Some(2), "a definite error");
    for part in [
        &format!("`{}`.`product`", env.shop),
        "message.max.bytes=20000",
        &format!("{}:", before_big.file),
        "bytes",
        "stops instead of dropping",
    ] {
        assert!(err.contains(part), "the error names {part:?}: {err}");
    }
    let size: usize = err
        .split(" is ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a size in {err}"));
    assert!(size > 30_000, "the size is the record's: {size}");
    let cp = env.checkpoint().expect("a checkpoint");
    assert!(
        cp <= before_big,
        "the checkpoint {cp} stays before the oversize row at {before_big}"
    );
    // nothing from the oversize row on reached the topic: at most the three rows before it
    // (those still in the open transaction when it failed were aborted, and come again below)
    let held: i64 = record_count(&env.broker.bootstrap(), &env.topic).await;
    assert!(
        held <= 3,
        "only rows before the oversize one were committed: {held}"
    );

    // a larger limit: the oversize row and the one after it arrive, exactly once
    let mut producer = env.spawn(&["--kafka-option", "message.max.bytes=100000"]);
    let (report, _) = env.verify(&ledger).await;
    assert_running(&mut producer, &env);
    eprintln!(
        "{}",
        report.summary("oversize_row_stops_with_an_explicit_error", 1)
    );
    report.assert_ok("oversize row");
}

/// Runs one autocommitted statement and records its changes once it returned OK.
async fn apply(
    c: &mut mysql_async::Conn,
    ledger: &mut Ledger,
    sql: &str,
    changes: Vec<(u64, Expected)>,
) {
    c.query_drop(sql).await.unwrap();
    ledger.commit(changes.into_iter().map(|(k, e)| (k.to_string(), e)));
}

/// A column type change while streaming (DECIMAL(10,2) → DECIMAL(12,4)) and a column added
/// while the producer is stopped: every record decodes with its own writer schema through the
/// consumer (none dead-lettered), values keep their exact scale, and the fold equals the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_type_change_and_column_added_while_stopped() {
    let env = Env::new("ddltype").await;
    let mut producer = env.spawn(&[]);
    env.wait_streaming(1).await;
    let mut ledger = Ledger::new(0);
    let mut c = env.db.conn(&env.shop).await;
    apply(
        &mut c,
        &mut ledger,
        "INSERT INTO product (id, name, price) VALUES (1, 'a', 1.25), (2, 'b', 2.50)",
        vec![
            (1, Expected::Create(json!({"price": "1.25"}))),
            (2, Expected::Create(json!({"price": "2.50"}))),
        ],
    )
    .await;
    c.query_drop("ALTER TABLE product MODIFY price DECIMAL(12,4) NOT NULL")
        .await
        .unwrap();
    apply(
        &mut c,
        &mut ledger,
        "INSERT INTO product (id, name, price) VALUES (3, 'c', 3.1234)",
        vec![(3, Expected::Create(json!({"price": "3.1234"})))],
    )
    .await;
    apply(
        &mut c,
        &mut ledger,
        "UPDATE product SET price = 9.8765 WHERE id = 1",
        vec![(1, Expected::Update(json!({"price": "9.8765"})))],
    )
    .await;
    // the records so far arrive while the producer runs; then stop it gracefully
    stop_after(&mut producer, &env, 4, Duration::from_secs(30)).await;
    // while stopped: a row in the old shape, a new column, rows in the new shape
    apply(
        &mut c,
        &mut ledger,
        "INSERT INTO product (id, name, price) VALUES (4, 'd', 4.0001)",
        vec![(4, Expected::Create(json!({"price": "4.0001"})))],
    )
    .await;
    c.query_drop("ALTER TABLE product ADD COLUMN stock INT NULL")
        .await
        .unwrap();
    apply(
        &mut c,
        &mut ledger,
        "INSERT INTO product (id, name, price, stock) VALUES (5, 'e', 5.5, 7)",
        vec![(5, Expected::Create(json!({"price": "5.5000", "stock": 7})))],
    )
    .await;
    apply(
        &mut c,
        &mut ledger,
        "UPDATE product SET stock = 8 WHERE id = 2",
        vec![(2, Expected::Update(json!({"price": "2.5000", "stock": 8})))],
    )
    .await;
    let mut producer = env.spawn(&[]);
    let n = settle(
        &env.broker.bootstrap(),
        &env.topic,
        ledger.expected_records() as i64,
        Duration::from_secs(20),
        Duration::from_secs(60),
    )
    .await;
    let lines = drain_topic(
        &env.broker.bootstrap(),
        &env.topic,
        n,
        Duration::from_secs(60),
    )
    .await;
    assert_running(&mut producer, &env);
    // the table now has `stock`: compare the fold with it too (a row last changed before the
    // column existed has no `stock` in its record: a reader schema defaults it to null)
    let mut table = table_state(&env.db, &env.shop).await;
    let stocks: Vec<(u64, Option<i32>)> = c.query("SELECT id, stock FROM product").await.unwrap();
    for (id, stock) in stocks {
        if let Some(s) = stock {
            table.get_mut(&id.to_string()).unwrap()["stock"] = json!(s);
        }
    }
    let report = verify(&ledger, &lines, &table);
    eprintln!(
        "{}",
        report.summary("column_type_change_and_column_added_while_stopped", 1)
    );
    report.assert_ok("column type change");
    let rec = |id: &str, op: &str| {
        lines
            .iter()
            .find(|l| l["key"]["id"] == id && l["op"] == op)
            .unwrap_or_else(|| panic!("no {op} record for {id}: {lines:#?}"))
    };
    // exact scale per writer schema: before the change 2 digits, after it 4
    assert_eq!(rec("1", "c")["after"]["price"], "1.25");
    assert_eq!(rec("3", "c")["after"]["price"], "3.1234");
    assert_eq!(rec("1", "u")["before"]["price"], "1.2500");
    assert_eq!(rec("4", "c")["after"]["price"], "4.0001");
    assert!(rec("4", "c")["after"].get("stock").is_none(), "old shape");
    assert_eq!(rec("5", "c")["after"]["stock"], 7);
    assert_eq!(rec("2", "u")["before"]["stock"], serde_json::Value::Null);
    assert!(
        lines.iter().all(|l| l.get("error").is_none()),
        "nothing dead-lettered"
    );
    let log = env.log_text();
    assert!(
        log.contains("column price changed type from DECIMAL(10,2) to DECIMAL(12,4)"),
        "the type change is logged: {}",
        env.log_tail(30)
    );
}

/// `ALTER TABLE product DROP PRIMARY KEY` while streaming: the next change of the table cannot
/// be keyed, so the producer stops with an error naming the table, the statement and the binlog
/// position; the checkpoint stays before that change, and a restart is refused by preflight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_primary_key_stops_the_producer() {
    let env = Env::new("droppk").await;
    let mut producer = env.spawn(&[]);
    env.wait_streaming(1).await;
    env.db
        .exec(
            &env.shop,
            "INSERT INTO product (id, name, price) VALUES (1, 'a', 1.00), (2, 'b', 2.00)",
        )
        .await;
    env.db
        .exec(&env.shop, "ALTER TABLE product DROP PRIMARY KEY")
        .await;
    let after_ddl = env.master_pos().await;
    env.db
        .exec(
            &env.shop,
            "INSERT INTO product (id, name, price) VALUES (3, 'c', 3.00)",
        )
        .await;
    let code = wait_exit(&mut producer, &env, Duration::from_secs(60)).await;
    let log = env.log_text();
    let err = log
        .lines()
        .find(|l| l.starts_with("rtis-producer: error:"))
        .unwrap_or_else(|| panic!("no error line; log:\n{log}"));
    eprintln!("drop primary key: exit code {code:?}: {err}");
    assert_eq!(code, Some(2));
    for part in [
        &format!("`{}`.`product`", env.shop),
        "no primary key",
        "ALTER TABLE product DROP PRIMARY KEY",
        &format!("binlog at {}:", after_ddl.file),
    ] {
        assert!(err.contains(part), "the error names {part:?}: {err}");
    }
    let cp = env.checkpoint().expect("a checkpoint");
    assert!(
        cp <= after_ddl,
        "the checkpoint {cp} stays before the keyless change at {after_ddl}"
    );
    let held: i64 = record_count(&env.broker.bootstrap(), &env.topic).await;
    assert_eq!(held, 2, "the two keyed rows were sent, the keyless one not");
    // the two keyed rows, checked by the verifier; row 3 is refused by design, never sent
    let mut ledger = Ledger::new(0);
    ledger.commit([
        (
            "1".to_string(),
            Expected::Create(json!({"name": "a", "price": "1.00"})),
        ),
        (
            "2".to_string(),
            Expected::Create(json!({"name": "b", "price": "2.00"})),
        ),
    ]);
    let lines = drain_topic(
        &env.broker.bootstrap(),
        &env.topic,
        held,
        Duration::from_secs(60),
    )
    .await;
    let mut table = table_state(&env.db, &env.shop).await;
    assert!(table.remove("3").is_some(), "row 3 is in the table");
    let report = verify(&ledger, &lines, &table);
    // a restart does not silently continue either
    let mut again = env.spawn(&[]);
    assert_eq!(
        wait_exit(&mut again, &env, Duration::from_secs(60)).await,
        Some(2)
    );
    let log = env.log_text();
    let second = log
        .lines()
        .filter(|l| l.starts_with("rtis-producer: error:"))
        .nth(1)
        .expect("a second error line");
    assert!(second.contains("expected a PRIMARY KEY"), "{second}");
    eprintln!(
        "{} (stopped with exit 2 at the keyless change)",
        report.summary("dropping_the_primary_key_stops_the_producer", 1)
    );
    report.assert_ok("dropped primary key");
}

/// Fault 6: the checkpoint file truncated to nothing, then corrupted, while the producer is
/// down and the source goes on changing. Each start refuses with the file named and exit 2,
/// sends nothing and leaves the file as it was (it never silently starts from the end of the
/// binlog, not even with `--snapshot never`); once the file is restored, the producer resumes
/// and every change made while it was down arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_corrupted_checkpoint_is_refused() {
    let env = Env::new("badstate").await;
    let mut producer = env.spawn(&[]);
    env.wait_streaming(1).await;
    let mut ledger = Ledger::new(0);
    let insert = |ledger: &mut Ledger, ids: std::ops::RangeInclusive<u32>| {
        let sql = ids
            .clone()
            .map(|i| format!("({i}, 'p{i}', {i}.00)"))
            .collect::<Vec<_>>()
            .join(", ");
        ledger.commit(ids.map(|i| {
            (
                i.to_string(),
                Expected::Create(json!({"name": format!("p{i}"), "price": format!("{i}.00")})),
            )
        }));
        format!("INSERT INTO product (id, name, price) VALUES {sql}")
    };
    let sql = insert(&mut ledger, 1..=3);
    env.db.exec(&env.shop, &sql).await;
    stop_after(&mut producer, &env, 3, Duration::from_secs(60)).await;
    let wal = env.state.with_extension("sqlite-wal");
    assert!(
        !wal.exists(),
        "a graceful stop leaves one self-contained file"
    );
    let good = std::fs::read(&env.state).unwrap();
    // the source changes while the producer is down
    let sql = insert(&mut ledger, 4..=5);
    env.db.exec(&env.shop, &sql).await;

    let held = || async { record_count(&env.broker.bootstrap(), &env.topic).await };
    let corrupted = {
        // page 2 (the checkpoint table) overwritten; the header and schema page intact
        let mut bytes = good.clone();
        assert!(bytes.len() >= 8192, "two pages: {}", bytes.len());
        bytes[4096..8192].fill(0xA5);
        bytes
    };
    for (what, bytes, expect) in [
        ("truncated", Vec::new(), "holds no rtis checkpoint (0 bytes"),
        (
            "corrupted",
            corrupted,
            "refusing to start from an unknown position",
        ),
    ] {
        std::fs::write(&env.state, &bytes).unwrap();
        let errors_before = env.log_text().matches("rtis-producer: error:").count();
        let mut p = env.spawn(&["--snapshot", "never"]);
        let code = wait_exit(&mut p, &env, Duration::from_secs(60)).await;
        let log = env.log_text();
        let err = log
            .lines()
            .filter(|l| l.starts_with("rtis-producer: error:"))
            .nth(errors_before)
            .unwrap_or_else(|| panic!("{what}: no error line; log:\n{log}"));
        eprintln!("{what} checkpoint: exit {code:?}: {err}");
        assert_eq!(code, Some(2), "{what}: {err}");
        assert!(
            err.contains(&env.state.display().to_string()) && err.contains(expect),
            "{what}: the error names the file and says {expect:?}: {err}"
        );
        assert_eq!(held().await, 3, "{what}: nothing was sent");
        assert_eq!(
            std::fs::read(&env.state).unwrap(),
            bytes,
            "{what}: the file is left as it was"
        );
    }

    // restored from the backup: the changes made while it was down arrive, once
    std::fs::write(&env.state, &good).unwrap();
    let mut producer = env.spawn(&["--snapshot", "never"]);
    let (report, _) = env.verify(&ledger).await;
    assert_running(&mut producer, &env);
    eprintln!(
        "{}",
        report.summary("a_truncated_or_corrupted_checkpoint_is_refused", 2)
    );
    report.assert_ok("checkpoint truncated / corrupted");
}

/// The verifier itself: each kind of fault it must report, on synthetic consumer lines.
#[test]
fn the_verifier_catches_loss_duplicates_disorder_and_wrong_state() {
    let line = |offset: i64, key: &str, op: &str, pos: u64, name: &str| {
        if op == "tombstone" {
            json!({"partition": 0, "offset": offset, "key": {"id": key}, "op": "tombstone"})
        } else {
            json!({"partition": 0, "offset": offset, "key": {"id": key}, "op": op,
                   "after": if op == "d" { serde_json::Value::Null } else { json!({"id": key, "name": name}) },
                   "source": {"file": "mariadb-bin.000001", "pos": pos, "row": 0}})
        }
    };
    let mut ledger = Ledger::new(7);
    ledger.commit([("1".to_string(), Expected::Create(json!({"name": "a"})))]);
    ledger.commit([("1".to_string(), Expected::Update(json!({"name": "b"})))]);
    ledger.commit([("2".to_string(), Expected::Create(json!({"name": "x"})))]);
    ledger.commit([("2".to_string(), Expected::Delete)]);
    let table = |rows: &[(&str, &str)]| {
        rows.iter()
            .map(|(k, n)| (k.to_string(), json!({"id": k, "name": n})))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let good = vec![
        line(0, "1", "c", 100, "a"),
        line(1, "2", "c", 200, "x"),
        line(2, "1", "u", 300, "b"),
        line(3, "2", "d", 400, ""),
        line(4, "2", "tombstone", 0, ""),
    ];
    let ok = verify(&ledger, &good, &table(&[("1", "b")]));
    assert!(ok.ok(), "{ok:?}");
    assert_eq!((ok.expected, ok.seen, ok.lost, ok.duplicated), (5, 5, 0, 0));

    // lost: the update of key 1 never arrived (and the fold then disagrees with the table)
    let mut lost = good.clone();
    lost.remove(2);
    let r = verify(&ledger, &lost, &table(&[("1", "b")]));
    assert_eq!(r.lost, 1, "{r:?}");
    assert!(!r.state.is_empty() && !r.ok());

    // duplicated: the create of key 2 twice (same source position)
    let mut dup = good.clone();
    dup.insert(2, line(2, "2", "c", 200, "x"));
    let r = verify(&ledger, &dup, &table(&[("1", "b")]));
    assert_eq!(r.duplicated, 1, "{r:?}");
    assert!(!r.ok());

    // disorder: key 1's update before its create
    let mut disorder = good.clone();
    disorder.swap(0, 2);
    let r = verify(&ledger, &disorder, &table(&[("1", "b")]));
    assert!(!r.order.is_empty() && !r.ok(), "{r:?}");

    // wrong value, and a final state that differs from the table
    let mut wrong = good.clone();
    wrong[2] = line(2, "1", "u", 300, "c");
    let r = verify(&ledger, &wrong, &table(&[("1", "b")]));
    assert!(!r.mismatched.is_empty() && !r.state.is_empty(), "{r:?}");
    let r = verify(&ledger, &good, &table(&[("1", "b"), ("3", "z")]));
    assert_eq!(r.state.len(), 1, "{r:?}");
}
