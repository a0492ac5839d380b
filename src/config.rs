//! Configuration. The doc comments on these fields are the user documentation: they are what
//! `--help` prints, and the README's option tables are copied from that output.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use rdkafka::ClientConfig;

use crate::error::{Error, Result};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// What to do about rows that exist before streaming starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum SnapshotMode {
    /// Snapshot when there is no checkpoint yet, then stream; with a checkpoint, stream.
    #[default]
    Initial,
    /// Backfill rows with `last_updated >= --since` (default: all rows) once, then exit 0.
    SnapshotOnly,
    /// Never snapshot: stream from the checkpoint, or from the current end of the binlog.
    Never,
    /// Like `initial`, and also when the checkpointed binlog file was purged: re-select rows with
    /// `last_updated >=` the checkpointed time minus a safety margin, then stream. Deletes made
    /// while the binlog was lost cannot be seen this way.
    WhenNeeded,
}

/// Settings of `rtis-producer`.
#[derive(Debug, Clone, Args)]
pub struct ProducerConfig {
    /// Source database: mysql://USER[:PASSWORD]@HOST:PORT/DB. Prefer RTIS_MYSQL_PASSWORD for the
    /// password. TLS: append `?require_ssl=true` (and `&verify_ca=false` for self-signed certs).
    #[arg(long, env = "RTIS_MYSQL_URL", hide_env_values = true)]
    pub mysql_url: String,

    /// Password for the source database (overrides one in the URL). Never logged.
    #[arg(long, env = "RTIS_MYSQL_PASSWORD", hide_env_values = true, hide = true)]
    pub mysql_password: Option<String>,

    /// Table to capture, in the URL's database.
    #[arg(long, env = "RTIS_TABLE", default_value = "product")]
    pub table: String,

    /// Column holding the row's last-change time; its highest acknowledged value is checkpointed.
    #[arg(long, env = "RTIS_TIMESTAMP_COLUMN", default_value = "last_updated")]
    pub timestamp_column: String,

    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "RTIS_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Topic the change records go to. Writer schemas go to `<topic>-schemas`.
    #[arg(long, env = "RTIS_TOPIC", default_value = "product_updates")]
    pub topic: String,

    /// Create the topic with this many partitions if it does not exist. Without it, a missing
    /// topic is an error.
    #[arg(long, env = "RTIS_PARTITIONS")]
    pub partitions: Option<i32>,

    /// SQLite checkpoint file. Locked while a producer runs: one producer per file.
    #[arg(long, env = "RTIS_STATE", default_value = "state/rtis.sqlite")]
    pub state: PathBuf,

    /// Replica server id this connector registers with. Must differ from every other replica
    /// and connector of the same source.
    #[arg(long, env = "RTIS_SERVER_ID", default_value_t = 5400)]
    pub server_id: u32,

    /// Heartbeat period asked from the source while the binlog is idle; a stream silent for
    /// three periods is reconnected.
    #[arg(long, env = "RTIS_HEARTBEAT_SECS", default_value_t = 2)]
    pub heartbeat_secs: u64,

    /// How long the broker may take to acknowledge a record before the session is restarted
    /// from the last checkpoint. Enforced by rtis, not by librdkafka's `message.timeout.ms`
    /// (a record timed out inside librdkafka can leave a gap that later records fill).
    #[arg(long, env = "RTIS_DELIVERY_TIMEOUT_MS", default_value_t = 30_000)]
    pub delivery_timeout_ms: u64,

    /// Stop instead of reconnecting after this many consecutive failed sessions (0 = never stop).
    #[arg(long, env = "RTIS_MAX_RETRIES", default_value_t = 0)]
    pub max_retries: u32,

    /// Extra librdkafka setting KEY=VALUE, repeatable (e.g. security.protocol=ssl,
    /// ssl.ca.location=/etc/ca.pem, sasl.mechanism=SCRAM-SHA-512).
    #[arg(
        long = "kafka-option",
        env = "RTIS_KAFKA_OPTIONS",
        value_delimiter = ';'
    )]
    pub kafka_options: Vec<String>,

    /// Records in flight between the binlog reader and the broker (backpressure bound).
    #[arg(long, env = "RTIS_MAX_IN_FLIGHT", default_value_t = 20_000)]
    pub max_in_flight: usize,

    /// Snapshot mode: initial, snapshot-only, never, when-needed.
    #[arg(long, env = "RTIS_SNAPSHOT", value_enum, default_value_t = SnapshotMode::Initial)]
    pub snapshot: SnapshotMode,

    /// With `--snapshot snapshot-only`: select rows with `last_updated >=` this UTC time
    /// (`YYYY-MM-DD HH:MM:SS[.ffffff]`). Default: all rows.
    #[arg(long, env = "RTIS_SINCE")]
    pub since: Option<String>,

    /// Rows per snapshot chunk (one keyset-paginated SELECT, one checkpoint).
    #[arg(long, env = "RTIS_SNAPSHOT_CHUNK", default_value_t = 5_000)]
    pub snapshot_chunk: u64,

    /// Upper bound on snapshot rows read per second, to spare the source (0 = no limit).
    #[arg(long, env = "RTIS_SNAPSHOT_MAX_ROWS_PER_SEC", default_value_t = 0)]
    pub snapshot_max_rows_per_sec: u64,

    /// Log format.
    #[arg(long, env = "RTIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Settings of `rtis-consumer`.
