//! Prometheus metrics (`--metrics-addr`, off by default) for both binaries.
//!
//! Metrics are kept in `prometheus-client` types and encoded by it (OpenMetrics text); the only
//! hand-written part is the tiny HTTP responder for `GET /metrics`. Values that depend on the
//! time of the scrape (lag, checkpoint age) are computed when scraped, from timestamps the
//! pipeline records as it goes.
//!
//! Lag, "milliseconds behind the source", is `now − commit time of the last acknowledged
//! transaction`. An idle source would make that grow forever, so it is kept honest by the
//! source's heartbeats: when a heartbeat arrived after the last event, nothing is in flight and
//! the stream is alive (contact within three heartbeat periods), the connector has everything
//! and the lag is 0. Binlog event times have one-second resolution, so the lag does too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};

/// Label set of per-partition metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: i32,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Label set of per-table producer metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

/// Label set of per-table, per-operation counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableOpLabel {
    pub table: String,
    /// `c`, `u`, `d`, `r` (snapshot read) or `tombstone`.
    pub op: String,
}

/// The producer process's registry: one set of metric families, a `table` label per captured
/// table.
#[derive(Debug)]
pub struct ProducerRegistry {
    registry: Registry,
    events: Family<TableOpLabel, Counter>,
    in_flight: Family<TableLabel, Gauge>,
    reconnects: Family<TableLabel, Counter>,
    active: Family<TableLabel, Gauge>,
    snapshot_rows_done: Family<TableLabel, Gauge>,
    snapshot_rows_total: Family<TableLabel, Gauge>,
    lag_ms: Family<TableLabel, Gauge>,
    checkpoint_age_s: Family<TableLabel, Gauge<f64, AtomicU64>>,
    checkpoint_file_seq: Family<TableLabel, Gauge>,
    checkpoint_pos: Family<TableLabel, Gauge>,
    commit_seconds: Family<TableLabel, Histogram, fn() -> Histogram>,
    tables: std::sync::Mutex<Vec<Arc<ProducerMetrics>>>,
}

