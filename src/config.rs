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

/// How records are written to the topic (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Avro with single-object encoding (`C3 01`, 8-byte schema fingerprint, body); writer
    /// schemas in `<topic>-schemas`, committed with the records. Needs nothing but Kafka.
    #[default]
    Avro,
    /// Avro in the Confluent wire format (byte 0, 4-byte schema id, body); schemas registered in
    /// a Schema Registry (`--schema-registry-url`) under `<topic>-key` and `<topic>-value`. What
    /// Confluent's deserializers, Kafka Connect, ksqlDB and Flink read.
    Confluent,
    /// JSON: the key and a Debezium-style envelope (`op`, `before`, `after`, `source`, `ts_ms`)
    /// as plain JSON objects, rendered like rtis-consumer's output. No schemas.
    Json,
}

/// Where the Schema Registry is (for `--format confluent`, and for the consumer reading it).
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryArgs {
    /// Schema Registry URL (Confluent API), e.g. http://registry:8081 or, for Apicurio,
    /// http://apicurio:8080/apis/ccompat/v7. Required by `--format confluent`, and by the consumer
    /// to read such records. Basic-auth
    /// credentials may be given in it (https://USER:PASSWORD@host) or below.
    #[arg(long, env = "RTIS_SCHEMA_REGISTRY_URL", hide_env_values = true)]
    pub schema_registry_url: Option<String>,

    /// Schema Registry basic-auth user.
    #[arg(long, env = "RTIS_SCHEMA_REGISTRY_USER")]
    pub schema_registry_user: Option<String>,

    /// Schema Registry basic-auth password. Prefer the env var. Never logged.
    #[arg(long, env = "RTIS_SCHEMA_REGISTRY_PASSWORD", hide_env_values = true)]
    pub schema_registry_password: Option<String>,

    /// PEM file with the CA certificate(s) of the registry's TLS certificate (default: the
    /// system's trusted roots).
    #[arg(long, env = "RTIS_SCHEMA_REGISTRY_CA")]
    pub schema_registry_ca: Option<PathBuf>,
}

impl RegistryArgs {
    /// The registry settings, when a URL is given.
    pub fn settings(&self) -> Option<crate::registry::RegistrySettings> {
        self.schema_registry_url
            .as_ref()
            .map(|url| crate::registry::RegistrySettings {
                url: url.clone(),
                user: self.schema_registry_user.clone(),
                password: self.schema_registry_password.clone(),
                ca: self.schema_registry_ca.clone(),
            })
    }

    /// A client for the registry, when a URL is given.
    pub fn client(&self) -> Result<Option<std::sync::Arc<crate::registry::Registry>>> {
        self.settings()
            .map(|s| {
                crate::registry::Registry::new(&s)
                    .map(std::sync::Arc::new)
                    .map_err(|e| Error::Config(e.to_string()))
            })
            .transpose()
    }
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

    /// Table(s) to capture, in the URL's database: one name, or several separated by commas
    /// (`product,order_line`). Each table gets its own topic, checkpoint and replication
    /// connection (see `--topic`, `--state`, `--server-id`), with the same guarantees.
    #[arg(long, env = "RTIS_TABLE", default_value = "product")]
    pub table: String,

    /// Column holding the row's last-change time; its highest acknowledged value is checkpointed.
    #[arg(long, env = "RTIS_TIMESTAMP_COLUMN", default_value = "last_updated")]
    pub timestamp_column: String,

