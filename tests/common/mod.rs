//! Test harness: a private MariaDB per test and Apache Kafka ([`kafka`]: one shared node per
//! test process, a node or a three-node cluster of a test's own), on free loopback ports, with
//! temp dirs. Services are stopped by PID on drop — also when a test panics — and can be killed
//! with SIGKILL and restarted on the same port and data.
#![allow(dead_code)]

pub mod env;
pub mod kafka;
pub mod ledger;
pub mod registry;

#[allow(unused_imports)]
pub use kafka::{Broker, TopicCounter};

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A name unique in this test process (databases, topics, groups).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::SeqCst)
    )
}

/// Polls `f` until it returns `Some`, at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn wait_port(port: u16, timeout: Duration, what: &str, log: &Path) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not listen on {port} within {timeout:?}; log:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill9(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill(); // SIGKILL
        let _ = c.wait();
    }
}

fn find_exe(name: &str, candidates: &[&str]) -> PathBuf {
    for c in candidates {
        let p = PathBuf::from(c);
        if p.is_file() {
            return p;
        }
    }
    if let Ok(out) = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
    {
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !s.is_empty() {
            return PathBuf::from(s);
        }
    }
    panic!("{name} not found: run `bash .ci/install.sh` first");
}

/// A child process killed (SIGKILL) and reaped on drop, also when a test panics.
pub struct Guard(pub Child);

