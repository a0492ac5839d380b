//! The consumer: exactly once in the files across kill -9 and rebalances, poison records to
//! the dead-letter file, torn lines repaired. Real broker, real producer output.
mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use mysql_async::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The group session timeout of the consumers these tests start (the broker's minimum is 6 s).
const SESSION_MS: u64 = 6000;

fn consumer_command(broker: &Broker, topic: &str, group: &str, out: &Path, log: &Path) -> Command {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtis-consumer"));
    cmd.env("RTIS_BROKERS", broker.bootstrap())
        .env("RTIS_TOPIC", topic)
        .env("RTIS_GROUP", group)
        .env("RTIS_OUT_DIR", out)
        .env(
            "RTIS_KAFKA_OPTIONS",
            format!("session.timeout.ms={SESSION_MS};heartbeat.interval.ms=500"),
        )
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf);
    cmd
}

fn spawn_consumer(broker: &Broker, topic: &str, group: &str, out: &Path, log: &Path) -> Guard {
    Guard(
        consumer_command(broker, topic, group, out, log)
            .spawn()
            .unwrap(),
    )
}

/// Checks the output dir against the topic: every committed record of every partition exactly
/// once, in offset order, whole lines only.
async fn assert_exactly_once(broker: &Broker, topic: &str, out: &Path) -> Vec<serde_json::Value> {
    let committed = committed_offsets(&broker.bootstrap(), topic).await;
    for e in std::fs::read_dir(out).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "torn last line in {}",
            e.path().display()
        );
    }
    let lines = read_lines(out);
    let mut per_partition: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for l in &lines {
        per_partition
            .entry(l["partition"].as_i64().unwrap())
            .or_default()
            .push(l["offset"].as_i64().unwrap());
    }
    for (p, want) in committed.iter().enumerate() {
        let offsets = per_partition.remove(&(p as i64)).unwrap_or_default();
        assert_eq!(
            &offsets, want,
            "partition {p}: every committed record exactly once, in order"
        );
    }
    assert!(per_partition.is_empty(), "lines of unknown partitions");
    lines
}

async fn write_workload(db: &MariaDb, shop: &str, seed: u64, stop: &AtomicBool) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = db.conn(shop).await;
    let mut next_id = 1u64;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        if next_id < 20 || rng.random_bool(0.5) {
            c.exec_drop(
                "INSERT INTO product (id, name, price) VALUES (?, 'x', 1.00)",
                (next_id,),
            )
            .await
            .unwrap();
            next_id += 1;
        } else {
            let id = rng.random_range(1..next_id);
            c.exec_drop("UPDATE product SET price = price + 1 WHERE id = ?", (id,))
                .await
                .unwrap();
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..5))).await;
    }
    n
}

/// Waits until the producer sent what the workload wrote and the consumer files hold all of it;
/// returns the number of records in the topic.
async fn caught_up(e: &Env, out: &Path, writes: usize) -> i64 {
    let total = records_at_least(
        &e.broker.bootstrap(),
        &e.topic,
        writes as i64,
        Duration::from_secs(60),
    )
    .await;
    eventually(
        Duration::from_secs(90),
        "consumer files caught up",
        || async { (read_lines(out).len() as i64 >= total).then_some(()) },
    )
    .await;
    total
}

struct Env {
    db: MariaDb,
    broker: &'static Broker,
    shop: String,
    topic: String,
    _state: tempfile::TempDir,
    producer: InProcess,
}

async fn env() -> Env {
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    let topic = unique("cons");
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("rtis.sqlite");
    let producer =
        InProcess::start_streaming(producer_config(&db, &shop, broker, &topic, &path)).await;
    Env {
        db,
        broker,
        shop,
        topic,
        _state: state,
        producer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_consumer_repeatedly_writes_every_record_exactly_once() {
    let (iterations, seed) = crash_params();
    eprintln!("consumer kill test: seed {seed}, {iterations} kills");
    let e = env().await;
    let out = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("consumer-kill.log");
    let group = unique("g");
    let mut child = spawn_consumer(e.broker, &e.topic, &group, out.path(), &log);
    let stop = AtomicBool::new(false);
    let killer = async {
        let mut rng = StdRng::seed_from_u64(seed);
        for i in 0..iterations {
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..2500))).await;
            child.kill9();
            // the same group: the dead member's partitions move to the next incarnation once
            // its session expires; progress comes from the files either way
            let _ = i;
            child = spawn_consumer(e.broker, &e.topic, &group, out.path(), &log);
        }
        stop.store(true, Ordering::SeqCst);
    };
    let (writes, ()) = tokio::join!(write_workload(&e.db, &e.shop, seed, &stop), killer);
    // let the last consumer catch up with everything the producer sent
    let total = caught_up(&e, out.path(), writes).await;
    child.kill9();
    let lines = assert_exactly_once(e.broker, &e.topic, out.path()).await;
    assert_eq!(lines.len() as i64, total);
    assert_eq!(fold(&lines), table_state(&e.db, &e.shop).await);
    eprintln!(
        "fault summary: consumer kill -9: iterations={iterations} records={total} written={} \
         lost=0 duplicated=0 (every committed offset once, in order) seed={seed}",
        lines.len()
    );
    e.producer.stop().await.unwrap();
}

