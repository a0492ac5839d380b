//! `--standby`: several producers of one connector, one active at a time; when it dies, a
//! standby takes over within seconds.
//!
//! The election is a Kafka consumer group, `rtis-standby-<connector>`, whose members subscribe
//! to the connector's one-partition `<topic>-checkpoints` topic: the member that is assigned its
//! partition is the active producer, the others wait. When the active process dies (kill -9, a
//! machine gone), the group coordinator drops it after [`SESSION_TIMEOUT`] and assigns the
//! partition to a standby; when it stops gracefully it leaves the group and the hand-over is
//! immediate. The cooperative-sticky assignor keeps the partition where it is when members
//! join, so starting a standby never interrupts the active one.
//!
//! The group only decides who *should* write; correctness does not rest on it. The new active
//! producer initialises the connector's transactional id, which fences the old one (even a
//! paused zombie that still believes it is active) and aborts its open transaction, then
//! resumes from the checkpoint committed in the topic (see [`crate::sink`]). A producer that
//! loses the partition (its session timed out, e.g. cut off from the brokers) stops its session
//! and stands by again; a fenced producer does the same.
//!
//! The group's member polls on a thread of its own, never on the async workers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::watch;

use crate::config::kafka_client_config;
use crate::error::{Error, Result};

/// How long the coordinator waits for a silent member before handing its role on.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// The consumer group of a connector's election.
pub fn group(connector: &str) -> String {
    format!("rtis-standby-{connector}")
}

struct Ctx {
    topic: String,
    leader: watch::Sender<bool>,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let ours = tpl
            .elements()
            .iter()
            .any(|e| e.topic() == self.topic && e.partition() == 0);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                match crate::kafka::assign_rebalanced(consumer, tpl) {
                    Ok(()) if ours => {
                        let _ = self.leader.send(true);
                    }
                    Ok(()) => {}
                    Err(e) => tracing::warn!(error = %e, "standby election: assigning failed"),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // revoked or lost (session timed out): stop writing first
                if ours {
                    let _ = self.leader.send(false);
                }
                let _ = crate::kafka::unassign_rebalanced(consumer, tpl);
            }
            other => tracing::warn!(error = ?other, "standby election: rebalance error"),
        }
    }
}

/// This process's membership in its connector's election.
pub struct Election {
    leader: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Election {
    /// Joins the election of `connector`, whose checkpoint topic is `topic`.
    pub fn join(brokers: &str, extra: &[String], connector: &str, topic: &str) -> Result<Self> {
        let (tx, rx) = watch::channel(false);
        let mut cfg = kafka_client_config(brokers, extra)?;
        cfg.set("group.id", group(connector))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "latest")
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                SESSION_TIMEOUT.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000");
        let consumer: BaseConsumer<Ctx> = cfg
            .create_with_context(Ctx {
                topic: topic.to_string(),
                leader: tx,
            })
            .map_err(|e| {
                Error::kafka(
                    "creating the standby election's consumer (check --kafka-option values)",
                    e,
                )
            })?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| Error::kafka(format!("joining the standby election on {topic}"), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let group = group(connector);
        let thread = std::thread::Builder::new()
            .name("rtis-election".into())
            .spawn(move || {
                let mut warned = false;
                while !halt.load(Ordering::SeqCst) {
                    match consumer.poll(Duration::from_millis(200)) {
                        Some(Err(e)) if !warned => {
                            tracing::warn!(group = %group, error = %e, "standby election: consumer error (retrying)");
                            warned = true;
                        }
                        Some(Ok(_)) => warned = false,
                        _ => {}
                    }
                }
                // dropping the consumer leaves the group: a standby takes over at once
                drop(consumer);
            })
            .map_err(|e| Error::io("starting the standby election thread", e))?;
        Ok(Self {
            leader: rx,
            stop,
            thread: Some(thread),
        })
    }

    /// Whether this process holds the active role now.
    pub fn is_active(&self) -> bool {
        *self.leader.borrow()
    }

    /// A receiver of the role: `true` while this process is the active one.
    pub fn role(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Resolves once this process holds the active role.
    pub async fn active(&mut self) {
        let _ = self.leader.wait_for(|a| *a).await;
    }

    /// Resolves once this process no longer holds the role, or after `limit`.
    pub async fn inactive_within(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.leader.wait_for(|a| !*a)).await;
    }

    /// Leaves the election (the role passes to a standby at once); waits off the async workers.
    pub async fn leave(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
