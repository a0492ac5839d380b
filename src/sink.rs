//! The sink: records into Kafka transactions, one writer per connector, and the checkpoint
//! committed in the same transaction as the records it covers.
//!
//! Why this is exactly once on a replicated cluster, whatever is killed when:
//! * The producer's `transactional.id` is the connector's (`rtis-<name>`). Initialising it bumps
//!   the producer epoch: the broker fences every earlier producer of the connector (a killed
//!   session's batches still in flight, a zombie after a pause, a second instance) and aborts
//!   its open transaction. Its records then never become visible to `read_committed` readers.
//! * Every Kafka transaction ends with one record in `<topic>-checkpoints` (key: the connector
//!   name, value: [`Checkpoint::to_json`]): the source position just after what the transaction
//!   holds. Records and checkpoint commit together or not at all, so the last committed
//!   checkpoint names exactly what the topic holds — the topic is the checkpoint. A session
//!   resumes from it; there is nothing to skip and nothing to guess from partition tails.
//! * Transactions end at source-transaction boundaries (XID, COMMIT, DDL, a snapshot chunk),
//!   so readers see a source transaction whole. A source transaction too large for one Kafka
//!   transaction (`--max-transaction-records` records, [`FORCE_RECORDS`] by default, or
//!   [`FORCE_AGE`]) is committed in parts, each with a checkpoint that says how far into it the
//!   topic goes (`resume_after`).
//! * The SQLite state file is written after the commit, from the acknowledgement tracker; it
//!   lags the topic by at most the commit in flight and is only the fast path for `status`.
//!
//! Commit policy: at a boundary, commit when the open transaction is older than
//! [`COMMIT_AGE`] or holds [`COMMIT_RECORDS`] records, or as soon as the binlog has no event
//! ready ([`Sink::can_commit_idle`]): low latency when the source is quiet, large transactions
//! when it is busy. A boundary with no records (changes of other tables) is committed at most
//! every [`IDLE_CHECKPOINT_EVERY`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;

use crate::avro::WriterSchema;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::kafka;
use crate::position::SourcePos;

/// Commit at a boundary once the open transaction is this old.
pub const COMMIT_AGE: Duration = Duration::from_millis(100);
/// Commit at a boundary once the open transaction holds this many records.
pub const COMMIT_RECORDS: usize = 20_000;
/// Commit inside a source transaction once the open transaction is this old.
pub const FORCE_AGE: Duration = Duration::from_secs(5);
/// Commit inside a source transaction once the open transaction holds this many records
/// (default of `--max-transaction-records`).
pub const FORCE_RECORDS: usize = 200_000;
/// A checkpoint with no records behind it is committed at most this often.
pub const IDLE_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// What the acknowledgement tracker receives, in order.
pub enum Ack {
    Record {
        fut: rdkafka::producer::DeliveryFuture,
        partition: i32,
        /// `c`, `u`, `d`, `r` or `tombstone` (metrics).
        op: &'static str,
        /// The record's source position and size, named if the broker refuses it.
        pos: SourcePos,
        size: usize,
        /// When the session gives up waiting for the acknowledgement (`--delivery-timeout-ms`).
        deadline: tokio::time::Instant,
    },
    /// Every record queued before this is committed, and so is this checkpoint.
    Commit(Checkpoint),
}

/// The names a sink writes under.
#[derive(Debug, Clone)]
pub struct SinkNames {
    /// The connector (`--name`).
    pub connector: String,
    pub topic: String,
    /// `rtis.source` header value of every record.
    pub source: String,
    /// The source's binlog base name, to name positions in errors.
    pub binlog_base: Option<String>,
}

impl SinkNames {
    pub fn schema_topic(&self) -> String {
        format!("{}-schemas", self.topic)
    }
    pub fn checkpoint_topic(&self) -> String {
        checkpoint_topic(&self.topic)
    }
    pub fn transactional_id(&self) -> String {
        transactional_id(&self.connector)
    }
}

/// The fencing error, when `producer` was fenced by a newer producer of the connector.
pub fn fenced(producer: &FutureProducer, names: &SinkNames) -> Option<Error> {
    match producer.client().fatal_error() {
        Some((
            RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch,
            _,
        )) => Some(Error::Fenced {
            connector: names.connector.clone(),
            transactional_id: names.transactional_id(),
            topic: names.topic.clone(),
        }),
        _ => None,
    }
}

