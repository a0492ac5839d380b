//! Errors grouped by the recovery they need.
//!
//! * transient ([`Error::is_transient`]): lost connections, broker timeouts — the producer
//!   reconnects with backoff and resumes from its last checkpoint (duplicates are skipped);
//! * definite: bad configuration, failed preflight, undecodable events, purged binlogs — the
//!   process stops with a message naming the setting, table, column or position.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, env var or config value is malformed.
    #[error("configuration: {0}")]
    Config(String),
    /// The source or the broker is not set up the way rtis needs.
    #[error("preflight: {0}")]
    Preflight(String),
    /// The table has a column or shape rtis cannot capture.
    #[error("schema: {0}")]
    Schema(String),
    /// MySQL/MariaDB client error.
    #[error("MySQL {context}: {source}")]
    Mysql {
        context: String,
        #[source]
        source: mysql_async::Error,
    },
    /// Kafka client error.
    #[error("Kafka {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The binlog stream broke or held something rtis cannot decode (position included).
    #[error("binlog at {position}: {msg}")]
    Binlog { position: String, msg: String },
    /// The binlog stream ended or stalled (connection lost, no heartbeat).
    #[error("binlog stream interrupted at {position}: {msg}")]
    StreamLost { position: String, msg: String },
    /// The binlog file rtis must resume from is gone from the server.
    #[error(
        "the checkpoint in {state} says to resume from {position}, but the server no longer has \
         that binlog file (purged; oldest is {oldest}). Changes in between are lost to the binlog. \
         Recover by restarting with `--snapshot when-needed` (re-selects rows changed since the \
         checkpoint; deletes in the gap are not seen), or move {state} aside to start over with a \
         full snapshot"
    )]
    BinlogPurged {
        state: String,
        position: String,
        oldest: String,
    },
    /// The SQLite checkpoint store.
    #[error("checkpoint store {path}: {msg}")]
    State { path: PathBuf, msg: String },
    /// Local file I/O.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// One of several captured tables failed (the others were stopped).
    #[error("table {table}: {inner}")]
    Table {
        table: String,
        #[source]
        inner: Box<Error>,
    },
    /// Broker acknowledgement failed for a record (after librdkafka's own retries).
    #[error("delivery to {topic} partition {partition} failed: {source}")]
    Delivery {
        topic: String,
        partition: i32,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A record was not acknowledged within `--delivery-timeout-ms` (the broker is down, paused
    /// or too slow). The session restarts from the checkpoint.
    #[error(
        "delivery to {topic} partition {partition} not acknowledged within {ms} ms ({record}): \
         the broker is down or too slow (--delivery-timeout-ms)"
    )]
    DeliveryTimeout {
        topic: String,
        partition: i32,
        record: String,
        ms: u64,
    },
    /// The broker could not be reached or did not answer in time (metadata, partition tails).
    /// At start this stops the producer; inside the reconnect loop it is retried.
    #[error("{0}")]
    BrokerUnavailable(String),
    /// The Schema Registry could not be reached or failed (`--format confluent`): retried like
    /// a broker outage; no record is sent without its registered schema.
    #[error("{0}")]
    RegistryUnavailable(String),
    /// A record exceeds the producer's (or the broker's) message size limit. Never dropped:
    /// the producer stops before the checkpoint passes it.
    #[error(
        "the record of {what} at binlog {position} (source position {record}) is {size} bytes, \
         larger than the message size limit ({limit}); rtis stops instead of dropping it, and the \
         checkpoint stays before it. Raise the limit with --kafka-option message.max.bytes=N (and \
         the topic's max.message.bytes / the broker's message.max.bytes), then restart"
    )]
    RecordTooLarge {
        what: String,
        position: String,
        record: String,
        size: usize,
        limit: String,
    },
    /// Another producer initialised this connector's transactional id: it owns the topic now.
    #[error(
        "fenced: another rtis-producer with connector name {connector:?} (Kafka transactional.id \
         {transactional_id}) started and took over topic {topic}; this one stops. Run one \
         producer per connector name (a supervisor restarts it when it dies)"
    )]
    Fenced {
        connector: String,
        transactional_id: String,
        topic: String,
    },
    /// The checkpoint belongs to a different source server than the one connected.
    #[error(
        "connector {connector:?}: its checkpoint ({position}) was taken on source server {checkpoint}, \
         but --mysql-url now reaches server {found}: binlog positions of one server mean nothing on \
         another (a failover, or a different server behind the same address). {recovery}"
    )]
    SourceChanged {
        connector: String,
        position: String,
        checkpoint: String,
        found: String,
        recovery: String,
    },
    /// The topic's last committed record was written by another connector or from another source.
    #[error(
        "topic {topic} partition {partition}: its last record (offset {offset}) was written by {found}, \
         not by this connector ({expected}). Positions of different writers or sources cannot be \
         compared, so resuming could skip or repeat changes. Give each connector a topic of its own \
         (--topic), or, if that record is this connector's under its former name, start with --name \
         set to it"
    )]
    ForeignWriter {
        topic: String,
        partition: i32,
        offset: i64,
        found: String,
        expected: String,
    },
}