#[derive(Debug, Clone, Args)]
pub struct ConsumerConfig {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "RTIS_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Topic to read change records from.
    #[arg(long, env = "RTIS_TOPIC", default_value = "product_updates")]
    pub topic: String,

    /// Consumer group. Consumers of one group share the partitions.
    #[arg(long, env = "RTIS_GROUP", default_value = "rtis-consumer")]
    pub group: String,

    /// Directory of the JSON-lines files (`<topic>-<partition>.jsonl`).
    #[arg(long, env = "RTIS_OUT_DIR", default_value = "state/out")]
    pub out_dir: PathBuf,

    /// Extra librdkafka setting KEY=VALUE, repeatable.
    #[arg(
        long = "kafka-option",
        env = "RTIS_KAFKA_OPTIONS",
        value_delimiter = ';'
    )]
    pub kafka_options: Vec<String>,

    /// Log format.
    #[arg(long, env = "RTIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl ProducerConfig {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1))
    }

    /// Checks values that clap cannot.
    pub fn validate(&self) -> Result<()> {
        if let Some(p) = self.partitions {
            if p < 1 {
                return Err(Error::Config(format!(
                    "--partitions: expected a positive number of partitions, found {p}"
                )));
            }
        }
        if self.server_id == 0 {
            return Err(Error::Config(
                "--server-id: expected a non-zero replica id, found 0".into(),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(Error::Config(
                "--max-in-flight: expected at least 1, found 0".into(),
            ));
        }
        if self.topic.is_empty() {
            return Err(Error::Config(
                "--topic: expected a topic name, found an empty string".into(),
            ));
        }
        parse_kafka_options(&self.kafka_options)?;
        if self.snapshot_chunk == 0 {
            return Err(Error::Config(
                "--snapshot-chunk: expected at least 1 row, found 0".into(),
            ));
        }
        self.since_us()?;
        Ok(())
    }

    /// `--since` in µs since the epoch.
    pub fn since_us(&self) -> Result<Option<i64>> {
        let Some(s) = self.since.as_deref() else {
            return Ok(None);
        };
        let col = crate::schema::ColumnSpec {
            name: "--since".into(),
            kind: crate::schema::ColumnKind::Timestamp,
            nullable: false,
        };
        match crate::value::convert(&col, mysql_async::Value::Bytes(s.as_bytes().to_vec())) {
            Ok(crate::value::Datum::TimestampMicros(t)) if s.contains('-') => Ok(Some(t)),
            _ => Err(Error::Config(format!(
                "--since: expected a UTC time YYYY-MM-DD HH:MM:SS[.ffffff], found {s:?}"
            ))),
        }
    }
}

/// Parses KEY=VALUE pairs.
pub fn parse_kafka_options(opts: &[String]) -> Result<Vec<(String, String)>> {
    opts.iter()
        .filter(|o| !o.trim().is_empty())
        .map(|o| {
            o.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    Error::Config(format!("--kafka-option: expected KEY=VALUE, found {o:?}"))
                })
        })
        .collect()
}

/// The one translator into librdkafka's configuration: our defaults, then the user's options.
pub fn kafka_client_config(brokers: &str, extra: &[String]) -> Result<ClientConfig> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        // Never try ::1 for a broker advertised on an IPv4 literal.
        .set("broker.address.family", "v4")
        .set("socket.keepalive.enable", "true");
    for (k, v) in parse_kafka_options(extra)? {
        cfg.set(k, v);
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_options_must_be_key_value() {
        assert_eq!(
            parse_kafka_options(&["a=b".into(), " c = d=e ".into()]).unwrap(),
            vec![("a".into(), "b".into()), ("c".into(), "d=e".into())]
        );
        let e = parse_kafka_options(&["novalue".into()]).unwrap_err();
        assert!(e.to_string().contains("--kafka-option"), "{e}");
        assert!(parse_kafka_options(&["=x".into()]).is_err());
    }
}
