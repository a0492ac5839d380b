//! `--standby` on a three-node Apache Kafka cluster: two producers of one connector, the
//! active one killed -9 again and again (4 times; 50 with `RTIS_LONG=1`) while a workload
//! writes. Each time the standby takes over (the time is measured and printed), the killed one
//! comes back as the standby, and the ledger verifier finds nothing lost, nothing duplicated,
//! every key in order. A graceful stop (SIGTERM) of the active one hands over at once. The
//! `rtis_active` gauge shows which one writes.
mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::env::*;
use common::ledger::Workload;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ACTIVE: &str = "active: this producer now writes";
const STREAMING: &str = "streaming binlog";

fn count(log: &PathBuf, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

fn tail(log: &PathBuf, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until `log` holds more than `before` lines with `needle`; returns how long it took.
async fn wait_more(log: &PathBuf, needle: &str, before: usize, what: &str) -> Duration {
    let t0 = Instant::now();
    while count(log, needle) <= before {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "{what}: no new {needle:?} within 90 s; log tail:\n{}",
            tail(log, 40)
        );
        sleep_ms(50).await;
    }
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_from_a_killed_active_producer_exactly_once() {
    let kills = iterations(4, 50);
    let seed = seed();
    eprintln!(
        "standby: seed {seed} (replay with RTIS_SEED={seed}), {kills} kills of the active producer"
    );
    let env = Env::with_cluster("standby").await;
    let dir = tempfile::tempdir().unwrap();
    // two instances of one connector, each with its own state file and log
    let states = [env.state.clone(), dir.path().join("b.sqlite")];
    let logs = [env.log.clone(), dir.path().join("b.log")];
    let metrics = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let spawn = |i: usize| {
        spawn_producer(
            &env.db,
            &env.shop,
            &env.broker,
            &env.topic,
            &states[i],
            &logs[i],
            &["--standby", "--metrics-addr", &metrics[i]],
        )
    };
    let mut procs = [spawn(0), spawn(1)];
    // one of them is elected; the other stands by
    let first = loop {
        if let Some(i) = (0..2).find(|&i| count(&logs[i], STREAMING) > 0) {
            break i;
        }
        sleep_ms(100).await;
    };
    let other = 1 - first;
    wait_more(&logs[other], "standing by", 0, "the second instance").await;
    // the role shows in the metrics: 1 on the active one, 0 on the standby
    for (i, want) in [(first, 1.0), (other, 0.0)] {
        let addr = metrics[i].clone();
        eventually(Duration::from_secs(30), "rtis_active", || {
            let addr = addr.clone();
            async move { (metric(&addr, "rtis_active{table=\"product\"}") == Some(want)).then_some(()) }
        })
        .await;
    }

    let mut w = Workload::new(env.db.root_url(&env.shop), seed).await;
    let stop = AtomicBool::new(false);
    let mut takeovers = Vec::new();
    let driver = async {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x57a1d);
        let mut active = first;
        // times each instance had been elected when it last started standing by
        let mut standing_since = [0, 0];
        standing_since[other] = count(&logs[other], ACTIVE);
        for k in 0..kills {
            sleep_ms(rng.random_range(200..1500)).await;
            let standby = 1 - active;
            let (elected, streaming) = (
                count(&logs[standby], ACTIVE),
                count(&logs[standby], STREAMING),
            );
            assert_eq!(
                elected,
                standing_since[standby],
                "the standby took the role while the active one was alive:\n{}",
                tail(&logs[standby], 20)
            );
            procs[active].kill9();
            let t = wait_more(&logs[standby], STREAMING, streaming, "takeover").await;
            assert!(
                count(&logs[standby], ACTIVE) > elected,
                "elected before streaming"
            );
            takeovers.push(t);
            // the killed one comes back as the standby
            procs[active] = spawn(active);
            let standing = count(&logs[active], "standing by");
            wait_more(
                &logs[active],
                "standing by",
                standing,
                "the restarted instance",
            )
            .await;
            standing_since[active] = count(&logs[active], ACTIVE);
            active = standby;
            if k % 10 == 9 {
                eprintln!("standby: {} kills", k + 1);
            }
        }
        // a graceful stop hands over without waiting for the session timeout
        let standby = 1 - active;
        let streaming = count(&logs[standby], STREAMING);
        let t0 = Instant::now();
        assert_eq!(
            terminate(&mut procs[active], &env, Duration::from_secs(60)).await,
            Some(0)
        );
        wait_more(
            &logs[standby],
            STREAMING,
            streaming,
            "hand-over after SIGTERM",
        )
        .await;
        let graceful = t0.elapsed();
        sleep_ms(1000).await;
        stop.store(true, Ordering::SeqCst);
        (standby, graceful)
    };
    let ((), (last, graceful)) = tokio::join!(w.run_until(&stop), driver);
    let (report, _) = env.verify(&w.ledger).await;
    assert!(
        procs[last].try_wait().unwrap().is_none(),
        "the last active producer runs on"
    );
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(!text.contains("panicked"), "a producer panicked:\n{text}");
    }
    takeovers.sort();
    let ms = |d: &Duration| d.as_millis();
    eprintln!(
        "standby: {} takeovers after kill -9: median {} ms, max {} ms; after SIGTERM: {} ms",
        takeovers.len(),
        ms(&takeovers[takeovers.len() / 2]),
        ms(takeovers.last().unwrap()),
        ms(&graceful)
    );
    eprintln!(
        "{}",
        report.summary("standby (active producer kill -9)", kills)
    );
    report.assert_ok("standby");
}
