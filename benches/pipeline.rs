//! rtis benchmark: `cargo bench --bench pipeline` (add `-- --quick` for a 10× smaller run).
//!
//! Everything runs against a private MariaDB and a private Apache Kafka broker (one KRaft node,
//! from the jars `.ci/install.sh` caches) started here as in the tests (`tests/common`), and
//! every figure is printed next to a baseline measured in the same invocation on the same data,
//! because these machines are noisy. rtis writes in Kafka transactions: its records count once
//! committed (seen by a `read_committed` reader, which counts them while the run goes on;
//! offsets include transaction markers, so end offsets do not count records).
//!
//! * streaming catch-up: the binlog of a workload is written first (writers stopped), then the
//!   release `rtis-producer` binary streams it from the file's start until every record is
//!   committed. Baselines: `mariadb-binlog --read-from-remote-server --raw`
//!   (dump floor), `... -v` (row-decode floor) on the same file, and a plain rdkafka producer
//!   sending the same number of records of the same size with the same settings (produce floor);
//! * snapshot: `--snapshot snapshot-only` of the whole table vs `mariadb --quick -e 'SELECT ...'`;
//! * latency: commit (`last_updated`, a TIMESTAMP(6) set by the server) to arrival at a consumer
//!   polling the topic (`read_committed`), at a steady rate — an upper bound of source commit →
//!   Kafka commit;
//! * consumer: `rtis-consumer` writing the bulk topic to fsynced JSON lines;
//! * Avro: the hand encoder, single thread, no I/O.
//!
//! Each timed run is repeated (`RTIS_BENCH_RUNS`, default 3); the median and the range are shown.
//! The broker is warmed up first by an untimed catch-up and produce floor (`RTIS_BENCH_WARMUP=0`
//! skips that).
//! Sizes: `RTIS_BENCH_OLTP` (100000 transactions), `RTIS_BENCH_BULK` (1000000 rows),
//! `RTIS_BENCH_CONSUMER` (records for the consumer, default the whole bulk workload).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::Message;
use rtis::avro::{self, SourceInfo, WriterSchema};
use rtis::schema::{Charset, ColumnKind, ColumnSpec, TableSchema};
use rtis::value::Datum;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median and range of repeated measurements.
fn summary(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn fmt_rate(xs: &[f64]) -> String {
    let (m, lo, hi) = summary(xs);
    format!("{:.0}/s ({:.0}–{:.0})", m, lo, hi)
}

/// A report row: what, figure, baseline, ratio.
struct Report(Vec<[String; 4]>);

impl Report {
    fn add(&mut self, what: &str, figure: String, baseline: String, ratio: String) {
        eprintln!("bench: {what}: {figure} | {baseline} | {ratio}");
        self.0.push([what.into(), figure, baseline, ratio]);
    }
    fn print(&self) {
        println!("| measurement | rtis (median, range) | baseline (median, range) | ratio |");
        println!("|---|---|---|---|");
        for r in &self.0 {
            println!("| {} | {} | {} | {} |", r[0], r[1], r[2], r[3]);
        }
    }
}

fn product_table() -> TableSchema {
    let col = |name: &str, kind: ColumnKind, nullable: bool| ColumnSpec::new(name, kind, nullable);
    TableSchema {
        db: "shop".into(),
        table: "product".into(),
        columns: vec![
            col("id", ColumnKind::UInt64, false),
            col("name", ColumnKind::String(Charset::Utf8), false),
            col("category", ColumnKind::String(Charset::Utf8), true),
            col(
                "price",
                ColumnKind::Decimal {
                    precision: 10,
                    scale: 2,
                },
                false,
            ),
            col("last_updated", ColumnKind::Timestamp, false),
        ],
        key: vec![0],
    }
}

/// Avro micro-benchmark: update envelopes (before + after) plus keys, one thread.
fn avro_bench(n: u64) -> (f64, usize) {
    let table = product_table();
    let value = WriterSchema::parse(&avro::envelope_schema_json(&table)).unwrap();
    let key = WriterSchema::parse(&avro::key_schema_json(&table)).unwrap();
    let row = |i: u64, p: &str| {
        vec![
            Datum::UInt(i),
            Datum::Str(format!("product {i}")),
            Datum::Str("kitchen".into()),
            Datum::Decimal(p.into()),
            Datum::TimestampMicros(1_795_000_000_000_000 + i as i64),
        ]
    };
    // rows are built outside the timed loop: the pipeline gets them from the decoder
    let rows: Vec<(Vec<Datum>, Vec<Datum>)> = (0..1024)
        .map(|i| (row(i, "12.50"), row(i, "13.75")))
        .collect();
    let (value_header, key_header) = (
        rtis::framing::single_object(&value),
        rtis::framing::single_object(&key),
    );
    let mut buf = Vec::with_capacity(512);
    let mut kbuf = Vec::with_capacity(32);
    let mut bytes = 0usize;
    let start = Instant::now();
    for i in 0..n {
        let (b, a) = &rows[(i % 1024) as usize];
        buf.clear();
        kbuf.clear();
        let src = SourceInfo {
            server_id: 1,
            file: "mariadb-bin.000001",
            pos: i,
            row: 0,
            gtid: Some("0-1-42"),
            ts_ms: 1_795_000_000_000,
            snapshot: false,
            connector: "shop-product",
            server_uuid: None,
        };
        avro::encode_envelope(
            &mut buf,
            &value_header,
            &table,
            "u",
            Some(b),
            Some(a),
            &src,
            1,
        );
        avro::encode_key(&mut kbuf, &key_header, &table, a);
        bytes += buf.len() + kbuf.len();
        std::hint::black_box((&buf, &kbuf));
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    (rate, bytes / n as usize)
}

/// Counts the committed records of a topic as they become visible, with one long-lived
/// `read_committed` client reading every partition from its start: the producer writes in
/// Kafka transactions, whose markers (and aborted records) occupy offsets, so end offsets do
/// not count records.
struct Committed {
    c: BaseConsumer,
    topic: String,
    assigned: bool,
    seen: i64,
}

impl Committed {
    fn new(bootstrap: &str, topic: &str) -> Self {
        let c: BaseConsumer = rtis::config::kafka_client_config(bootstrap, &[])
            .unwrap()
            .set("group.id", "rtis-bench-counter")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .create()
            .unwrap();
        Self {
            c,
            topic: topic.into(),
            assigned: false,
            seen: 0,
        }
    }

    /// Assigns every partition once the topic exists; whether it does.
    fn assign(&mut self) -> bool {
        if self.assigned {
            return true;
        }
        let partitions = self
            .c
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            .ok()
            .and_then(|m| {
                m.topics()
                    .iter()
                    .find(|t| t.name() == self.topic && t.error().is_none())
                    .map(|t| t.partitions().len() as i32)
            })
            .unwrap_or(0);
        if partitions == 0 {
            return false;
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&self.topic, p, rdkafka::Offset::Beginning)
                .unwrap();
        }
        self.c.assign(&tpl).unwrap();
        self.assigned = true;
        true
    }

    /// Reads what became visible for `budget`; returns the committed records seen so far.
    fn total(&mut self, budget: Duration) -> i64 {
        let deadline = Instant::now() + budget;
        if !self.assign() {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            return self.seen;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(Ok(_)) = self.c.poll(left) {
                self.seen += 1;
            }
            if left.is_zero() {
                return self.seen;
            }
        }
    }

    /// Waits for `want` committed records; returns when the first one was seen and the records
    /// seen then.
    fn wait_for(&mut self, want: i64, timeout: Duration) -> (Instant, i64) {
        let deadline = Instant::now() + timeout;
        let mut first = None;
        loop {
            let t = self.total(Duration::from_millis(20));
            if t > 0 && first.is_none() {
                first = Some((Instant::now(), t));
            }
            if t >= want {
                return first.unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{}: {t} of {want} committed records after {timeout:?}",
                self.topic
            );
        }
    }
}

/// CPU seconds (user + system) and peak RSS (MiB) of a running process.
fn proc_usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields after the command: state is [0]; utime is field 14 of stat → index 11 here
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / tick;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0;
    (cpu, hwm)
}