    /// What a zero date (`0000-00-00`, or a zero month or day, which a permissive `sql_mode`
    /// allows) in a DATE, DATETIME or TIMESTAMP column becomes: `error` stops with the column and
    /// position named; `null` emits NULL (those Avro fields are then nullable, even for NOT NULL
    /// columns). Never a made-up date such as 1970-01-01.
    #[arg(long, env = "RTIS_ZERO_DATES", value_enum, default_value_t = crate::schema::ZeroDates::Error)]
    pub zero_dates: crate::schema::ZeroDates,

    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "RTIS_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Record format: avro (single-object encoding, schemas in `<topic>-schemas`; needs only
    /// Kafka), confluent (Confluent wire format with a Schema Registry), json (no schemas).
    #[arg(long, env = "RTIS_FORMAT", value_enum, default_value_t = Format::Avro)]
    pub format: Format,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Topic the change records go to; `{table}` is replaced by the table's name (needed with
    /// several tables). With `--format avro`, writer schemas go to `<topic>-schemas`.
    #[arg(long, env = "RTIS_TOPIC", default_value = "{table}_updates")]
    pub topic: String,

    /// Create the topic with this many partitions if it does not exist. Without it, a missing
    /// topic is an error.
    #[arg(long, env = "RTIS_PARTITIONS")]
    pub partitions: Option<i32>,

    /// Replicas per partition of the topics rtis creates (the change topic, `<topic>-schemas`,
    /// `<topic>-checkpoints`). Default: min(3, brokers in the cluster).
    #[arg(long, env = "RTIS_REPLICATION_FACTOR")]
    pub replication_factor: Option<i32>,

    /// `min.insync.replicas` of the topics rtis creates: with acks=all a write succeeds once
    /// this many replicas have it. Default: 2 with three or more replicas, else 1.
    #[arg(long, env = "RTIS_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<i32>,

    /// Run as one of several producers of this connector (same `--name`, topic and source, on
    /// other machines): one is active, the others wait and take over within seconds when it
    /// dies (a Kafka consumer group, `rtis-standby-<name>`, elects it; fencing keeps it exactly
    /// once). Each instance may have its own `--state`: the topic holds the checkpoint.
    #[arg(long, env = "RTIS_STANDBY")]
    pub standby: bool,

    /// Connector name: identifies this connector's records (header `rtis.writer`), its
    /// checkpoint in `<topic>-checkpoints` and its Kafka `transactional.id` (`rtis-<name>`),
    /// which fences any earlier producer of the same name. Keep it stable across restarts
    /// and machines. Default: the topic's name (one connector per topic).
    #[arg(long, env = "RTIS_NAME")]
    pub name: Option<String>,

    /// SQLite checkpoint file. Locked while a producer runs: one producer per file. With several
    /// tables, each has its own file: `{table}` in the path is replaced by the table's name,
    /// otherwise `.<table>` is inserted before the extension (`state/rtis.product.sqlite`).
    #[arg(long, env = "RTIS_STATE", default_value = "state/rtis.sqlite")]
    pub state: PathBuf,

    /// Replica server id this connector registers with. Must differ from every other replica
    /// and connector of the same source. With several tables, the n-th table (from 0) uses
    /// this id + n.
    #[arg(long, env = "RTIS_SERVER_ID", default_value_t = 5400)]
    pub server_id: u32,

    /// Heartbeat period asked from the source while the binlog is idle; a stream silent for
    /// three periods is reconnected.
    #[arg(long, env = "RTIS_HEARTBEAT_SECS", default_value_t = 2)]
    pub heartbeat_secs: u64,

    /// How long the broker may take to acknowledge a record before the session is restarted
    /// from the last committed checkpoint (also librdkafka's `message.timeout.ms`). The
    /// timed-out transaction is aborted and its records never become visible.
    #[arg(long, env = "RTIS_DELIVERY_TIMEOUT_MS", default_value_t = 30_000)]
    pub delivery_timeout_ms: u64,

    /// Stop instead of reconnecting after this many consecutive failed sessions (0 = never stop).
    #[arg(long, env = "RTIS_MAX_RETRIES", default_value_t = 0)]
    pub max_retries: u32,