/// The topic holding the checkpoints of the connectors writing `topic`.
pub fn checkpoint_topic(topic: &str) -> String {
    format!("{topic}-checkpoints")
}

/// The Kafka `transactional.id` of a connector.
pub fn transactional_id(connector: &str) -> String {
    format!("rtis-{connector}")
}

struct OpenTxn {
    started: Instant,
    records: usize,
    /// Writer schemas published in this transaction (published for good once it commits).
    schemas: Vec<[u8; 8]>,
}

/// One session's transactional writer.
pub struct Sink {
    producer: FutureProducer,
    names: SinkNames,
    acks: mpsc::Sender<Ack>,
    delivery_timeout: Duration,
    /// Writer schemas in committed transactions of this session.
    published: HashSet<[u8; 8]>,
    txn: Option<OpenTxn>,
    /// The last boundary, not yet committed.
    pending: Option<Checkpoint>,
    /// The last boundary (committed or pending): where a part-commit resumes.
    base: Option<Checkpoint>,
    /// Records sent since the last boundary, and the position of the last one.
    since_boundary: usize,
    last_pos: Option<SourcePos>,
    last_commit: Instant,
    /// Records sent (stats).
    pub records: u64,
    /// Part-commit threshold inside one source transaction (`--max-transaction-records`).
    pub max_records: usize,
    pub metrics: Arc<crate::metrics::ProducerMetrics>,
}

/// Runs a blocking transactional call of the producer off the async workers.
async fn blocking<T: Send + 'static>(
    producer: &FutureProducer,
    f: impl FnOnce(&FutureProducer) -> std::result::Result<T, KafkaError> + Send + 'static,
) -> std::result::Result<T, KafkaError> {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || f(&p))
        .await
        .expect("transactional call panicked")
}

impl Sink {
    /// Wraps a transactional producer that [`Sink::init`] has not initialised yet.
    pub fn new(
        producer: FutureProducer,
        names: SinkNames,
        acks: mpsc::Sender<Ack>,
        delivery_timeout: Duration,
    ) -> Self {
        Self {
            producer,
            names,
            acks,
            delivery_timeout,
            published: HashSet::new(),
            txn: None,
            pending: None,
            base: None,
            since_boundary: 0,
            last_pos: None,
            last_commit: Instant::now(),
            records: 0,
            max_records: FORCE_RECORDS,
            metrics: Arc::default(),
        }
    }

    pub fn names(&self) -> &SinkNames {
        &self.names
    }

    /// Initialises the transactional producer: fences every earlier producer of this connector
    /// and completes (aborts) its open transaction. Afterwards the topic shows only committed
    /// work. Waits at most `timeout` (the broker may be down).
    pub async fn init(&self, timeout: Duration) -> Result<()> {
        blocking(&self.producer, move |p| p.init_transactions(timeout))
            .await
            .map_err(|e| self.txn_error("initialising the transactional producer", e))
    }

    /// The error of a transactional call, as a fencing error where it is one.
    pub fn txn_error(&self, what: &str, e: KafkaError) -> Error {
        let fenced = |c: Option<RDKafkaErrorCode>| {
            matches!(
                c,
                Some(
                    RDKafkaErrorCode::Fenced
                        | RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                )
            )
        };
        if fenced(e.rdkafka_error_code())
            || fenced(self.producer.client().fatal_error().map(|(c, _)| c))
        {
            return Error::Fenced {
                connector: self.names.connector.clone(),
                transactional_id: self.names.transactional_id(),
                topic: self.names.topic.clone(),
            };
        }
        if let KafkaError::Transaction(t) = &e {
            if t.code() == RDKafkaErrorCode::TransactionalIdAuthorizationFailed {
                return Error::Preflight(format!(
                    "{what}: the broker refuses transactional.id {} (authorization failed): grant WRITE and \
                     DESCRIBE on transactional-id {} (prefix rtis-) to this client's principal",
                    self.names.transactional_id(),
                    self.names.transactional_id()
                ));
            }
        }
        Error::kafka(what, e)
    }

    fn begin(&mut self) -> Result<()> {
        if self.txn.is_none() {
            self.producer
                .begin_transaction()
                .map_err(|e| self.txn_error("beginning a transaction", e))?;
            self.txn = Some(OpenTxn {
                started: Instant::now(),
                records: 0,
                schemas: Vec::new(),
            });
        }
        Ok(())
    }