impl Guard {
    /// SIGKILL and reap now.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Guard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts the `rtis-producer` binary against the test services (stderr appended to `log`).
pub fn spawn_producer(
    db: &MariaDb,
    shop: &str,
    broker: &Broker,
    topic: &str,
    state: &Path,
    log: &Path,
    args: &[&str],
) -> Guard {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Guard(
        Command::new(env!("CARGO_BIN_EXE_rtis-producer"))
            .args(args)
            .env("RTIS_MYSQL_URL", db.url("rtis", shop))
            .env("RTIS_MYSQL_PASSWORD", "rtis-pw")
            .env("RTIS_BROKERS", broker.bootstrap())
            .env("RTIS_TOPIC", topic)
            .env("RTIS_PARTITIONS", "3")
            .env("RTIS_STATE", state)
            .env("RTIS_SERVER_ID", "7777")
            .env("RTIS_HEARTBEAT_SECS", "1")
            .env(
                "RUST_LOG",
                std::env::var("RTIS_TEST_PRODUCER_LOG")
                    .unwrap_or_else(|_| "info,rdkafka=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap(),
    )
}

/// A private MariaDB with ROW binlog and FULL row metadata.
pub struct MariaDb {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub server_id: u32,
    child: Option<Child>,
    extra_args: Vec<String>,
}

impl MariaDb {
    /// The server's process id (for CPU accounting), while it runs.
    #[allow(dead_code)] // used by the benchmark only
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra server options (e.g. `--binlog-format=STATEMENT`).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rtis-mariadb")
            .tempdir()
            .unwrap();
        let install = find_exe(
            "mariadb-install-db",
            &["/usr/bin/mariadb-install-db", "/usr/bin/mysql_install_db"],
        );
        // concurrent bootstraps collide on temporary tables: one at a time per process
        static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new(install)
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .output()
            .expect("mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = Self {
            dir,
            port: free_port(),
            server_id: 100 + NEXT_ID.fetch_add(1, Ordering::SeqCst) + std::process::id() % 1000,
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        db.spawn();
        db
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let log = d.join("mariadbd.log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(find_exe(
            "mariadbd",
            &["/usr/sbin/mariadbd", "/usr/sbin/mysqld"],
        ));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--tmpdir={}", d.display()))
            .arg(format!(
                "--log-bin={}",
                d.join("data/mariadb-bin").display()
            ))
            .arg(format!("--server-id={}", self.server_id))
            .args([
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
                "--user=root",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=32M",
                "--innodb-flush-log-at-trx-commit=2",
                "--sync-binlog=0",
                "--max-connections=200",
            ])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        self.child = Some(cmd.spawn().expect("start mariadbd"));
        wait_port(self.port, Duration::from_secs(60), "mariadbd", &log);
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        kill9(&mut self.child);
    }

    /// Starts again on the same port and data.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn root_url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    pub fn url(&self, user: &str, db: &str) -> String {
        format!("mysql://{user}@127.0.0.1:{}/{db}", self.port)
    }

    /// A root connection (retries while the server finishes starting).
    pub async fn conn(&self, db: &str) -> mysql_async::Conn {
        let opts = mysql_async::Opts::from_url(&self.root_url(db)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match mysql_async::Conn::new(opts.clone()).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("connect to test MariaDB: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Runs statements as root (`;`-separated, no `;` inside literals).
    pub async fn exec(&self, db: &str, sql: &str) {
        let mut c = self.conn(db).await;
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            c.query_drop(stmt)
                .await
                .unwrap_or_else(|e| panic!("{stmt}: {e}"));
        }
        c.disconnect().await.unwrap();
    }

    /// Creates a database with the `product` table from `sql/`, and the least-privilege user
    /// `rtis` (password `rtis-pw`). Returns the database name.
    pub async fn create_shop(&self) -> String {
        self.create_shop_named(&unique("shop")).await
    }

    /// [`Self::create_shop`] under a given database name.
    pub async fn create_shop_named(&self, db: &str) -> String {
        let db = db.to_string();
        self.exec("", &format!("CREATE DATABASE {db}")).await;
        let schema =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/01-schema.sql"))
                .unwrap();
        let schema: String = schema
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        self.exec(&db, &schema).await;
        self.exec(
            &db,
            &format!(
                "CREATE USER IF NOT EXISTS 'rtis'@'%' IDENTIFIED BY 'rtis-pw';
                 GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'rtis'@'%';
                 GRANT SELECT ON {db}.product TO 'rtis'@'%'"
            ),
        )
        .await;
        db
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        kill9(&mut self.child);
    }
}

/// Whether the opt-in long run is on (`RTIS_LONG=1`): more kills, longer workloads.
/// Waits (at most 60 s) until the producer owning `state` streams: its checkpoint is saved and
/// holds no snapshot in progress. Every change made after that is read from the binlog (op
/// c/u/d); one made before could still be read by the snapshot (op r).
pub async fn streaming(state: &Path) {
    eventually(Duration::from_secs(60), "the producer's stream", || async {
        is_streaming(state).await.then_some(())
    })
    .await
}

/// Whether the checkpoint in `state` is saved and holds no snapshot in progress.
pub async fn is_streaming(state: &Path) -> bool {
    let state = state.to_path_buf();
    tokio::task::spawn_blocking(move || rtis::checkpoint::CheckpointStore::inspect(&state))
        .await
        .unwrap()
        .ok()
        .and_then(|s| s.checkpoint)
        .is_some_and(|cp| cp.snapshot.is_none())
}

pub fn long_mode() -> bool {
    std::env::var("RTIS_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Iteration count of a fault test: `RTIS_CRASH_ITERATIONS` if set, else `long` under
/// `RTIS_LONG=1`, else `short` (what CI runs).
pub fn iterations(short: usize, long: usize) -> usize {
    std::env::var("RTIS_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if long_mode() { long } else { short })
}

/// Random seed of a test: `RTIS_SEED` (replay) or random; print it.
pub fn seed() -> u64 {
    std::env::var("RTIS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random)
}

/// Kill count and random seed of the crash tests: `RTIS_CRASH_ITERATIONS` (default 20, 50 with
/// `RTIS_LONG=1`) and `RTIS_SEED` (default random; printed so a failing run can be replayed).
pub fn crash_params() -> (usize, u64) {
    (iterations(20, 50), seed())
}

/// Waits until `topic` holds `expected` committed records and then stays unchanged for 2 s
/// (so a late duplicate is seen too), or until it stopped growing for `quiet` below that (fewer
/// arrived: the verifier reports them lost), or `timeout`; returns how many it holds.
pub async fn settle(
    bootstrap: &str,
    topic: &str,
    expected: i64,
    quiet: Duration,
    timeout: Duration,
) -> i64 {
    let (bs, t) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let mut counter = kafka::TopicCounter::new(&bs, &t);
        let deadline = Instant::now() + timeout;
        let mut last = (-1, Instant::now());
        loop {
            let n = counter.refresh(Duration::from_secs(2));
            if n != last.0 {
                last = (n, Instant::now());
            } else if (n >= expected && last.1.elapsed() > Duration::from_secs(2))
                || last.1.elapsed() > quiet
                || Instant::now() > deadline
            {
                return n;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    })
    .await
    .unwrap()
}

/// Waits until `topic` holds at least `min` committed records; returns how many it holds.
pub async fn records_at_least(bootstrap: &str, topic: &str, min: i64, timeout: Duration) -> i64 {
    let (bs, t) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + timeout;
        let mut counter = loop {
            if rtis::kafka::partition_count(&bs, &[], &t)
                .ok()
                .flatten()
                .is_some()
            {
                break kafka::TopicCounter::new(&bs, &t);
            }
            assert!(Instant::now() < deadline, "topic {t} never appeared");
            std::thread::sleep(Duration::from_millis(200));
        };
        loop {
            let n = counter.refresh(Duration::from_secs(2));
            if n >= min {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {min} records in {t} (found {n})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap()
}

/// Committed records of `topic` now.
pub async fn record_count(bootstrap: &str, topic: &str) -> i64 {
    committed_offsets(bootstrap, topic)
        .await
        .iter()
        .map(|o| o.len() as i64)
        .sum()
}

/// Offsets of the committed records of every partition of `topic`, in order.
pub async fn committed_offsets(bootstrap: &str, topic: &str) -> Vec<Vec<i64>> {
    let (bs, t) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        if rtis::kafka::partition_count(&bs, &[], &t)
            .unwrap()
            .is_none()
        {
            return Vec::new();
        }
        let mut c = kafka::TopicCounter::new(&bs, &t);
        c.refresh(Duration::from_secs(60));
        c.offsets
    })
    .await
    .unwrap()
}

/// End offsets (high watermarks) of every partition of `topic`.
pub async fn end_offsets(bootstrap: &str, topic: &str) -> Vec<i64> {
    let (bs, t) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let n = rtis::kafka::partition_count(&bs, &[], &t)
            .unwrap()
            .unwrap_or(0);
        let c: BaseConsumer = rtis::config::kafka_client_config(&bs, &[])
            .unwrap()
            .set("group.id", "rtis-test-watermarks")
            .create()
            .unwrap();
        // a topic just created may not have elected its leaders yet: retry for a bounded time
        (0..n)
            .map(|p| {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match c.fetch_watermarks(&t, p, Duration::from_secs(10)) {
                        Ok((_, high)) => break high,
                        Err(e) if Instant::now() < deadline => {
                            eprintln!("watermarks of {t}/{p}: {e}; retrying");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        Err(e) => panic!("watermarks of {t}/{p}: {e}"),
                    }
                }
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Waits until the topic holds at least `min_records`, then reads every record through the
/// real consumer (fresh group, temp dir) and returns the JSON lines sorted by (partition, offset),
/// data and dead-letter lines together.
pub async fn drain_topic(
    bootstrap: &str,
    topic: &str,
    min_records: i64,
    timeout: Duration,
) -> Vec<serde_json::Value> {
    let total = records_at_least(bootstrap, topic, min_records, timeout).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = consumer_config(bootstrap, topic, &unique("drain"), dir.path());
    consume_lines(cfg, total, timeout).await
}

/// Runs the real consumer with `cfg` until its files hold at least `total` lines (at most
/// `timeout`), stops it, and returns the lines sorted by (partition, offset).
pub async fn consume_lines(
    cfg: rtis::config::ConsumerConfig,
    total: i64,
    timeout: Duration,
) -> Vec<serde_json::Value> {
    let dir = cfg.out_dir.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(rtis::consumer::run(cfg, async move {
        let _ = rx.await;
    }));
    let lines = eventually(
        timeout,
        &format!("consumer files holding {total} records"),
        || async {
            let l = read_lines(&dir);
            (l.len() as i64 >= total).then_some(l)
        },
    )
    .await;
    let _ = tx.send(());
    handle.await.unwrap().unwrap();
    lines
}

/// One sample (`name` with its labels, e.g. `rtis_active{table="product"}`) of the
/// Prometheus endpoint at `addr`, if it answers and has it.
pub fn metric(addr: &str, name: &str) -> Option<f64> {
    let text = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// The per-machine cache `.ci/install.sh` fills (`RTIS_CACHE`, default `~/.cache/rtis`).
pub fn cache_dir() -> PathBuf {
    std::env::var("RTIS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(format!(
                "{}/.cache/rtis",
                std::env::var("HOME").unwrap_or_default()
            ))
        })
}

pub fn consumer_config(
    bootstrap: &str,
    topic: &str,
    group: &str,
    dir: &Path,
) -> rtis::config::ConsumerConfig {
    rtis::config::ConsumerConfig {
        brokers: bootstrap.to_string(),
        topic: topic.to_string(),
        registry: Default::default(),
        group: group.to_string(),
        out_dir: dir.to_path_buf(),
        kafka_options: vec![],
        log_format: rtis::config::LogFormat::Text,
        metrics_addr: None,
        config_file: None,
    }
}

/// All JSON lines of a consumer output dir, sorted by (partition, offset).
pub fn read_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        // a consumer still running may be mid-way through a line: only whole lines count
        let whole = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        for l in whole.lines().filter(|l| !l.is_empty()) {
            out.push(
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|err| panic!("bad line in {}: {err}: {l}", e.path().display())),
            );
        }
    }
    out.sort_by_key(|l| {
        (
            l["partition"].as_i64().unwrap(),
            l["offset"].as_i64().unwrap(),
        )
    });
    out
}

/// Producer settings for a test environment.
pub fn producer_config(
    db: &MariaDb,
    shop: &str,
    broker: &Broker,
    topic: &str,
    state: &Path,
) -> rtis::config::ProducerConfig {
    rtis::config::ProducerConfig {
        mysql_url: db.url("rtis", shop),
        mysql_password: Some("rtis-pw".into()),
        table: "product".into(),
        timestamp_column: "last_updated".into(),
        zero_dates: Default::default(),
        brokers: broker.bootstrap(),
        format: Default::default(),
        registry: Default::default(),
        topic: topic.to_string(),
        partitions: Some(3),
        replication_factor: None,
        min_insync_replicas: None,
        standby: false,
        name: None,
        state: state.to_path_buf(),
        server_id: 9000 + NEXT_ID.fetch_add(1, Ordering::SeqCst),
        heartbeat_secs: 1,
        delivery_timeout_ms: 10_000,
        max_retries: 0,
        kafka_options: vec![],
        max_in_flight: 10_000,
        max_transaction_records: rtis::sink::FORCE_RECORDS,
        log_format: rtis::config::LogFormat::Text,
        snapshot: rtis::config::SnapshotMode::Initial,
        since: None,
        snapshot_chunk: 1000,
        snapshot_max_rows_per_sec: 0,
        metrics_addr: None,
        config_file: None,
    }
}

/// The producer running in this process; stops gracefully on drop of the sender.
pub struct InProcess {
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<rtis::Result<()>>,
}

impl InProcess {
    pub fn start(cfg: rtis::config::ProducerConfig) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(rtis::pipeline::run(cfg, async move {
            let _ = rx.await;
        }));
        Self {
            stop: Some(tx),
            handle,
        }
    }

    /// Starts the producer and waits until it streams (see [`streaming`]).
    /// A producer that stops before it streams fails the test at once, with its error.
    pub async fn start_streaming(cfg: rtis::config::ProducerConfig) -> Self {
        let state = cfg.state.clone();
        let mut p = Self::start(cfg);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_streaming(&state).await {
            if p.handle.is_finished() {
                let out = (&mut p.handle).await;
                panic!("the producer stopped before it streamed: {out:?}");
            }
            assert!(
                Instant::now() < deadline,
                "the producer did not stream within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    /// Waits for the producer to stop by itself with an error (at most 90 s); returns its text.
    pub async fn failure(mut self) -> String {
        let out = tokio::time::timeout(Duration::from_secs(90), &mut self.handle)
            .await
            .expect("the producer stops by itself")
            .unwrap();
        out.expect_err("the producer fails").to_string()
    }

    pub async fn stop(mut self) -> rtis::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.handle.await.unwrap()
    }
}

/// Fetches the table as JSON rows keyed by id, rendered like the consumer renders them.
pub async fn table_state(db: &MariaDb, shop: &str) -> BTreeMap<String, serde_json::Value> {
    let mut c = db.conn(shop).await;
    c.query_drop("SET time_zone = '+00:00'").await.unwrap();
    let rows: Vec<(u64, String, Option<String>, String, String)> = c
        .query("SELECT id, name, category, CAST(price AS CHAR), DATE_FORMAT(last_updated, '%Y-%m-%dT%H:%i:%s.%fZ') FROM product")
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, name, cat, price, lu)| {
            (id.to_string(), serde_json::json!({"id": id.to_string(), "name": name, "category": cat, "price": price, "last_updated": lu}))
        })
        .collect()
}

/// Folds change lines into the final state per key (deletes remove the key).
pub fn fold(lines: &[serde_json::Value]) -> BTreeMap<String, serde_json::Value> {
    let mut state = BTreeMap::new();
    for l in lines {
        let key = l["key"]["id"].as_str().unwrap_or_default().to_string();
        match l["op"].as_str().unwrap_or_default() {
            "c" | "u" | "r" => {
                state.insert(key, l["after"].clone());
            }
            "d" | "tombstone" => {
                state.remove(&key);
            }
            other => panic!("unexpected op {other}: {l}"),
        }
    }
    state
}