fn commit_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Default for ProducerRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl ProducerRegistry {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rtis");
        let r = Self {
            registry: Registry::default(),
            events: Family::default(),
            in_flight: Family::default(),
            reconnects: Family::default(),
            active: Family::default(),
            snapshot_rows_done: Family::default(),
            snapshot_rows_total: Family::default(),
            lag_ms: Family::default(),
            checkpoint_age_s: Family::default(),
            checkpoint_file_seq: Family::default(),
            checkpoint_pos: Family::default(),
            commit_seconds: Family::new_with_constructor(commit_histogram as fn() -> Histogram),
            tables: std::sync::Mutex::new(Vec::new()),
        };
        registry.register(
            "events",
            "Records acknowledged by the broker, per table and operation (c, u, d, r = snapshot row, tombstone)",
            r.events.clone(),
        );
        registry.register(
            "records_in_flight",
            "Records handed to the Kafka client and not yet acknowledged",
            r.in_flight.clone(),
        );
        registry.register(
            "reconnects",
            "Sessions restarted after a transient error (lost connection, broker timeout)",
            r.reconnects.clone(),
        );
        registry.register(
            "active",
            "1 while this process holds the connector's active role and writes its topic; 0 while it stands by (--standby) or starts",
            r.active.clone(),
        );
        registry.register(
            "snapshot_rows_done",
            "Snapshot rows read and handed to the broker",
            r.snapshot_rows_done.clone(),
        );
        registry.register(
            "snapshot_rows_total",
            "Rows the running snapshot selects (counted when it started or resumed)",
            r.snapshot_rows_total.clone(),
        );
        registry.register(
            "lag_milliseconds",
            "Milliseconds behind the source: now minus the commit time of the last acknowledged transaction; 0 when idle and caught up (heartbeats)",
            r.lag_ms.clone(),
        );
        registry.register(
            "checkpoint_age_seconds",
            "Seconds since the checkpoint was last written to SQLite",
            r.checkpoint_age_s.clone(),
        );
        registry.register(
            "checkpoint_binlog_file_seq",
            "Numeric suffix of the checkpointed binlog file",
            r.checkpoint_file_seq.clone(),
        );
        registry.register(
            "checkpoint_binlog_pos",
            "Byte offset of the checkpointed binlog position",
            r.checkpoint_pos.clone(),
        );
        registry.register(
            "transaction_commit_seconds",
            "Time to commit one Kafka transaction (records and checkpoint), from the commit request to the broker's answer",
            r.commit_seconds.clone(),
        );
        Self { registry, ..r }
    }

    /// The metrics of one table (created on first use).
    pub fn table(&self, table: &str) -> Arc<ProducerMetrics> {
        let mut tables = self.tables.lock().unwrap();
        if let Some(m) = tables.iter().find(|m| m.table == table) {
            return m.clone();
        }
        let l = TableLabel {
            table: table.to_string(),
        };
        let m = Arc::new(ProducerMetrics {
            table: table.to_string(),
            events: self.events.clone(),
            in_flight: self.in_flight.get_or_create(&l).clone(),
            reconnects: self.reconnects.get_or_create(&l).clone(),
            active: self.active.get_or_create(&l).clone(),
            snapshot_rows_done: self.snapshot_rows_done.get_or_create(&l).clone(),
            snapshot_rows_total: self.snapshot_rows_total.get_or_create(&l).clone(),
            lag_ms: self.lag_ms.get_or_create(&l).clone(),
            checkpoint_age_s: self.checkpoint_age_s.get_or_create(&l).clone(),
            checkpoint_file_seq: self.checkpoint_file_seq.get_or_create(&l).clone(),
            checkpoint_pos: self.checkpoint_pos.get_or_create(&l).clone(),
            commit_seconds: self.commit_seconds.get_or_create(&l).clone(),
            last_acked_commit_ms: AtomicI64::new(0),
            last_contact_ms: AtomicI64::new(0),
            checkpoint_written_ms: AtomicI64::new(0),
            caught_up: AtomicBool::new(false),
            heartbeat_ms: AtomicI64::new(2_000),
        });
        tables.push(m.clone());
        m
    }

    pub fn encode(&self) -> String {
        let now = now_ms();
        for m in self.tables.lock().unwrap().iter() {
            m.refresh(now);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String");
        out
    }
}

/// One table's producer metrics. Cheap to update from any thread.
#[derive(Debug)]
pub struct ProducerMetrics {
    table: String,
    events: Family<TableOpLabel, Counter>,
    in_flight: Gauge,
    reconnects: Counter,
    active: Gauge,
    snapshot_rows_done: Gauge,
    snapshot_rows_total: Gauge,
    lag_ms: Gauge,
    checkpoint_age_s: Gauge<f64, AtomicU64>,
    checkpoint_file_seq: Gauge,
    checkpoint_pos: Gauge,
    commit_seconds: Histogram,
    last_acked_commit_ms: AtomicI64,
    last_contact_ms: AtomicI64,
    checkpoint_written_ms: AtomicI64,
    caught_up: AtomicBool,
    heartbeat_ms: AtomicI64,
}

impl Default for ProducerMetrics {
    /// Metrics of an unregistered table (nothing serves them).
    fn default() -> Self {
        let r = ProducerRegistry::new();
        let m = r.table("-");
        drop(r);
        Arc::try_unwrap(m).expect("sole owner")
    }
}

impl ProducerMetrics {
    pub fn set_heartbeat(&self, hb: std::time::Duration) {
        self.heartbeat_ms
            .store(hb.as_millis() as i64, Ordering::Relaxed);
    }