    /// Puts the writer schema into `<topic>-schemas` (keyed by fingerprint) in the open
    /// transaction, unless this session already committed it: every record's schema commits
    /// with it or before it.
    pub fn publish_schema(&mut self, s: &WriterSchema) -> Result<()> {
        let in_txn = self
            .txn
            .as_ref()
            .is_some_and(|t| t.schemas.contains(&s.fingerprint));
        if in_txn || self.published.contains(&s.fingerprint) {
            return Ok(());
        }
        self.begin()?;
        let topic = self.names.schema_topic();
        let key = s.fingerprint_hex();
        let rec = FutureRecord::to(&topic)
            .partition(0)
            .key(&key)
            .payload(&s.json);
        self.producer
            .send_result(rec)
            .map_err(|(e, _)| Error::kafka(format!("publishing a writer schema to {topic}"), e))?;
        self.txn
            .as_mut()
            .expect("open transaction")
            .schemas
            .push(s.fingerprint);
        tracing::info!(fingerprint = %key, topic = %topic, "publishing writer schema");
        Ok(())
    }

    /// Sends one record (a change, or a tombstone when `payload` is `None`) in the open
    /// transaction and queues its acknowledgement.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &mut self,
        key: &[u8],
        payload: Option<&[u8]>,
        partition: i32,
        pos: SourcePos,
        op: &'static str,
        what: &str,
        max_message_bytes: &str,
    ) -> Result<()> {
        self.begin()?;
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.names.topic)
            .key(key)
            .partition(partition)
            .headers(kafka::record_headers(
                &pos,
                &self.names.connector,
                &self.names.source,
            ));
        if let Some(p) = payload {
            rec = rec.payload(p);
        }
        let size = payload.map_or(0, <[u8]>::len) + key.len();
        let fut = loop {
            match self.producer.send_result(rec) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                    return Err(Error::RecordTooLarge {
                        what: what.to_string(),
                        position: crate::position::describe(
                            self.names.binlog_base.as_deref(),
                            &pos,
                        ),
                        record: pos.to_string(),
                        size,
                        limit: max_message_bytes.to_string(),
                    })
                }
                Err((e, _)) => {
                    return Err(self.txn_error(&format!("producing to {}", self.names.topic), e))
                }
            }
        };
        let txn = self.txn.as_mut().expect("open transaction");
        txn.records += 1;
        self.since_boundary += 1;
        self.last_pos = Some(pos);
        self.records += 1;
        self.metrics.sent();
        self.acks
            .send(Ack::Record {
                fut,
                partition,
                op,
                pos,
                size,
                deadline: tokio::time::Instant::now() + self.delivery_timeout,
            })
            .await
            .map_err(|_| Error::StreamLost {
                position: pos.to_string(),
                msg: "the delivery tracker stopped".into(),
            })
    }

    /// A source-transaction boundary: every record sent so far is covered by `cp`. Commits when
    /// the policy says so (see the module docs).
    pub async fn boundary(&mut self, cp: Checkpoint) -> Result<()> {
        self.base = Some(cp.clone());
        self.pending = Some(cp);
        self.since_boundary = 0;
        let due = match &self.txn {
            Some(t) if t.records > 0 => {
                t.started.elapsed() >= COMMIT_AGE || t.records >= COMMIT_RECORDS
            }
            _ => self.last_commit.elapsed() >= IDLE_CHECKPOINT_EVERY,
        };
        if due {
            self.commit().await?;
        }
        Ok(())
    }

    /// The checkpoint the session starts from (already committed): the base of part-commits
    /// until the first boundary.
    pub fn resume_from(&mut self, cp: Checkpoint) {
        if self.base.is_none() {
            self.base = Some(cp);
        }
    }

    /// Makes `cp` durable now (in a transaction of its own if nothing is open): the first
    /// checkpoint of a snapshot or of a stream that starts at the binlog's end.
    pub async fn commit_now(&mut self, cp: Checkpoint) -> Result<()> {
        self.base = Some(cp.clone());
        self.pending = Some(cp);
        self.since_boundary = 0;
        self.commit().await
    }

    /// Whether a commit may happen now because the source has nothing ready: a boundary is
    /// pending with records behind it (or a record-less one is old enough).
    pub fn can_commit_idle(&self) -> bool {
        self.pending.is_some()
            && self.since_boundary == 0
            && match &self.txn {
                Some(t) if t.records > 0 => true,
                _ => self.last_commit.elapsed() >= IDLE_CHECKPOINT_EVERY,
            }
    }

    /// When the open transaction has grown too large inside one source transaction, commits
    /// what it holds with a checkpoint that resumes inside that transaction.
    pub async fn commit_if_oversized(&mut self) -> Result<()> {
        let over = self.since_boundary > 0
            && self
                .txn
                .as_ref()
                .is_some_and(|t| t.records >= self.max_records || t.started.elapsed() >= FORCE_AGE);
        if !over {
            return Ok(());
        }
        let (Some(base), Some(last)) = (self.base.clone(), self.last_pos) else {
            return Ok(());
        };
        tracing::info!(at = %last, records = self.since_boundary, "committing part of a large source transaction");
        self.pending = Some(Checkpoint {
            resume_after: Some(last),
            ..base
        });
        self.since_boundary = 0;
        self.commit().await
    }

    /// Commits the open transaction with the pending checkpoint, then queues that checkpoint
    /// for the state file. No-op without a pending checkpoint.
    pub async fn commit(&mut self) -> Result<()> {
        let Some(cp) = self.pending.take() else {
            return Ok(());
        };
        debug_assert_eq!(self.since_boundary, 0, "commit only at a boundary");
        self.begin()?;
        let topic = self.names.checkpoint_topic();
        let value = cp.to_json(&self.names.connector);
        let rec = FutureRecord::to(&topic)
            .partition(0)
            .key(&self.names.connector)
            .payload(&value);
        self.producer
            .send_result(rec)
            .map_err(|(e, _)| Error::kafka(format!("writing the checkpoint to {topic}"), e))?;
        let timeout = self.delivery_timeout;
        let started = Instant::now();
        let res = blocking(&self.producer, move |p| p.commit_transaction(timeout)).await;
        let txn = self.txn.take().expect("open transaction");
        if let Err(e) = res {
            let err = self.txn_error("committing a transaction", e);
            if matches!(&err, Error::Kafka { source, .. }
                if !matches!(source.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut)))
            {
                // A newer producer of the connector may have fenced this one while it committed:
                // Kafka 4 can answer that EndTxn with an unspecific error. Aborting asks the
                // coordinator again and says whether this producer's epoch is still current.
                let abort = blocking(&self.producer, |p| {
                    p.abort_transaction(Duration::from_secs(5))
                })
                .await;
                if let Err(e) = abort {
                    if let f @ Error::Fenced { .. } = self.txn_error("aborting a transaction", e) {
                        return Err(f);
                    }
                }
                if let Some(f) = fenced(&self.producer, &self.names) {
                    return Err(f);
                }
            }
            return Err(match err {
                Error::Kafka { source, .. }
                    if source.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut)
                        || source.rdkafka_error_code()
                            == Some(RDKafkaErrorCode::RequestTimedOut) =>
                {
                    Error::DeliveryTimeout {
                        topic: self.names.topic.clone(),
                        partition: -1,
                        record: format!(
                            "a transaction of {} records ending at {}",
                            txn.records, cp.position
                        ),
                        ms: timeout.as_millis() as u64,
                    }
                }
                other => other,
            });
        }
        self.metrics.transaction_committed(started.elapsed());
        self.published.extend(txn.schemas);
        self.last_commit = Instant::now();
        self.acks
            .send(Ack::Commit(cp))
            .await
            .map_err(|_| Error::StreamLost {
                position: self.names.topic.clone(),
                msg: "the delivery tracker stopped".into(),
            })
    }

    /// At the end of a session (shutdown): commits what is complete. Records after the last
    /// boundary are committed too when they are binlog records (with a checkpoint inside the
    /// source transaction); otherwise the open transaction is aborted by the next start.
    pub async fn finish(&mut self, inside_binlog_txn: bool) -> Result<()> {
        if self.since_boundary > 0 {
            if !inside_binlog_txn {
                return Ok(());
            }
            let (Some(base), Some(last)) = (self.base.clone(), self.last_pos) else {
                return Ok(());
            };
            self.pending = Some(Checkpoint {
                resume_after: Some(last),
                ..base
            });
            self.since_boundary = 0;
        }
        self.commit().await
    }
}