    /// Extra librdkafka setting KEY=VALUE, repeatable (e.g. security.protocol=ssl,
    /// ssl.ca.location=/etc/ca.pem, sasl.mechanism=SCRAM-SHA-512).
    #[arg(
        long = "kafka-option",
        value_name = "KEY=VALUE",
        env = "RTIS_KAFKA_OPTIONS",
        hide_env_values = true,
        value_delimiter = ';'
    )]
    pub kafka_options: Vec<String>,

    /// A source transaction with more records than this is committed to Kafka in parts (each
    /// with a checkpoint inside it), so no Kafka transaction grows without bound. Readers see
    /// the parts as they commit.
    #[arg(long, env = "RTIS_MAX_TRANSACTION_RECORDS", default_value_t = crate::sink::FORCE_RECORDS)]
    pub max_transaction_records: usize,

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

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9187). Off by default.
    #[arg(long, env = "RTIS_METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// TOML file with any of these settings (keys are the flag names, e.g. `mysql-url`,
    /// `brokers`, `kafka-option = ["k=v"]`). Flags and env vars override it; unknown keys are an
    /// error.
    #[arg(long = "config", env = "RTIS_CONFIG")]
    pub config_file: Option<PathBuf>,
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

    /// Where to look up the schema ids of Confluent-framed records (the consumer reads every
    /// format rtis writes, telling them apart by their first byte).
    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Consumer group. Consumers of one group share the partitions.
    #[arg(long, env = "RTIS_GROUP", default_value = "rtis-consumer")]
    pub group: String,

    /// Directory of the JSON-lines files (`<topic>-<partition>.jsonl`).
    #[arg(long, env = "RTIS_OUT_DIR", default_value = "state/out")]
    pub out_dir: PathBuf,

    /// Extra librdkafka setting KEY=VALUE, repeatable.
    #[arg(
        long = "kafka-option",
        value_name = "KEY=VALUE",
        env = "RTIS_KAFKA_OPTIONS",
        hide_env_values = true,
        value_delimiter = ';'
    )]
    pub kafka_options: Vec<String>,

    /// Log format.
    #[arg(long, env = "RTIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9188). Off by default.
    #[arg(long, env = "RTIS_METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// TOML file with any of these settings (keys are the flag names). Flags and env vars
    /// override it; unknown keys are an error.
    #[arg(long = "config", env = "RTIS_CONFIG")]
    pub config_file: Option<PathBuf>,
}

impl ProducerConfig {
    /// The table names of `--table`.
    pub fn tables(&self) -> Vec<String> {
        self.table
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// One configuration per table (topic, state file and server id resolved). A single table
    /// keeps `--state` as given.
    pub fn per_table(&self) -> Result<Vec<ProducerConfig>> {
        let tables = self.tables();
        if tables.is_empty() {
            return Err(Error::Config(
                "--table: expected a table name, found an empty list".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for t in &tables {
            if !seen.insert(t.to_ascii_lowercase()) {
                return Err(Error::Config(format!(
                    "--table: expected distinct tables, found {t} twice"
                )));
            }
        }
        let several = tables.len() > 1;
        if several && !self.topic.contains("{table}") {
            return Err(Error::Config(format!(
                "--topic: with several tables expected a pattern containing {{table}} (e.g. {{table}}_updates), found {:?}",
                self.topic
            )));
        }
        tables
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut c = self.clone();
                c.table = t.clone();
                c.topic = self.topic.replace("{table}", t);
                c.state = table_state_path(&self.state, t, several);
                c.name = self.name.as_ref().map(|n| {
                    if n.contains("{table}") {
                        n.replace("{table}", t)
                    } else if several {
                        format!("{n}.{t}")
                    } else {
                        n.clone()
                    }
                });
                c.server_id = self.server_id.checked_add(i as u32).ok_or_else(|| {
                    Error::Config(format!(
                        "--server-id: {} + {i} tables overflows a 32-bit id",
                        self.server_id
                    ))
                })?;
                Ok(c)
            })
            .collect()
    }

    /// The connector name (`--name`, default the topic).
    pub fn connector_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.topic.clone())
    }

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
        if self.max_transaction_records == 0 {
            return Err(Error::Config(
                "--max-transaction-records: expected at least 1, found 0".into(),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(Error::Config(
                "--max-in-flight: expected at least 1, found 0".into(),
            ));
        }
        if self.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(Error::Config(
                "--name: expected a connector name, found an empty string".into(),
            ));
        }
        if self.topic.is_empty() {
            return Err(Error::Config(
                "--topic: expected a topic name, found an empty string".into(),
            ));
        }
        parse_kafka_options(&self.kafka_options)?;
        self.per_table()?;
        if self.snapshot_chunk == 0 {
            return Err(Error::Config(
                "--snapshot-chunk: expected at least 1 row, found 0".into(),
            ));
        }
        self.since_us()?;
        if self.standby && self.snapshot == SnapshotMode::SnapshotOnly {
            return Err(Error::Config(
                "--standby: a one-time backfill (--snapshot snapshot-only) has nothing to take \
                 over; expected one of them, found both"
                    .into(),
            ));
        }
        match (self.format, &self.registry.schema_registry_url) {
            (Format::Confluent, None) => return Err(Error::Config(
                "--format confluent: expected --schema-registry-url (RTIS_SCHEMA_REGISTRY_URL) \
                     too, found none"
                    .into(),
            )),
            (Format::Avro | Format::Json, Some(_)) => {
                return Err(Error::Config(format!(
                    "--schema-registry-url: only used with --format confluent, found --format {}",
                    self.format.to_possible_value().expect("named").get_name()
                )))
            }
            _ => {}
        }
        self.registry.client()?;
        Ok(())
    }