fn stop(child: &mut Guard) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Env {
    db: MariaDb,
    broker: Broker,
    shop: String,
    dir: tempfile::TempDir,
}

/// CPU seconds the broker and the MariaDB server have used so far.
fn services_cpu(env: &Env) -> (f64, f64) {
    let cpu = |pid: Option<u32>| pid.map_or(0.0, |p| proc_usage(p).0);
    (cpu(env.broker.pid()), cpu(env.db.pid()))
}

/// CPU seconds of one timed run: the process under test, the broker, MariaDB; and its length.
#[derive(Debug, Clone, Copy, Default)]
struct RunCpu {
    own: f64,
    broker: f64,
    db: f64,
    secs: f64,
}

impl RunCpu {
    /// Cores busy on average during the run.
    fn cores(&self) -> f64 {
        (self.own + self.broker + self.db) / self.secs
    }
}

/// Median of one figure over runs.
fn med(xs: &[RunCpu], f: fn(&RunCpu) -> f64) -> f64 {
    summary(&xs.iter().map(f).collect::<Vec<_>>()).0
}

/// Where the machine's cores went during runs of `records` records each: when every core is
/// busy, the rate is cores / (CPU per record of all processes), and the broker gets what the
/// others leave.
fn machine_cpu(xs: &[RunCpu], records: f64) -> String {
    let per_m = |x: f64| x / records * 1e6;
    format!(
        "broker {:.1}, MariaDB {:.1}, producer {:.1} CPU s per 1M; {:.2} of {} cores busy",
        per_m(med(xs, |u| u.broker)),
        per_m(med(xs, |u| u.db)),
        per_m(med(xs, |u| u.own)),
        med(xs, RunCpu::cores),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    )
}