impl Error {
    pub fn mysql(context: impl Into<String>, source: mysql_async::Error) -> Self {
        Error::Mysql {
            context: context.into(),
            source,
        }
    }

    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether reconnecting and resuming from the checkpoint may fix this.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Mysql { source, .. } => match source {
                mysql_async::Error::Io(_) => true,
                mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed) => true,
                // 1053 server shutdown in progress, 1927 connection killed (a restarting server)
                mysql_async::Error::Server(s) => matches!(s.code, 1053 | 1927),
                _ => false,
            },
            // a failed transactional call is retried by a new session with a new producer
            // instance (which aborts what this one left open), unless it was fenced
            Error::Kafka {
                source: rdkafka::error::KafkaError::Transaction(t),
                ..
            } => !matches!(
                t.code(),
                rdkafka::types::RDKafkaErrorCode::Fenced
                    | rdkafka::types::RDKafkaErrorCode::ProducerFenced
                    | rdkafka::types::RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                    | rdkafka::types::RDKafkaErrorCode::InvalidTransactionTimeout
            ),
            Error::Kafka { source, .. } | Error::Delivery { source, .. } => {
                use rdkafka::types::RDKafkaErrorCode as C;
                match source.rdkafka_error_code() {
                    Some(code) => matches!(
                        code,
                        C::MessageTimedOut
                            | C::RequestTimedOut
                            | C::BrokerTransportFailure
                            | C::AllBrokersDown
                            | C::NetworkException
                            | C::NotEnoughReplicas
                            | C::NotEnoughReplicasAfterAppend
                            | C::LeaderNotAvailable
                            | C::NotLeaderForPartition
                            | C::OperationTimedOut
                            | C::Resolve
                            | C::QueueFull
                            // the idempotent producer lost its sequence state (e.g. a restarted
                            // broker): a new session starts a new producer and resumes from the
                            // checkpoint, skipping what the partitions already hold
                            | C::Fatal
                            | C::OutOfOrderSequenceNumber
                            | C::UnknownProducerId
                            | C::InvalidProducerEpoch
                            | C::InvalidProducerIdMapping
                            | C::PurgeQueue
                            | C::PurgeInflight
                            | C::CoordinatorNotAvailable
                            | C::NotCoordinator
                            | C::CoordinatorLoadInProgress
                            | C::ConcurrentTransactions
                            | C::State
                    ),
                    None => false,
                }
            }
            Error::StreamLost { .. }
            | Error::BrokerUnavailable(_)
            | Error::RegistryUnavailable(_)
            | Error::DeliveryTimeout { .. } => true,
            Error::Table { inner, .. } => inner.is_transient(),
            _ => false,
        }
    }
}

/// Formats an error with its whole cause chain on one line (for logs and exit messages).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as C;

    fn delivery(code: C) -> Error {
        Error::Delivery {
            topic: "t".into(),
            partition: 0,
            source: KafkaError::MessageProduction(code),
        }
    }

    #[test]
    fn outages_are_retried_and_refusals_are_not() {
        assert!(Error::BrokerUnavailable("down".into()).is_transient());
        assert!(Error::DeliveryTimeout {
            topic: "t".into(),
            partition: 1,
            record: "r".into(),
            ms: 3000
        }
        .is_transient());
        assert!(delivery(C::MessageTimedOut).is_transient());
        assert!(delivery(C::Fatal).is_transient());
        // a record the broker refuses for its size is refused again after a reconnect
        assert!(!delivery(C::MessageSizeTooLarge).is_transient());
        let big = Error::RecordTooLarge {
            what: "`shop`.`product`".into(),
            position: "mariadb-bin.000001:4242".into(),
            record: "1:4242:0:0".into(),
            size: 30_110,
            limit: "message.max.bytes=20000".into(),
        };
        assert!(!big.is_transient());
        let msg = big.to_string();
        for part in [
            "`shop`.`product`",
            "mariadb-bin.000001:4242",
            "30110 bytes",
            "message.max.bytes=20000",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
    }
}