    /// `--since` in µs since the epoch.
    pub fn since_us(&self) -> Result<Option<i64>> {
        let Some(s) = self.since.as_deref() else {
            return Ok(None);
        };
        let col =
            crate::schema::ColumnSpec::new("--since", crate::schema::ColumnKind::Timestamp, false);
        match crate::value::convert(&col, mysql_async::Value::Bytes(s.as_bytes().to_vec())) {
            Ok(crate::value::Datum::TimestampMicros(t)) if s.contains('-') => Ok(Some(t)),
            _ => Err(Error::Config(format!(
                "--since: expected a UTC time YYYY-MM-DD HH:MM:SS[.ffffff], found {s:?}"
            ))),
        }
    }
}

/// The state file of `table`: `{table}` replaced, or (with several tables) `.<table>` inserted
/// before the extension.
pub fn table_state_path(state: &std::path::Path, table: &str, several: bool) -> PathBuf {
    let text = state.to_string_lossy();
    if text.contains("{table}") {
        return PathBuf::from(text.replace("{table}", table));
    }
    if !several {
        return state.to_path_buf();
    }
    let stem = state
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rtis".into());
    let name = match state.extension() {
        Some(ext) => format!("{stem}.{table}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{table}"),
    };
    state.with_file_name(name)
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
        .set("socket.keepalive.enable", "true");
    for (k, v) in parse_kafka_options(extra)? {
        cfg.set(k, v);
    }
    Ok(cfg)
}

/// Why command-line parsing stopped.
#[derive(Debug)]
pub enum ParseError {
    /// clap's own outcome (bad flag, `--help`, `--version`): print it the clap way.
    Clap(clap::Error),
    /// The config file is missing, malformed or has unknown keys.
    Config(Error),
}

/// Parses `args` (program name first) into `T`, with the settings of a `--config` file (or
/// `RTIS_CONFIG`) as defaults: flags and env vars override the file, the file overrides the
/// built-in defaults.
pub fn try_parse_args<T: clap::Parser>(
    args: Vec<std::ffi::OsString>,
) -> std::result::Result<T, ParseError> {
    let cmd = apply_config_file(T::command(), &args).map_err(ParseError::Config)?;
    let matches = cmd.try_get_matches_from(args).map_err(ParseError::Clap)?;
    T::from_arg_matches(&matches).map_err(ParseError::Clap)
}