impl Env {
    fn producer(&self, topic: &str, state: &Path, args: &[&str]) -> Guard {
        let log = self.dir.path().join(format!("{topic}.log"));
        spawn_producer(&self.db, &self.shop, &self.broker, topic, state, &log, args)
    }

    async fn root(&self) -> mysql_async::Conn {
        self.db.conn(&self.shop).await
    }

    fn client(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.arg("--host=127.0.0.1")
            .arg(format!("--port={}", self.db.port))
            .arg("--user=root")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }
}

/// Rotates the binlog so the workload that follows gets a file of its own; returns its name.
async fn fresh_binlog(c: &mut mysql_async::Conn) -> String {
    c.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let row: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    row.get::<String, _>(0).unwrap()
}

/// Starts the release producer streaming `file` from its start into `topic` (a fresh state
/// file whose checkpoint `reset --to-position` puts at `file:4`).
fn stream_from_start(env: &Env, file: &str, topic: &str) -> Guard {
    let state = env.dir.path().join(format!("{topic}.sqlite"));
    let out = Command::new(env!("CARGO_BIN_EXE_rtis-producer"))
        .args(["reset", "--state", state.to_str().unwrap()])
        .arg("--to-position")
        .arg(format!("{file}:4"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.producer(topic, &state, &["--snapshot", "never"])
}

/// Streams `file` from its start with the release binary until `records` are committed.
/// Returns (seconds, CPU of the run, peak RSS MiB). The services' CPU is taken over the whole
/// run (start-up included), like the producer's.
fn rtis_catch_up(
    env: &Env,
    file: &str,
    records: i64,
    run: usize,
    what: &str,
) -> (f64, RunCpu, f64) {
    let topic = unique(&format!("bench_{what}_{run}"));
    let mut committed = Committed::new(&env.broker.bootstrap(), &topic);
    let (broker0, db0) = services_cpu(env);
    let started = Instant::now();
    let mut child = stream_from_start(env, file, &topic);
    // timed from the first committed record: process start-up (preflight, metadata, fencing
    // earlier sessions, the checkpoint) is not throughput
    let (first, seen) = committed.wait_for(records, Duration::from_secs(1800));
    let secs = first.elapsed().as_secs_f64() * records as f64 / (records - seen + 1) as f64;
    let (cpu, rss) = proc_usage(child.id());
    let (broker1, db1) = services_cpu(env);
    let whole = started.elapsed().as_secs_f64();
    stop(&mut child);
    let usage = RunCpu {
        own: cpu,
        broker: broker1 - broker0,
        db: db1 - db0,
        secs: whole,
    };
    (secs, usage, rss)
}

/// Plain rdkafka producer, same settings as rtis, `n` records of `size` bytes.
async fn produce_floor(env: &Env, n: i64, size: usize, run: usize) -> (f64, RunCpu) {
    let cpu0 = proc_usage(std::process::id()).0;
    let (broker0, db0) = services_cpu(env);
    let topic = unique(&format!("bench_floor_{run}"));
    rtis::kafka::create_topic(
        &env.broker.bootstrap(),
        &[],
        &topic,
        3,
        rtis::kafka::Replication::default(),
        &[],
    )
    .await
    .unwrap();
    let producer = rtis::kafka::create_plain_producer(&env.broker.bootstrap(), &[]).unwrap();
    let payload = vec![7u8; size];
    let start = Instant::now();
    let mut inflight = std::collections::VecDeque::new();
    for i in 0..n {
        let key = (i as u64).to_le_bytes();
        // the same shape as an rtis record: key, Avro payload, the `rtis.pos` header
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic)
            .key(&key[..])
            .payload(&payload[..])
            .partition((i % 3) as i32)
            .headers(
                rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                    key: "rtis.pos",
                    value: Some("1:12345678:0:0"),
                }),
            );
        let fut = loop {
            match producer.send_result(rec) {
                Ok(f) => break f,
                Err((_, r)) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        };
        inflight.push_back(fut);
        if inflight.len() >= 20_000 {
            inflight.pop_front().unwrap().await.unwrap().unwrap();
        }
    }
    for f in inflight {
        f.await.unwrap().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let (broker1, db1) = services_cpu(env);
    let usage = RunCpu {
        own: proc_usage(std::process::id()).0 - cpu0,
        broker: broker1 - broker0,
        db: db1 - db0,
        secs,
    };
    (secs, usage)
}

fn timed(mut cmd: Command) -> f64 {
    let start = Instant::now();
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed().as_secs_f64()
}

/// Catch-up of one workload's binlog file against its floors.
#[allow(clippy::too_many_arguments)]
async fn catch_up_section(
    env: &Env,
    report: &mut Report,
    what: &str,
    file: &str,
    records: i64,
    unit: (&str, u64),
    record_size: usize,
    runs: usize,
) -> f64 {
    let mut raw = Vec::new();
    let mut verbose = Vec::new();
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    let mut cpu = Vec::new();
    let mut floor_cpu = Vec::new();
    let mut rss: f64 = 0.0;
    for run in 0..runs {
        let mut c = env.client("mariadb-binlog");
        c.args(["--read-from-remote-server", "--raw"])
            .arg(format!("--result-file={}/", env.dir.path().display()))
            .arg(file);
        raw.push(timed(c));
        let mut c = env.client("mariadb-binlog");
        c.args(["--read-from-remote-server", "-v"]).arg(file);
        verbose.push(timed(c));
        let (s, c, r) = rtis_catch_up(env, file, records, run, what);
        ours.push(s);
        cpu.push(c);
        rss = rss.max(r);
        let (s, c) = produce_floor(env, records, record_size, run).await;
        floor.push(s);
        floor_cpu.push(c);
    }
    let (n, label) = (unit.1 as f64, unit.0);
    let rate = |xs: &[f64]| xs.iter().map(|s| n / s).collect::<Vec<_>>();
    let ratio = |a: &[f64], b: &[f64]| summary(&rate(a)).0 / summary(&rate(b)).0;
    report.add(
        &format!("{what}: catch-up to Kafka commit ({label}/s) vs `mariadb-binlog --raw`"),
        fmt_rate(&rate(&ours)),
        fmt_rate(&rate(&raw)),
        format!("{:.2}", ratio(&ours, &raw)),
    );
    report.add(
        &format!("{what}: catch-up ({label}/s) vs `mariadb-binlog -v` (row-decode floor)"),
        fmt_rate(&rate(&ours)),
        fmt_rate(&rate(&verbose)),
        format!("{:.2}", ratio(&ours, &verbose)),
    );
    let recs = |xs: &[f64]| xs.iter().map(|s| records as f64 / s).collect::<Vec<_>>();
    report.add(
        &format!("{what}: records/s committed vs plain rdkafka producer (produce floor: acks, no transactions, {record_size} B)"),
        fmt_rate(&recs(&ours)),
        fmt_rate(&recs(&floor)),
        format!(
            "{:.2}",
            summary(&recs(&ours)).0 / summary(&recs(&floor)).0
        ),
    );
    let (c, fc) = (med(&cpu, |u| u.own), med(&floor_cpu, |u| u.own));
    let per_m = |x: f64| x / records as f64 * 1e6;
    report.add(
        &format!("{what}: CPU s per 1M records (peak RSS) vs plain producer's process"),
        format!("{:.1} CPU s ({rss:.0} MiB)", per_m(c)),
        format!("{:.1} CPU s", per_m(fc)),
        format!("{:.2}", c / fc),
    );
    report.add(
        &format!("{what}: machine CPU during the run vs during the produce floor"),
        machine_cpu(&cpu, records as f64),
        machine_cpu(&floor_cpu, records as f64),
        format!(
            "{:.2}",
            per_m(med(&cpu, |u| u.broker + u.db + u.own))
                / per_m(med(&floor_cpu, |u| u.broker + u.db + u.own))
        ),
    );
    summary(&recs(&floor)).0
}

/// Parses `YYYY-MM-DDTHH:MM:SS.ffffffZ` into µs since the epoch.
fn parse_utc(s: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (hh, mm, ss, us) = (n(11..13), n(14..16), n(17..19), n(20..26));
    let days = rtis::value::days_from_civil(y, m as u32, d as u32);
    ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + us
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Commit → arrival latency at `rate` transactions/s for `secs` seconds; returns sorted ms.
async fn latency_run(env: &Env, rate: u64, secs: u64, ids: u64) -> Vec<f64> {
    let topic = unique(&format!("bench_latency_{rate}"));
    let state = env.dir.path().join(format!("{topic}.sqlite"));
    let mut child = env.producer(&topic, &state, &["--snapshot", "never"]);
    let t0 = Instant::now();
    while !state.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "producer did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let expected = (rate * secs) as i64;
    let reader = arrivals(env.broker.bootstrap(), topic.clone(), expected, secs).await;
    // the writer: `rate` autocommit updates per second, paced in 10 ms slots, 2 connections
    let per_slot = (rate / 100).max(1);
    let start = Instant::now();
    let mut conns = [env.root().await, env.root().await];
    let mut sent = 0u64;
    while sent < rate * secs {
        let due = start + Duration::from_millis(10 * (sent / per_slot));
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(w).await;
        }
        let batch: Vec<u64> = (sent..(sent + per_slot).min(rate * secs)).collect();
        let (a, b) = conns.split_at_mut(1);
        let half = batch.len() / 2;
        let (x, y) = (batch[..half].to_vec(), batch[half..].to_vec());
        tokio::join!(
            run_updates(&mut a[0], x, ids),
            run_updates(&mut b[0], y, ids)
        );
        sent += batch.len() as u64;
    }
    let achieved = sent as f64 / start.elapsed().as_secs_f64();
    eprintln!("bench: latency writer achieved {achieved:.0} txn/s (target {rate})");
    let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    // decoded after the fact, so loading the writer schema does not delay arrivals
    let schemas: std::collections::HashMap<_, _> =
        read_schemas(&env.broker.bootstrap(), &format!("{topic}-schemas"))
            .into_iter()
            .map(|s| (s.fingerprint, s))
            .collect();
    let mut lat: Vec<f64> = got
        .iter()
        .map(|(arrived, v)| {
            let (fp, body) = avro::split_single_object(v).unwrap();
            let j = avro::decode_to_json(&schemas[&fp], body).unwrap();
            let committed = parse_utc(j["after"]["last_updated"].as_str().unwrap());
            (arrived - committed) as f64 / 1000.0
        })
        .collect();
    stop(&mut child);
    assert_eq!(lat.len() as i64, expected, "every update arrived");
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    lat
}

async fn run_updates(c: &mut mysql_async::Conn, v: Vec<u64>, ids: u64) {
    for i in v {
        c.query_drop(format!(
            "UPDATE product SET price = price + 0.01 WHERE id = {}",
            100_000_001 + i % ids
        ))
        .await
        .unwrap();
    }
}

type Arrivals = std::thread::JoinHandle<Vec<(i64, Vec<u8>)>>;

/// A consumer thread that records (arrival µs, payload) of `expected` records of `topic`.
/// Resolves once the consumer is fetching (it knows every partition's leader and has polled for
/// a second), so the writers that follow do not measure its start-up.
async fn arrivals(bootstrap: String, topic: String, expected: i64, secs: u64) -> Arrivals {
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let c: BaseConsumer = rtis::config::kafka_client_config(&bootstrap, &[])
            .unwrap()
            .set("group.id", "rtis-bench-latency")
            .set("fetch.wait.max.ms", "5")
            .set("fetch.min.bytes", "1")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        for p in 0..3 {
            c.fetch_watermarks(&topic, p, Duration::from_secs(30))
                .unwrap();
        }
        let mut got = Vec::with_capacity(expected as usize);
        let warm = Instant::now() + Duration::from_secs(1);
        let mut ready_tx = Some(ready_tx);
        let deadline = Instant::now() + Duration::from_secs(secs + 120);
        while (got.len() as i64) < expected && Instant::now() < deadline {
            if Instant::now() >= warm {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(());
                }
            }
            let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else {
                continue;
            };
            if let Some(v) = m.payload() {
                got.push((now_us(), v.to_vec()));
            }
        }
        got
    });
    tokio::task::spawn_blocking(move || ready.recv())
        .await
        .unwrap()
        .expect("the latency reader started");
    reader
}