    /// A Kafka transaction committed after `took`.
    pub fn transaction_committed(&self, took: std::time::Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// A record was handed to the Kafka client.
    pub fn sent(&self) {
        self.in_flight.inc();
    }

    /// A record was acknowledged (`ok`) or failed.
    pub fn acked(&self, op: &'static str, ok: bool) {
        self.in_flight.dec();
        if ok {
            self.events
                .get_or_create(&TableOpLabel {
                    table: self.table.clone(),
                    op: op.into(),
                })
                .inc();
        }
    }

    /// A session starts: nothing is in flight any more (the old client is gone).
    pub fn session_started(&self) {
        self.in_flight.set(0);
    }

    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// This process holds (or gave up) the connector's active role.
    pub fn set_active(&self, active: bool) {
        self.active.set(active as i64);
    }

    /// Every transaction whose records were acknowledged, with its binlog commit time.
    pub fn committed(&self, commit_ts_ms: i64) {
        if commit_ts_ms > 0 {
            self.last_acked_commit_ms
                .store(commit_ts_ms, Ordering::Relaxed);
        }
    }

    /// Something arrived from the source; `heartbeat`: it was a heartbeat (nothing new).
    pub fn contact(&self, heartbeat: bool) {
        self.last_contact_ms.store(now_ms(), Ordering::Relaxed);
        self.caught_up.store(heartbeat, Ordering::Relaxed);
    }

    pub fn snapshot_progress(&self, done: u64, total: u64) {
        self.snapshot_rows_done.set(done as i64);
        self.snapshot_rows_total.set(total.max(done) as i64);
    }

    /// The checkpoint writer stored `pos`.
    pub fn checkpoint_written(&self, pos: &crate::position::BinlogPosition) {
        self.checkpoint_written_ms
            .store(now_ms(), Ordering::Relaxed);
        self.checkpoint_file_seq.set(pos.file_seq() as i64);
        self.checkpoint_pos.set(pos.pos as i64);
    }

    /// Current lag in ms, following the rule in the module docs.
    pub fn lag_ms(&self, now: i64) -> i64 {
        let alive = now - self.last_contact_ms.load(Ordering::Relaxed)
            < 3 * self.heartbeat_ms.load(Ordering::Relaxed);
        if self.caught_up.load(Ordering::Relaxed) && alive && self.in_flight.get() == 0 {
            return 0;
        }
        match self.last_acked_commit_ms.load(Ordering::Relaxed) {
            0 => 0,
            t => (now - t).max(0),
        }
    }

    /// Sets the gauges that depend on the time of the scrape.
    fn refresh(&self, now: i64) {
        self.lag_ms.set(self.lag_ms(now));
        let written = self.checkpoint_written_ms.load(Ordering::Relaxed);
        self.checkpoint_age_s.set(if written == 0 {
            0.0
        } else {
            (now - written) as f64 / 1000.0
        });
    }
}

/// The consumer's metrics.
#[derive(Debug)]
pub struct ConsumerMetrics {
    registry: Registry,
    written: Family<PartitionLabel, Counter>,
    dead_letters: Family<PartitionLabel, Counter>,
    lag: Family<PartitionLabel, Gauge>,
}

impl Default for ConsumerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsumerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rtis_consumer");
        let written = Family::<PartitionLabel, Counter>::default();
        let dead_letters = Family::<PartitionLabel, Counter>::default();
        let lag = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "records_written",
            "Records written and fsynced to the partition's JSON-lines file",
            written.clone(),
        );
        registry.register(
            "dead_letters",
            "Undecodable records written to the partition's dead-letter file",
            dead_letters.clone(),
        );
        registry.register(
            "lag_records",
            "Records in the partition not yet written: high watermark minus next offset (refreshed every few seconds)",
            lag.clone(),
        );
        Self {
            registry,
            written,
            dead_letters,
            lag,
        }
    }

    pub fn written(&self, partition: i32, n: u64) {
        self.written
            .get_or_create(&PartitionLabel { partition })
            .inc_by(n);
    }

    pub fn dead_lettered(&self, partition: i32, n: u64) {
        self.dead_letters
            .get_or_create(&PartitionLabel { partition })
            .inc_by(n);
    }

    pub fn set_lag(&self, partition: i32, lag: i64) {
        self.lag
            .get_or_create(&PartitionLabel { partition })
            .set(lag.max(0));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String");
        out
    }
}