/// [`try_parse_args`] on the process's arguments; prints the error and exits on failure.
pub fn parse_args<T: clap::Parser>(bin: &str) -> T {
    match try_parse_args(std::env::args_os().collect()) {
        Ok(t) => t,
        Err(ParseError::Clap(e)) => e.exit(),
        Err(ParseError::Config(e)) => {
            eprintln!("{bin}: error: {e}");
            std::process::exit(2)
        }
    }
}

/// The `--config` path from the arguments, else from `RTIS_CONFIG`.
fn config_path(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("RTIS_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Makes every key of the TOML config file the default of the flag of the same name.
fn apply_config_file(mut cmd: clap::Command, args: &[std::ffi::OsString]) -> Result<clap::Command> {
    let Some(path) = config_path(args) else {
        return Ok(cmd);
    };
    let err = |msg: String| Error::Config(format!("--config {}: {msg}", path.display()));
    let text =
        std::fs::read_to_string(&path).map_err(|e| err(format!("cannot read the file: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| err(format!("not valid TOML: {e}")))?;
    let known: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|l| !matches!(l.as_str(), "config" | "help" | "version"))
        .collect();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        if !known.contains(&flag) {
            return Err(err(format!(
                "unknown key `{key}`; expected one of: {}",
                known.join(", ")
            )));
        }
        let scalar = |v: &toml::Value| -> Result<String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                toml::Value::Datetime(d) => Ok(d.to_string()),
                other => Err(err(format!(
                    "key `{key}`: expected a string, number or boolean, found {}",
                    other.type_str()
                ))),
            }
        };
        let values: Vec<String> = match &value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<_>>()?,
            v => vec![scalar(v)?],
        };
        let id = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()))
            .map(|a| a.get_id().clone())
            .expect("known flag");
        // a setting whose env value `--help` hides (it may hold a password) keeps its
        // config-file value out of `--help` too
        cmd = cmd.mut_arg(id, |a| {
            let secret = a.is_hide_env_values_set();
            a.default_values(values)
                .required(false)
                .hide_default_value(secret)
        });
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct P {
        #[command(flatten)]
        c: ProducerConfig,
    }

    fn parse(file: &str, flags: &[&str]) -> std::result::Result<ProducerConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rtis.toml");
        std::fs::write(&path, file).unwrap();
        let mut args: Vec<std::ffi::OsString> = vec!["rtis-producer".into()];
        args.push(format!("--config={}", path.display()).into());
        args.extend(flags.iter().map(Into::into));
        try_parse_args::<P>(args).map(|p| p.c).map_err(|e| match e {
            ParseError::Clap(e) => e.to_string(),
            ParseError::Config(e) => e.to_string(),
        })
    }

    #[test]
    fn config_file_sets_defaults_that_flags_override() {
        let c = parse(
            "mysql-url = \"mysql://rtis@db:3306/shop\"\ntopic = \"from_file\"\nbrokers = \"k1:9092\"\n\
             snapshot_chunk = 77\nsnapshot = \"never\"\nkafka-option = [\"a=b\", \"c=d\"]\n",
            &["--topic", "from_flag"],
        )
        .unwrap();
        assert_eq!(
            c.mysql_url, "mysql://rtis@db:3306/shop",
            "required flag from the file"
        );
        assert_eq!(c.topic, "from_flag", "a flag beats the file");
        assert_eq!(c.brokers, "k1:9092");
        assert_eq!(c.snapshot_chunk, 77, "snake_case keys work too");
        assert_eq!(c.snapshot, SnapshotMode::Never);
        assert_eq!(c.kafka_options, vec!["a=b".to_string(), "c=d".to_string()]);
        assert_eq!(c.table, "product", "built-in default when neither sets it");
    }

    #[test]
    fn help_never_shows_a_secret_from_the_config_file() {
        use clap::CommandFactory;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rtis.toml");
        std::fs::write(
            &path,
            "mysql-url = \"mysql://rtis:hunter2-url@db:3306/shop\"\n\
             kafka-option = [\"sasl.password=hunter2-sasl\"]\ntopic = \"from_file\"\n",
        )
        .unwrap();
        let args: Vec<std::ffi::OsString> = vec![
            "rtis-producer".into(),
            format!("--config={}", path.display()).into(),
        ];
        let mut cmd = apply_config_file(P::command(), &args).unwrap();
        let help = cmd.render_long_help().to_string();
        assert!(
            help.contains("from_file"),
            "a plain setting from the file shows as the default: {help}"
        );
        assert!(
            !help.contains("hunter2"),
            "a secret from the file leaked into --help: {help}"
        );
        // the values still apply
        let c = parse(&std::fs::read_to_string(&path).unwrap(), &[]).unwrap();
        assert!(c.mysql_url.contains("hunter2-url"));
        assert_eq!(
            c.kafka_options,
            vec!["sasl.password=hunter2-sasl".to_string()]
        );
    }

    #[test]
    fn several_tables_get_their_own_topic_state_and_server_id() {
        let one = parse("mysql-url = \"mysql://a@b/c\"\n", &[]).unwrap();
        let v = one.per_table().unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].topic, "product_updates",
            "the default topic of one table"
        );
        assert_eq!(v[0].state, std::path::PathBuf::from("state/rtis.sqlite"));
        let two = parse(
            "mysql-url = \"mysql://a@b/c\"\n",
            &["--table", "product, order_line", "--server-id", "100"],
        )
        .unwrap();
        let v = two.per_table().unwrap();
        let got: Vec<(&str, &str, String, u32)> = v
            .iter()
            .map(|c| {
                (
                    c.table.as_str(),
                    c.topic.as_str(),
                    c.state.display().to_string(),
                    c.server_id,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "product",
                    "product_updates",
                    "state/rtis.product.sqlite".into(),
                    100
                ),
                (
                    "order_line",
                    "order_line_updates",
                    "state/rtis.order_line.sqlite".into(),
                    101
                ),
            ]
        );
        let fixed = parse(
            "mysql-url = \"mysql://a@b/c\"\n",
            &["--table", "a,b", "--topic", "one_topic"],
        )
        .unwrap();
        let e = fixed.per_table().unwrap_err().to_string();
        assert!(e.contains("--topic") && e.contains("{table}"), "{e}");
        let dup = parse("mysql-url = \"mysql://a@b/c\"\n", &["--table", "a,A"]).unwrap();
        assert!(dup.per_table().unwrap_err().to_string().contains("twice"));
        assert_eq!(
            table_state_path(std::path::Path::new("/s/{table}/cp.db"), "t", false),
            std::path::PathBuf::from("/s/t/cp.db")
        );
    }

    #[test]
    fn config_file_errors_name_the_file_and_the_key() {
        let e = parse("mysql-url = \"x\"\nbrokerz = \"k\"\n", &[]).unwrap_err();
        assert!(
            e.contains("rtis.toml") && e.contains("unknown key `brokerz`") && e.contains("brokers"),
            "{e}"
        );
        let e = parse("mysql-url = ", &[]).unwrap_err();
        assert!(e.contains("not valid TOML"), "{e}");
        let e = parse("[mysql-url]\nx = 1\n", &[]).unwrap_err();
        assert!(
            e.contains("expected a string, number or boolean, found table"),
            "{e}"
        );
        let e = parse("snapshot-chunk = \"many\"\nmysql-url = \"x\"\n", &[]).unwrap_err();
        assert!(e.contains("many"), "a bad value is clap's error: {e}");
        let e = parse("topic = \"t\"\n", &[]).unwrap_err();
        assert!(
            e.contains("--mysql-url"),
            "still required when the file lacks it: {e}"
        );
    }

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