/// The floor of the latency figure: a plain producer (rtis's settings) sends its own send time
/// at the same rate to a fresh topic, read by the same consumer code.
async fn latency_floor(env: &Env, rate: u64, secs: u64) -> Vec<f64> {
    let topic = unique(&format!("bench_latency_floor_{rate}"));
    rtis::kafka::create_topic(
        &env.broker.bootstrap(),
        &[],
        &topic,
        3,
        rtis::kafka::Replication::default(),
        &[],
    )
    .await
    .unwrap();
    let producer = rtis::kafka::create_plain_producer(&env.broker.bootstrap(), &[]).unwrap();
    let expected = (rate * secs) as i64;
    let reader = arrivals(env.broker.bootstrap(), topic.clone(), expected, secs).await;
    let per_slot = (rate / 100).max(1);
    let start = Instant::now();
    let mut futs = Vec::with_capacity(expected as usize);
    let mut sent = 0u64;
    while sent < rate * secs {
        let due = start + Duration::from_millis(10 * (sent / per_slot));
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(w).await;
        }
        for _ in 0..per_slot.min(rate * secs - sent) {
            let ts = now_us().to_le_bytes();
            let key = sent.to_le_bytes();
            let rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic)
                .key(&key[..])
                .payload(&ts[..])
                .partition((sent % 3) as i32);
            futs.push(producer.send_result(rec).map_err(|(e, _)| e).unwrap());
            sent += 1;
        }
    }
    for f in futs {
        f.await.unwrap().unwrap();
    }
    let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert_eq!(got.len() as i64, expected, "every floor record arrived");
    let mut lat: Vec<f64> = got
        .iter()
        .map(|(arrived, v)| {
            let sent = i64::from_le_bytes(v[..8].try_into().unwrap());
            (arrived - sent) as f64 / 1000.0
        })
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    lat
}

