//! One test's private services (MariaDB, a broker: the shared one, one of its own or a
//! three-node cluster), database, topic, state file and producer log, and helpers to drive
//! the producer binary (spawn, wait for sessions, SIGTERM, exit codes).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use rtis::position::BinlogPosition;

use super::ledger::{verify, Ledger, Report};
use super::*;

/// The broker of a test: the process's shared one, or its own (to kill or pause).
pub enum TestBroker {
    Shared(&'static Broker),
    Own(Broker),
}

impl std::ops::Deref for TestBroker {
    type Target = Broker;
    fn deref(&self) -> &Broker {
        match self {
            TestBroker::Shared(b) => b,
            TestBroker::Own(b) => b,
        }
    }
}

impl std::ops::DerefMut for TestBroker {
    fn deref_mut(&mut self) -> &mut Broker {
        match self {
            TestBroker::Shared(_) => panic!("the shared broker is never killed or paused"),
            TestBroker::Own(b) => b,
        }
    }
}

/// One test's private services, database, topic, state file and producer log.
pub struct Env {
    pub db: MariaDb,
    pub broker: TestBroker,
    pub shop: String,
    pub topic: String,
    pub _dir: tempfile::TempDir,
    pub state: PathBuf,
    pub log: PathBuf,
}

impl Env {
    /// With the process's shared broker.
    pub async fn new(name: &str) -> Self {
        Self::with(name, TestBroker::Shared(Broker::shared())).await
    }

    /// With a broker of the test's own, which it kills or pauses.
    pub async fn with_own_broker(name: &str) -> Self {
        Self::with(name, TestBroker::Own(Broker::start())).await
    }

    /// With the process's shared three-node cluster (never killed or paused).
    pub async fn on_shared_cluster(name: &str) -> Self {
        let cluster = tokio::task::spawn_blocking(Broker::shared_cluster)
            .await
            .unwrap();
        Self::with(name, TestBroker::Shared(cluster)).await
    }

    /// With a three-node cluster of the test's own (RF 3, `min.insync.replicas=2`).
    pub async fn with_cluster(name: &str) -> Self {
        let cluster = tokio::task::spawn_blocking(Broker::cluster).await.unwrap();
        Self::with(name, TestBroker::Own(cluster)).await
    }

    pub async fn with(name: &str, broker: TestBroker) -> Self {
        let db = MariaDb::start();
        let shop = db.create_shop().await;
        let dir = tempfile::tempdir().unwrap();
        Self {
            state: dir.path().join("rtis.sqlite"),
            log: dir.path().join("producer.log"),
            topic: unique(name),
            _dir: dir,
            db,
            broker,
            shop,
        }
    }

    pub fn spawn(&self, args: &[&str]) -> Guard {
        spawn_producer(
            &self.db,
            &self.shop,
            &self.broker,
            &self.topic,
            &self.state,
            &self.log,
            args,
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until the producer log shows `count` binlog sessions streaming.
    pub async fn wait_streaming(&self, count: usize) {
        let what = format!("{count} streaming sessions in the producer log");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if self.log_text().matches("streaming binlog").count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log tail:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The source's current binlog end.
    pub async fn master_pos(&self) -> BinlogPosition {
        let mut c = self.db.conn(&self.shop).await;
        let row: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
        let file: String = row.get(0).unwrap();
        let pos: u64 = row.get(1).unwrap();
        c.disconnect().await.unwrap();
        BinlogPosition::new(file, pos)
    }

    /// The durable checkpoint (read with the producer stopped).
    pub fn checkpoint(&self) -> Option<BinlogPosition> {
        let c = rusqlite::Connection::open(&self.state).unwrap();
        c.query_row(
            "SELECT binlog_file, binlog_pos FROM checkpoint WHERE id = 1",
            [],
            |r| {
                Ok(BinlogPosition::new(
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? as u64,
                ))
            },
        )
        .ok()
    }

    /// Waits for the records (or for the topic to stop growing), reads them through the real
    /// consumer and checks them against the ledger and the table.
    pub async fn verify(&self, ledger: &Ledger) -> (Report, Vec<serde_json::Value>) {
        let expected = ledger.expected_records() as i64;
        let n = settle(
            &self.broker.bootstrap(),
            &self.topic,
            expected,
            Duration::from_secs(20),
            Duration::from_secs(150),
        )
        .await;
        let lines = if n > 0 {
            drain_topic(
                &self.broker.bootstrap(),
                &self.topic,
                n,
                Duration::from_secs(120),
            )
            .await
        } else {
            Vec::new()
        };
        let table = table_state(&self.db, &self.shop).await;
        let report = verify(ledger, &lines, &table);
        if !report.ok() {
            eprintln!("producer log tail:\n{}", self.log_tail(60));
        }
        (report, lines)
    }
}

/// Committed records in a topic, counted incrementally (one reader kept), so a kill can be
/// timed inside a burst of records.
pub struct Progress {
    counter: std::sync::Arc<std::sync::Mutex<TopicCounter>>,
}

impl Progress {
    pub fn new(bootstrap: &str, topic: &str) -> Self {
        Self {
            counter: std::sync::Arc::new(std::sync::Mutex::new(TopicCounter::new(
                bootstrap, topic,
            ))),
        }
    }

    pub async fn total(&self) -> i64 {
        let c = self.counter.clone();
        tokio::task::spawn_blocking(move || c.lock().unwrap().refresh(Duration::from_millis(500)))
            .await
            .unwrap()
    }
}

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

pub fn assert_running(p: &mut Guard, env: &Env) {
    let status = p.try_wait().unwrap();
    assert!(
        status.is_none(),
        "the producer exited ({status:?}); log tail:\n{}",
        env.log_tail(40)
    );
}

/// SIGTERM, then the exit code once the producer stopped (bounded wait).
pub async fn terminate(p: &mut Guard, env: &Env, timeout: Duration) -> Option<i32> {
    // SAFETY: signalling our own child
    unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
    wait_exit(p, env, timeout).await
}

/// Waits until the topic holds `records` records, then stops the producer gracefully (exit 0
/// within `timeout`).
pub async fn stop_after(p: &mut Guard, env: &Env, records: i64, timeout: Duration) {
    records_at_least(
        &env.broker.bootstrap(),
        &env.topic,
        records,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        terminate(p, env, timeout).await,
        Some(0),
        "a graceful stop; log tail:\n{}",
        env.log_tail(20)
    );
}

/// Waits (bounded) for the producer process to exit; returns its exit code.
pub async fn wait_exit(p: &mut Guard, env: &Env, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = p.try_wait().unwrap() {
            return s.code();
        }
        assert!(
            Instant::now() < deadline,
            "the producer did not exit within {timeout:?}; log tail:\n{}",
            env.log_tail(40)
        );
        sleep_ms(100).await;
    }
}