/// The `/metrics` endpoint of a running binary; stops serving when dropped.
pub struct MetricsServer(tokio::task::JoinHandle<()>);

impl MetricsServer {
    /// Stops serving and returns once the listener is closed, so the port is free again (an
    /// in-process restart on the same `--metrics-addr` can bind it at once).
    pub async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

impl Drop for MetricsServer {
    /// On an early return: stop serving (the port is released when the runtime drops the task).
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `render()` at `--metrics-addr` when one is set. The address is bound before anything
/// else starts, so a taken port fails fast.
pub async fn start<F>(addr: Option<&str>, render: F) -> Result<Option<MetricsServer>>
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = bind(addr).await?;
    tracing::info!(addr = %addr, "serving Prometheus metrics at /metrics");
    Ok(Some(MetricsServer(tokio::spawn(serve(listener, render)))))
}

/// Binds `--metrics-addr`.
async fn bind(addr: &str) -> Result<tokio::net::TcpListener> {
    let parsed: SocketAddr = addr.parse().map_err(|_| {
        Error::Config(format!(
            "--metrics-addr: expected HOST:PORT with an IP address (e.g. 127.0.0.1:9187), found {addr:?}"
        ))
    })?;
    tokio::net::TcpListener::bind(parsed).await.map_err(|e| {
        Error::Config(format!(
            "--metrics-addr: cannot listen on {addr}: {e} (is another process using the port?)"
        ))
    })
}

/// Serves `GET /metrics` with `render()`'s output until the task is aborted.
async fn serve<F>(listener: tokio::net::TcpListener, render: F)
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut req = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            // read the request head (bounded: 8 KiB, 5 s)
            let head = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => {
                            req.extend_from_slice(&buf[..n]);
                            if req.windows(4).any(|w| w == b"\r\n\r\n") || req.len() > 8192 {
                                return true;
                            }
                        }
                    }
                }
            })
            .await;
            if head != Ok(true) {
                return;
            }
            let line = String::from_utf8_lossy(&req);
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, ctype, body) =
                if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
                    (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        render(),
                    )
                } else {
                    (
                        "404 Not Found",
                        "text/plain; charset=utf-8",
                        "rtis serves GET /metrics only\n".to_string(),
                    )
                };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_zero_only_when_caught_up_alive_and_drained() {
        let m = ProducerMetrics::default();
        m.set_heartbeat(std::time::Duration::from_secs(1));
        let now = now_ms();
        assert_eq!(m.lag_ms(now), 0, "nothing committed yet");
        m.committed(now - 5_000);
        m.contact(false);
        assert!(m.lag_ms(now) >= 4_900, "behind by the last commit's age");
        m.contact(true);
        assert_eq!(
            m.lag_ms(now_ms()),
            0,
            "heartbeat after the last event: caught up"
        );
        m.sent();
        assert!(
            m.lag_ms(now_ms()) > 0,
            "a record in flight is not caught up"
        );
        m.acked("c", true);
        assert_eq!(m.lag_ms(now_ms()), 0);
        // the stream went silent for more than three heartbeats
        assert!(m.lag_ms(now_ms() + 10_000) >= 14_000);
    }

    #[test]
    fn encodes_counters_per_table_and_op() {
        let r = ProducerRegistry::new();
        let m = r.table("product");
        m.sent();
        m.acked("u", true);
        m.sent();
        m.acked("u", false);
        r.table("order_line").sent();
        assert!(Arc::ptr_eq(&m, &r.table("product")));
        let text = r.encode();
        assert!(
            text.contains("rtis_events_total{table=\"product\",op=\"u\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rtis_records_in_flight{table=\"product\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("rtis_records_in_flight{table=\"order_line\"} 1"),
            "{text}"
        );
        let c = ConsumerMetrics::new();
        c.written(2, 5);
        c.set_lag(2, 7);
        let text = c.encode();
        assert!(
            text.contains("rtis_consumer_records_written_total{partition=\"2\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("rtis_consumer_lag_records{partition=\"2\"} 7"),
            "{text}"
        );
    }
}