/// The writer schemas of `<topic>-schemas` (its committed records, up to the last stable offset).
fn read_schemas(bootstrap: &str, topic: &str) -> Vec<WriterSchema> {
    let mut out = Vec::new();
    rtis::kafka::read_to_end(
        bootstrap,
        &[],
        topic,
        0,
        rdkafka::Offset::Beginning,
        Duration::from_secs(30),
        |m| {
            if let Some(s) = m.payload().and_then(|p| std::str::from_utf8(p).ok()) {
                out.push(WriterSchema::parse(s).unwrap());
            }
        },
    )
    .unwrap();
    out
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
        / 1024;
    format!("{cores} cores ({cpu}), {mem} GiB RAM")
}

async fn bench() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let runs = env_num("RTIS_BENCH_RUNS", if quick { 1 } else { 3 }) as usize;
    let oltp = env_num("RTIS_BENCH_OLTP", 100_000) / scale;
    let bulk = env_num("RTIS_BENCH_BULK", 1_000_000) / scale;
    let mut report = Report(Vec::new());
    eprintln!("bench: machine {}", machine());
    // RTIS_BENCH_SECTIONS=avro,oltp,bulk,snapshot,consumer,latency (default: all)
    let sections = std::env::var("RTIS_BENCH_SECTIONS").unwrap_or_default();
    let on = |name: &str| sections.is_empty() || sections.split(',').any(|s| s.trim() == name);

    // Avro encoding, no I/O
    let mut avro_rates = Vec::new();
    let mut size = 0;
    for _ in 0..if on("avro") { runs } else { 1 } {
        let (r, s) = avro_bench(2_000_000 / scale);
        avro_rates.push(r);
        size = s;
    }
    if on("avro") {
        report.add(
            "Avro encode (update envelope + key, one thread)",
            fmt_rate(&avro_rates),
            "target 2M/s".into(),
            format!("{:.2}", summary(&avro_rates).0 / 2e6),
        );
    }

    let env = Env {
        db: MariaDb::start(),
        broker: Broker::start(),
        shop: String::new(),
        dir: tempfile::tempdir().unwrap(),
    };
    let shop = env.db.create_shop().await;
    let env = Env { shop, ..env };
    let mut c = env.root().await;
    let base: u64 = 10_000;
    c.query_drop(format!(
        "INSERT INTO product (id, name, category, price)
         SELECT seq, CONCAT('product ', seq), 'kitchen', 10.00 FROM seq_1_to_{base}"
    ))
    .await
    .unwrap();

    // OLTP: single-row autocommit transactions, 4 writers on disjoint ids
    let oltp_file = fresh_binlog(&mut c).await;
    let gen = Instant::now();
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let mut conn = env.root().await;
        let n = oltp / 4;
        writers.push(tokio::spawn(async move {
            let (mut ins, mut upd, mut del) = (0i64, 0i64, 0i64);
            let mut live: Vec<u64> = (1..=base).filter(|i| i % 4 == w).collect();
            let mut next_id = 1_000_000 + w * 10_000_000;
            for i in 0..n {
                let sql = match i % 10 {
                    0..=5 => {
                        upd += 1;
                        let id = live[(i as usize * 7919) % live.len()];
                        format!("UPDATE product SET price = price + 0.01 WHERE id = {id}")
                    }
                    6..=8 => {
                        ins += 1;
                        next_id += 1;
                        live.push(next_id);
                        format!("INSERT INTO product (id, name, category, price) VALUES ({next_id}, 'new {next_id}', 'tea', 3.20)")
                    }
                    _ => {
                        del += 1;
                        let id = live.swap_remove((i as usize * 104_729) % live.len());
                        format!("DELETE FROM product WHERE id = {id}")
                    }
                };
                conn.query_drop(sql).await.unwrap();
            }
            (ins, upd, del)
        }));
    }
    let (mut ins, mut upd, mut del) = (0, 0, 0);
    for w in writers {
        let (a, b, d) = w.await.unwrap();
        ins += a;
        upd += b;
        del += d;
    }
    let txns = (ins + upd + del) as u64;
    eprintln!(
        "bench: OLTP workload {txns} transactions written in {:.1}s",
        gen.elapsed().as_secs_f64()
    );
    // a delete is a delete record plus a tombstone
    let oltp_records = ins + upd + 2 * del;

    // close the file: the catch-up reads exactly this workload
    fresh_binlog(&mut c).await;
    // the broker is a JVM: one untimed catch-up and produce floor first (RTIS_BENCH_WARMUP=0
    // skips them), so the first timed runs do not pay for its JIT compilation
    if env_num("RTIS_BENCH_WARMUP", 1) != 0 {
        let t = Instant::now();
        rtis_catch_up(&env, &oltp_file, oltp_records, 0, "warmup");
        produce_floor(&env, oltp_records, size, 0).await;
        eprintln!(
            "bench: broker warm-up (an untimed catch-up and produce floor) took {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    if on("oltp") {
        catch_up_section(
            &env,
            &mut report,
            "OLTP",
            &oltp_file,
            oltp_records,
            ("txn", txns),
            size,
            runs,
        )
        .await;
    }

    // bulk: rows inserted in 10 large transactions
    let bulk_file = fresh_binlog(&mut c).await;
    let gen = Instant::now();
    let per = bulk / 10;
    for t in 0..10u64 {
        let lo = 100_000_000 + t * per + 1;
        c.query_drop(format!(
            "INSERT INTO product (id, name, category, price)
             SELECT seq, CONCAT('bulk product ', seq), 'bulk', 1.00 FROM seq_{lo}_to_{}",
            lo + per - 1
        ))
        .await
        .unwrap();
    }
    eprintln!(
        "bench: bulk workload {} rows written in {:.1}s",
        per * 10,
        gen.elapsed().as_secs_f64()
    );
    fresh_binlog(&mut c).await;

    let bulk_floor = if !on("bulk") {
        0.0
    } else {
        catch_up_section(
            &env,
            &mut report,
            "bulk",
            &bulk_file,
            (per * 10) as i64,
            ("rows", per * 10),
            size,
            runs,
        )
        .await
    };

    // snapshot of the whole table vs SELECT
    if on("snapshot") {
        let rows: u64 = c
            .query_first("SELECT COUNT(*) FROM product")
            .await
            .unwrap()
            .unwrap();
        let mut ours = Vec::new();
        let mut select = Vec::new();
        let mut snap_rss: f64 = 0.0;
        let mut snap_cpu = Vec::new();
        for run in 0..runs {
            let mut q = env.client("mariadb");
            q.args([
                "--quick",
                &env.shop,
                "-e",
                "SELECT id, name, category, price, last_updated FROM product",
            ]);
            select.push(rows as f64 / timed(q));
            let topic = unique(&format!("bench_snapshot_{run}"));
            let state = env.dir.path().join(format!("{topic}.sqlite"));
            let (broker0, db0) = services_cpu(&env);
            let start = Instant::now();
            let mut child = env.producer(&topic, &state, &["--snapshot", "snapshot-only"]);
            let (mut peak, mut own): (f64, f64) = (0.0, 0.0);
            loop {
                // sampled every 50 ms: the last sample before the exit stands for the total
                let (cpu, rss) = proc_usage(child.id());
                (peak, own) = (peak.max(rss), own.max(cpu));
                if let Some(st) = child.try_wait().unwrap() {
                    assert!(st.success(), "snapshot-only failed");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let secs = start.elapsed().as_secs_f64();
            let (broker1, db1) = services_cpu(&env);
            snap_cpu.push(RunCpu {
                own,
                broker: broker1 - broker0,
                db: db1 - db0,
                secs,
            });
            ours.push(rows as f64 / secs);
            snap_rss = snap_rss.max(peak);
            Committed::new(&env.broker.bootstrap(), &topic)
                .wait_for(rows as i64, Duration::from_secs(60));
        }
        report.add(
        &format!("snapshot of {rows} rows (rows/s) vs `mariadb --quick -e SELECT` (peak RSS {snap_rss:.0} MiB)"),
        fmt_rate(&ours),
        fmt_rate(&select),
        format!("{:.2}", summary(&ours).0 / summary(&select).0),
    );
        report.add(
            "snapshot (rows/s to Kafka commit) vs the bulk produce floor",
            fmt_rate(&ours),
            format!("{bulk_floor:.0}/s"),
            format!("{:.2}", summary(&ours).0 / bulk_floor),
        );
        report.add(
            "snapshot: machine CPU during the run",
            machine_cpu(&snap_cpu, rows as f64),
            "(bulk produce floor: see its row)".into(),
            "-".into(),
        );
    }

    // consumer: the bulk workload (its first RTIS_BENCH_CONSUMER records, default all of it)
    // re-streamed into a topic, to fsynced JSON lines
    if on("consumer") {
        let bulk_topic = unique("bench_consumer");
        let cap = env_num("RTIS_BENCH_CONSUMER", per * 10).min(per * 10) as i64;
        let records = {
            let mut p = stream_from_start(&env, &bulk_file, &bulk_topic);
            let mut committed = Committed::new(&env.broker.bootstrap(), &bulk_topic);
            committed.wait_for(cap, Duration::from_secs(1800));
            stop(&mut p);
            // what the stopped session committed last (a cap may end inside a transaction)
            let mut n = committed.total(Duration::from_millis(500));
            loop {
                let more = committed.total(Duration::from_millis(500));
                if more == n {
                    break n;
                }
                n = more;
            }
        };
        let mut crates = Vec::new();
        let mut c_rss: f64 = 0.0;
        for run in 0..runs {
            let out = env.dir.path().join(format!("out{run}"));
            let port = free_port();
            let start = Instant::now();
            let mut child = Guard(
                Command::new(env!("CARGO_BIN_EXE_rtis-consumer"))
                    .args(["--brokers", &env.broker.bootstrap(), "--topic", &bulk_topic])
                    .args(["--group", &unique("bench_group"), "--out-dir"])
                    .arg(&out)
                    .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
                    .env("RUST_LOG", "info,rdkafka=warn")
                    .stdout(Stdio::null())
                    .stderr(
                        std::fs::File::create(env.dir.path().join(format!("consumer{run}.log")))
                            .unwrap(),
                    )
                    .spawn()
                    .unwrap(),
            );
            let want = records as f64;
            loop {
                c_rss = c_rss.max(proc_usage(child.id()).1);
                let written = scrape_sum(port, "rtis_consumer_records_written_total");
                if written >= want {
                    break;
                }
                let exited = child.try_wait().unwrap();
                if exited.is_some() || start.elapsed() > Duration::from_secs(600) {
                    let log =
                        std::fs::read_to_string(env.dir.path().join(format!("consumer{run}.log")))
                            .unwrap_or_default();
                    panic!(
                        "consumer stalled at {written} records (exit {exited:?}); its log:\n{log}"
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            crates.push(want / start.elapsed().as_secs_f64());
            stop(&mut child);
        }
        report.add(
            &format!("consumer: {records} records to fsynced JSON lines, records/s (peak RSS {c_rss:.0} MiB)"),
            fmt_rate(&crates),
            "-".into(),
            "-".into(),
        );
    }

    // latency at steady rates
    for rate in [1000u64, 5000].into_iter().filter(|_| on("latency")) {
        // bulk rows: never deleted, so every update changes a row
        let secs = if quick { 5 } else { 10 };
        let (mut lat, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            lat.push(latency_run(&env, rate, secs, per * 10).await);
            floor.push(latency_floor(&env, rate, secs).await);
        }
        // each percentile per run, then its median and range over the runs
        let at =
            |runs: &[Vec<f64>], p: f64| -> Vec<f64> { runs.iter().map(|l| pct(l, p)).collect() };
        let show = |runs: &[Vec<f64>]| {
            let stat = |p: f64| {
                let (m, lo, hi) = summary(&at(runs, p));
                format!("{m:.1} ({lo:.1}–{hi:.1})")
            };
            format!(
                "p50 {}, p99 {}, p99.9 {}",
                stat(0.5),
                stat(0.99),
                stat(0.999)
            )
        };
        report.add(
            &format!("latency (ms) at {rate} txn/s, median (range) of {runs} runs: commit → consumer arrival vs plain producer send → same consumer"),
            show(&lat),
            show(&floor),
            format!(
                "p99 +{:.1} ms",
                summary(&at(&lat, 0.99)).0 - summary(&at(&floor, 0.99)).0
            ),
        );
    }

    println!();
    println!(
        "rtis benchmark, {} ({runs} run(s) each, OLTP {txns} txns, bulk {} rows)",
        machine(),
        per * 10
    );
    println!();
    report.print();
}

fn scrape_sum(port: u16, metric: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0.0;
    };
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with(metric))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn main() {
    // `cargo test --all-targets` runs this binary too (without `--bench`): nothing to check there
    if !std::env::args().any(|a| a == "--bench") {
        println!("rtis benchmark: run it with `cargo bench --bench pipeline`");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}