/// The partitions a consumer holds according to its log (assigned minus revoked, in order).
fn held(log_text: &str) -> std::collections::BTreeSet<i64> {
    let partition = |l: &str| -> Option<i64> {
        l.split("partition=")
            .nth(1)?
            .split(' ')
            .next()?
            .parse()
            .ok()
    };
    let mut held = std::collections::BTreeSet::new();
    for l in log_text.lines() {
        if l.contains("assigned; resuming from the file") {
            held.extend(partition(l));
        } else if l.contains("revoked") {
            if let Some(p) = partition(l) {
                held.remove(&p);
            }
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_share_partitions_and_the_survivor_takes_over_after_kill9() {
    let e = env().await;
    let out = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (logs.path().join("a.log"), logs.path().join("b.log"));
    let read = |log: &Path| std::fs::read_to_string(log).unwrap_or_default();
    let group = unique("pair");
    let mut a = spawn_consumer(e.broker, &e.topic, &group, out.path(), &log_a);
    let mut b = spawn_consumer(e.broker, &e.topic, &group, out.path(), &log_b);
    let stop = AtomicBool::new(false);
    let killer = async {
        // both members hold partitions before one of them dies
        eventually(Duration::from_secs(60), "both members assigned", || async {
            (!held(&read(&log_a)).is_empty() && !held(&read(&log_b)).is_empty()).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let b_held = held(&read(&log_b));
        let a_mark = read(&log_a).len();
        b.kill9(); // SIGKILL one member while records flow; nobody replaces it
        let killed = std::time::Instant::now();
        // the survivor alone takes over b's partitions, once b's session expired
        eventually(
            Duration::from_secs(60),
            "the survivor assigned the dead member's partitions",
            || async {
                let after_kill = read(&log_a)[a_mark..].to_string();
                let now_held = held(&after_kill);
                (!b_held.is_empty() && b_held.is_subset(&now_held)).then_some(())
            },
        )
        .await;
        let took = killed.elapsed();
        eprintln!("survivor took over {b_held:?} {took:?} after the kill (session timeout {SESSION_MS} ms)");
        assert!(
            took < Duration::from_millis(SESSION_MS) * 3,
            "takeover within the session timeout plus one rebalance: {took:?}"
        );
        // and keeps writing them while records flow
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::SeqCst);
        (b_held, a_mark)
    };
    let (writes, (b_held, a_mark)) = tokio::join!(write_workload(&e.db, &e.shop, 7, &stop), killer);
    caught_up(&e, out.path(), writes).await;
    a.kill9();
    let lines = assert_exactly_once(e.broker, &e.topic, out.path()).await;
    assert_eq!(fold(&lines), table_state(&e.db, &e.shop).await);
    let after_kill = read(&log_a)[a_mark..].to_string();
    // the survivor resumed the dead member's partitions from the files the dead member wrote
    assert!(
        b_held
            .iter()
            .any(|p| after_kill.contains(&format!("partition={p} offset=Offset("))),
        "the survivor resumed a dead member's partition from its file:\n{after_kill}"
    );
    e.producer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letter_file_and_torn_lines_are_repaired() {
    let e = env().await;
    e.db.exec(
        &e.shop,
        "INSERT INTO product (id, name, price) VALUES (1, 'before', 1.00)",
    )
    .await;
    let first = drain_topic(&e.broker.bootstrap(), &e.topic, 1, Duration::from_secs(60)).await;
    let p = first[0]["partition"].as_i64().unwrap() as i32;
    // a poison record in the same partition, then more real changes
    let producer = rtis::kafka::create_plain_producer(&e.broker.bootstrap(), &[]).unwrap();
    let poison_offset = producer
        .send(
            rdkafka::producer::FutureRecord::to(&e.topic)
                .partition(p)
                .key("not avro")
                .payload(&[0xC3u8, 0x01, 1, 2, 3][..]),
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .offset;
    e.db.exec(&e.shop, "UPDATE product SET name = 'after' WHERE id = 1")
        .await;
    let out = tempfile::tempdir().unwrap();
    // a torn last line left by a crash is cut before resuming
    let data = out.path().join(format!("{}-{p}.jsonl", e.topic));
    std::fs::write(
        &data,
        format!(
            "{}\n{{\"partition\":{p},\"offs",
            serde_json::to_string(&first[0]).unwrap()
        ),
    )
    .unwrap();
    let cfg = consumer_config(
        &e.broker.bootstrap(),
        &e.topic,
        &unique("poison"),
        out.path(),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(rtis::consumer::run(cfg, async move {
        let _ = rx.await;
    }));
    eventually(
        Duration::from_secs(60),
        "update after the poison record",
        || async {
            std::fs::read_to_string(&data)
                .unwrap_or_default()
                .contains("\"name\":\"after\"")
                .then_some(())
        },
    )
    .await;
    tx.send(()).unwrap();
    handle.await.unwrap().unwrap();
    let lines = assert_exactly_once(e.broker, &e.topic, out.path()).await;
    let dead: Vec<_> = lines.iter().filter(|l| l.get("error").is_some()).collect();
    assert_eq!(dead.len(), 1, "{lines:#?}");
    assert_eq!(dead[0]["offset"], poison_offset);
    assert_eq!(dead[0]["value_base64"], "wwEBAgM=");
    assert!(
        dead[0]["error"].as_str().unwrap().contains("key"),
        "{}",
        dead[0]
    );
    let dead_file =
        std::fs::read_to_string(out.path().join(format!("{}-{p}.dead.jsonl", e.topic))).unwrap();
    assert_eq!(dead_file.lines().count(), 1);
    e.producer.stop().await.unwrap();
}

/// A write that fails (the file size limit here, as a full disk would) stops the consumer with
/// exit 2 and an error naming the file, and leaves no part of a record in it; a restart then
/// writes everything exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_stops_the_consumer_and_leaves_only_whole_lines() {
    let e = env().await;
    let mut c = e.db.conn(&e.shop).await;
    for chunk in 0..10 {
        let rows: Vec<String> = (1..=30)
            .map(|i| {
                format!(
                    "({}, 'a fairly long product name', 'c', 9.99)",
                    chunk * 30 + i
                )
            })
            .collect();
        c.query_drop(format!(
            "INSERT INTO product (id, name, category, price) VALUES {}",
            rows.join(", ")
        ))
        .await
        .unwrap();
    }
    let total = records_at_least(
        &e.broker.bootstrap(),
        &e.topic,
        300,
        Duration::from_secs(60),
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("consumer.log");
    let group = unique("full");
    let mut cmd = consumer_command(e.broker, &e.topic, &group, out.path(), &log);
    // SAFETY: only async-signal-safe calls between fork and exec
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 20_000,
                rlim_max: 20_000,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            // EFBIG instead of being killed, like ENOSPC on a full disk
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = Guard(cmd.spawn().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the consumer did not stop within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap();
    let err = text
        .lines()
        .find(|l| l.starts_with("rtis-consumer: error:"))
        .unwrap_or_else(|| panic!("no error line:\n{text}"));
    eprintln!("failed write: exit {code:?}: {err}");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("writing") && err.contains(&e.topic) && err.contains(".jsonl"),
        "the error names the file: {err}"
    );
    let mut kept = 0;
    for f in std::fs::read_dir(out.path()).unwrap().flatten() {
        let body = std::fs::read_to_string(f.path()).unwrap();
        assert!(
            body.is_empty() || body.ends_with('\n'),
            "{}: no half-written line",
            f.path().display()
        );
        assert!(body.len() <= 20_000);
        kept += body.lines().count();
    }
    assert!(
        kept < total as usize,
        "the limit stopped it part way: {kept} of {total}"
    );
    // room again: the restart continues from the files, exactly once
    let mut again = spawn_consumer(e.broker, &e.topic, &group, out.path(), &log);
    eventually(
        Duration::from_secs(90),
        "consumer files caught up",
        || async { (read_lines(out.path()).len() as i64 >= total).then_some(()) },
    )
    .await;
    again.kill9();
    let lines = assert_exactly_once(e.broker, &e.topic, out.path()).await;
    assert_eq!(fold(&lines), table_state(&e.db, &e.shop).await);
    e.producer.stop().await.unwrap();
}
