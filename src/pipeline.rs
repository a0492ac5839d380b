//! Wiring of the producer: preflight → checkpoint → broker set-up → replication → acks →
//! checkpoint, inside a reconnect loop. Decisions live in the stage modules; this module only
//! connects them.
//!
//! Why resuming is exact: the checkpoint names the start of the first transaction not fully
//! acknowledged, so a new session re-reads at most the transactions whose records were in flight
//! at the crash. Those records either reached the broker (then the partition's last record is at
//! or after them, and the replication stage skips them by position) or did not (then they are
//! sent now). Per partition, the idempotent producer keeps records in order with no gap, which
//! is what makes "at or below the partition's last position" the exact set already delivered.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::checkpoint::{Checkpoint, CheckpointStore, CheckpointWriter, SnapshotState};
use crate::config::ProducerConfig;
use crate::config::SnapshotMode;
use crate::error::{chain, Error, Result};
use crate::kafka;
use crate::metrics::{ProducerMetrics, ProducerRegistry};
use crate::preflight;
use crate::replication::{Ack, Streamer};
use crate::snapshot;

/// `--snapshot when-needed` re-selects rows changed this long before the checkpoint.
const WHEN_NEEDED_MARGIN_US: i64 = 60_000_000;

/// Runs the producer until `shutdown` resolves (graceful: in-flight records are acknowledged
/// and the checkpoint written) or a definite error occurs. With several tables, one pipeline
/// per table runs concurrently; the first definite error stops them all.
pub async fn run(
    cfg: ProducerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    cfg.validate()?;
    let tables = cfg.per_table()?;
    // no URL here: it may hold a password
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        tables = %tables.iter().map(|t| t.table.as_str()).collect::<Vec<_>>().join(","),
        brokers = %cfg.brokers,
        state = %cfg.state.display(),
        "rtis-producer starting"
    );
    let registry = Arc::new(ProducerRegistry::new());
    let r = registry.clone();
    let server = crate::metrics::start(cfg.metrics_addr.as_deref(), move || r.encode()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let on_signal = stop_tx.clone();
    let watcher = tokio::spawn(async move {
        shutdown.await;
        let _ = on_signal.send(true);
    });
    let res = if let [one] = tables.as_slice() {
        let metrics = registry.table(&one.table);
        metrics.set_heartbeat(one.heartbeat());
        run_inner(one, stop_rx, &metrics).await
    } else {
        let mut set = tokio::task::JoinSet::new();
        for t in tables {
            let (rx, metrics) = (stop_rx.clone(), registry.table(&t.table));
            metrics.set_heartbeat(t.heartbeat());
            set.spawn(async move {
                let table = t.table.clone();
                run_inner(&t, rx, &metrics).await.map_err(|e| Error::Table {
                    table,
                    inner: Box::new(e),
                })
            });
        }
        let mut first = Ok(());
        while let Some(done) = set.join_next().await {
            let r = done.unwrap_or_else(|e| {
                Err(Error::Config(format!("a table's pipeline panicked: {e}")))
            });
            if let Err(e) = r {
                tracing::error!(error = %chain(&e), "stopping every table");
                let _ = stop_tx.send(true);
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    };
    watcher.abort();
    if let Some(server) = server {
        server.stop().await;
    }
    res
}

async fn run_inner(
    cfg: &ProducerConfig,
    mut stop: watch::Receiver<bool>,
    metrics: &Arc<ProducerMetrics>,
) -> Result<()> {
    let opts = preflight::mysql_opts(&cfg.mysql_url, cfg.mysql_password.as_deref())?;
    let db = opts.db_name().unwrap_or_default().to_string();
    // preflight before anything is written
    let mut conn = preflight::connect(&opts).await?;
    let facts = preflight::check_source(&mut conn, &db, &cfg.table, &cfg.timestamp_column).await?;
    let _ = conn.disconnect().await;
    tracing::info!(version = %facts.version, table = %format!("{db}.{}", cfg.table), "source preflight passed");
    ensure_topics(cfg).await?;

    let path = cfg.state.clone();
    // SQLite stays off the async workers
    let (store, mut checkpoint) = tokio::task::spawn_blocking(move || {
        let store = CheckpointStore::open(&path)?;
        let checkpoint = store.load()?;
        Ok::<_, Error>((store, checkpoint))
    })
    .await
    .expect("open checkpoint store")?;
    let m = metrics.clone();
    let writer =
        CheckpointWriter::spawn_observed(store, move |cp| m.checkpoint_written(&cp.position));
    let (last_tx, last_rx) = watch::channel(checkpoint.clone());
    let mut published = HashSet::new();
    let mut failures = 0u32;
    let result = loop {
        let started = Instant::now();
        let res = session(
            cfg,
            &opts,
            &facts,
            &mut checkpoint,
            &writer,
            &last_tx,
            &mut published,
            &mut stop,
            metrics,
        )
        .await;
        checkpoint = last_rx.borrow().clone().or(checkpoint);
        match res {
            Ok(()) => break Ok(()),
            Err(e) if e.is_transient() && *stop.borrow() => {
                // a stop was requested and the session ended with an error while draining
                // (e.g. the broker is down): do not start another session, and say that the
                // in-flight records were not acknowledged (the checkpoint does not cover them)
                tracing::warn!(error = %chain(&e), "stopping as requested; records in flight were not acknowledged and will be re-read from the checkpoint on the next start");
                break Err(e);
            }
            Err(e) if e.is_transient() => {
                if started.elapsed() > Duration::from_secs(60) {
                    failures = 0;
                }
                failures += 1;
                metrics.reconnected();
                if cfg.max_retries > 0 && failures > cfg.max_retries {
                    break Err(e);
                }
                let wait = Duration::from_millis(500 * 2u64.pow(failures.min(6)))
                    .min(Duration::from_secs(30));
                tracing::warn!(error = %chain(&e), retry_in_ms = wait.as_millis() as u64, attempt = failures, "session failed; reconnecting from the last checkpoint");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => break Ok(()),
                }
            }
            Err(e) => break Err(e),
        }
    };
    writer.finish().await?;
    if let Some(cp) = last_rx.borrow().as_ref() {
        tracing::info!(position = %cp.position, gtid = ?cp.gtid, "checkpoint on exit");
    }
    result
}

async fn ensure_topics(cfg: &ProducerConfig) -> Result<()> {
    let (brokers, extra, topic) = (
        cfg.brokers.clone(),
        cfg.kafka_options.clone(),
        cfg.topic.clone(),
    );
    let count =
        tokio::task::spawn_blocking(move || kafka::partition_count(&brokers, &extra, &topic))
            .await
            .expect("metadata")?;
    match (count, cfg.partitions) {
        (Some(_), _) => {}
        (None, Some(n)) => {
            kafka::create_topic(&cfg.brokers, &cfg.kafka_options, &cfg.topic, n, &[]).await?;
            tracing::info!(topic = %cfg.topic, partitions = n, "created topic");
        }
        (None, None) => {
            return Err(Error::Preflight(format!(
                "--topic: expected topic {} to exist on {}, found none; create it, or pass --partitions N to let rtis create it",
                cfg.topic, cfg.brokers
            )))
        }
    }
    let schema_topic = format!("{}-schemas", cfg.topic);
    let (brokers, extra, st) = (
        cfg.brokers.clone(),
        cfg.kafka_options.clone(),
        schema_topic.clone(),
    );
    let schemas =
        tokio::task::spawn_blocking(move || kafka::partition_count(&brokers, &extra, &st))
            .await
            .expect("metadata")?;
    if schemas.is_none() {
        kafka::create_topic(
            &cfg.brokers,
            &cfg.kafka_options,
            &schema_topic,
            1,
            &[("cleanup.policy", "compact")],
        )
        .await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn session(
    cfg: &ProducerConfig,
    opts: &mysql_async::Opts,
    facts: &preflight::SourceFacts,
    checkpoint: &mut Option<Checkpoint>,
    writer: &CheckpointWriter,
    last: &watch::Sender<Option<Checkpoint>>,
    published: &mut HashSet<[u8; 8]>,
    stop: &mut watch::Receiver<bool>,
    metrics: &Arc<ProducerMetrics>,
) -> Result<()> {
    let mut conn = preflight::connect(opts).await?;
    let (end, end_gtid) = preflight::binlog_end(&mut conn, facts.mariadb).await?;
    let files = preflight::binlog_files(&mut conn).await?;
    let _ = conn.disconnect().await;
    let purged = |cp: &Checkpoint| !files.contains(&cp.position.file);
    let purged_error = |cp: &Checkpoint| Error::BinlogPurged {
        state: cfg.state.display().to_string(),
        position: cp.position.to_string(),
        oldest: files.first().cloned().unwrap_or_else(|| "none".into()),
    };
    let fresh_snapshot = |since_us: Option<i64>, only: bool, prev: Option<&Checkpoint>| {
        let last_updated_us = prev.and_then(|c| c.last_updated_us);
        async move {
            snapshot::check_snapshot_shape(facts)?;
            let (conn, anchor) = snapshot::open_consistent(opts, facts.mariadb).await?;
            let cp = Checkpoint {
                position: anchor,
                gtid: None,
                last_commit_ts_ms: 0,
                last_updated_us,
                snapshot: Some(SnapshotState {
                    since_us,
                    cursor: None,
                    rows: 0,
                    only,
                }),
            };
            Ok::<_, Error>((conn, cp))
        }
    };
    let only = cfg.snapshot == SnapshotMode::SnapshotOnly;
    // a snapshot to run before streaming: its connection (inside the consistent view) and state
    let plan = match checkpoint.clone() {
        Some(cp) if cp.snapshot.is_some() && !purged(&cp) => {
            // resume the interrupted snapshot from its cursor, anchored where it began
            let (conn, _) = snapshot::open_consistent(opts, facts.mariadb).await?;
            Some((conn, cp))
        }
        Some(cp) if cp.snapshot.is_some() => {
            if cfg.snapshot != SnapshotMode::WhenNeeded {
                return Err(purged_error(&cp));
            }
            tracing::warn!(anchor = %cp.position, "the interrupted snapshot's anchor was purged; starting the snapshot again");
            let since = cp.snapshot.as_ref().and_then(|s| s.since_us);
            let only = cp.snapshot.as_ref().is_some_and(|s| s.only);
            Some(fresh_snapshot(since, only, Some(&cp)).await?)
        }
        Some(cp) if !purged(&cp) => {
            if only {
                return Err(Error::Config(format!(
                    "--snapshot snapshot-only: {} already holds a streaming checkpoint ({}); a one-time \
                     backfill needs its own --state file",
                    cfg.state.display(),
                    cp.position
                )));
            }
            None
        }
        Some(cp) => {
            if cfg.snapshot != SnapshotMode::WhenNeeded {
                return Err(purged_error(&cp));
            }
            // catch up by timestamp: rows changed since the checkpoint (minus a safety margin)
            let since = cp.last_updated_us.map(|t| t - WHEN_NEEDED_MARGIN_US);
            tracing::warn!(
                checkpoint = %cp.position,
                since = ?since.map(crate::value::format_micros),
                "the checkpoint's binlog file was purged: re-selecting rows changed since the checkpoint. \
                 Rows deleted while the binlog was lost cannot be seen this way and get no delete record"
            );
            Some(fresh_snapshot(since, false, Some(&cp)).await?)
        }
        None if cfg.snapshot == SnapshotMode::Never => {
            // stream from the current end, and make that durable right away so a crash before
            // the first transaction cannot skip what happens meanwhile
            let cp = Checkpoint {
                position: end.clone(),
                gtid: end_gtid,
                last_commit_ts_ms: 0,
                last_updated_us: None,
                snapshot: None,
            };
            writer.update(cp.clone());
            let _ = last.send(Some(cp.clone()));
            *checkpoint = Some(cp);
            None
        }
        None => {
            let since = if only { cfg.since_us()? } else { None };
            Some(fresh_snapshot(since, only, None).await?)
        }
    };
    let mut snapshot_plan = None;
    if let Some((conn, cp)) = plan {
        writer.update(cp.clone());
        let _ = last.send(Some(cp.clone()));
        *checkpoint = Some(cp.clone());
        snapshot_plan = Some((conn, cp));
    }
    let start = checkpoint
        .as_ref()
        .expect("a start position")
        .position
        .clone();

    let (brokers, extra, topic) = (
        cfg.brokers.clone(),
        cfg.kafka_options.clone(),
        cfg.topic.clone(),
    );
    let partitions =
        tokio::task::spawn_blocking(move || kafka::partition_count(&brokers, &extra, &topic))
            .await
            .expect("metadata")?
            .ok_or_else(|| Error::Preflight(format!("topic {} disappeared", cfg.topic)))?;
    // librdkafka never times records out (that would leave gaps, see `create_producer`);
    // the ack tracker enforces --delivery-timeout-ms
    let producer = kafka::create_producer(&cfg.brokers, &cfg.kafka_options, 0)?;
    let (brokers, extra, topic) = (
        cfg.brokers.clone(),
        cfg.kafka_options.clone(),
        cfg.topic.clone(),
    );
    let tails = tokio::task::spawn_blocking(move || {
        kafka::read_partition_tails(&brokers, &extra, &topic, partitions)
    })
    .await
    .expect("tails")?;
    tracing::info!(start = %start, ?tails, partitions, "session starting");

    let (ack_tx, ack_rx) = mpsc::channel(cfg.max_in_flight);
    let last_updated = checkpoint.as_ref().and_then(|c| c.last_updated_us);
    let mut streamer = Streamer::new(
        opts.clone(),
        facts,
        cfg.server_id,
        cfg.heartbeat(),
        &producer,
        &cfg.topic,
        partitions,
        tails,
        ack_tx,
        published,
        cfg.timestamp_column.clone(),
        last_updated,
    );
    streamer.metrics = metrics.clone();
    metrics.session_started();
    // until this session's first acknowledgement, the lag counts from the checkpointed commit
    // (a backlog at start shows as lag, not as 0)
    if let Some(cp) = checkpoint.as_ref() {
        metrics.committed(cp.last_commit_ts_ms);
    }
    streamer.max_message_bytes = kafka::message_max_bytes(&cfg.kafka_options);
    streamer.delivery_timeout = Duration::from_millis(cfg.delivery_timeout_ms.max(1));
    let reader = async {
        let r = async {
            if let Some((conn, cp)) = snapshot_plan {
                let only = cp.snapshot.as_ref().is_some_and(|s| s.only);
                let done = snapshot::run(
                    &mut streamer,
                    conn,
                    facts,
                    cp,
                    cfg.snapshot_chunk,
                    cfg.snapshot_max_rows_per_sec,
                    stop,
                )
                .await?;
                if !done || only {
                    return Ok(());
                }
            }
            streamer.run(&start, stop).await
        }
        .await;
        let stats = streamer.stats;
        drop(streamer); // closes the ack queue: the tracker drains what is in flight
        (r, stats)
    };
    let tracker = track_acks(
        ack_rx,
        writer,
        last,
        &cfg.topic,
        &cfg.kafka_options,
        cfg.delivery_timeout_ms.max(1),
        metrics,
    );
    tokio::pin!(reader, tracker);
    // A failed delivery ends the session at once: the reader is dropped (it may be waiting for
    // binlog events that never come while the source is idle), nothing after the failed record
    // is checkpointed, and the next session resumes from the last checkpoint.
    let (read_res, track_res) = tokio::select! {
        (r, stats) = &mut reader => {
            let t = tracker.await;
            tracing::info!(
                records = stats.records,
                skipped_duplicates = stats.skipped_duplicates,
                transactions = stats.transactions,
                "session ended"
            );
            (r, t)
        }
        t = &mut tracker => match t {
            Err(e) => {
                tracing::info!("session ended: a record was not acknowledged");
                (Ok(()), Err(e))
            }
            Ok(()) => (reader.await.0, Ok(())),
        },
    };
    track_res?;
    read_res
}

/// Awaits acknowledgements in order; queues a checkpoint once every record before it is acked.
async fn track_acks(
    mut rx: mpsc::Receiver<Ack>,
    writer: &CheckpointWriter,
    last: &watch::Sender<Option<Checkpoint>>,
    topic: &str,
    kafka_options: &[String],
    delivery_timeout_ms: u64,
    metrics: &ProducerMetrics,
) -> Result<()> {
    let mut logged = Instant::now();
    let mut acked = 0u64;
    while let Some(a) = rx.recv().await {
        match a {
            Ack::Record {
                fut,
                partition,
                op,
                pos,
                size,
                deadline,
            } => match tokio::time::timeout_at(deadline, fut).await {
                Err(_) => {
                    return Err(Error::DeliveryTimeout {
                        topic: topic.to_string(),
                        partition,
                        record: format!("record at source position {pos}"),
                        ms: delivery_timeout_ms,
                    })
                }
                Ok(fut) => match fut {
                    Ok(Ok(_)) => {
                        acked += 1;
                        metrics.acked(op, true);
                    }
                    Ok(Err((e, _)))
                        if matches!(
                            e.rdkafka_error_code(),
                            Some(
                                rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge
                                    | rdkafka::types::RDKafkaErrorCode::MessageBatchTooLarge
                            )
                        ) =>
                    {
                        // refused by the broker: definite, never skipped
                        return Err(Error::RecordTooLarge {
                            what: format!("{topic} partition {partition}"),
                            position: format!("file #{} offset {}", pos.file_seq, pos.pos),
                            record: pos.to_string(),
                            size,
                            limit: format!(
                                "{} here; the broker refused it: {e}",
                                kafka::message_max_bytes(kafka_options)
                            ),
                        });
                    }
                    Ok(Err((e, _))) => {
                        return Err(Error::Delivery {
                            topic: topic.to_string(),
                            partition,
                            source: e,
                        })
                    }
                    Err(_) => {
                        return Err(Error::StreamLost {
                            position: topic.to_string(),
                            msg: "the producer was dropped before acknowledging".into(),
                        })
                    }
                },
            },
            Ack::Commit(cp) => {
                if writer.is_dead() {
                    return Err(Error::State {
                        path: "checkpoint".into(),
                        msg: "the checkpoint writer stopped after a write error".into(),
                    });
                }
                if logged.elapsed() > Duration::from_secs(10) {
                    tracing::info!(position = %cp.position, gtid = ?cp.gtid, records_acked = acked, "checkpoint");
                    logged = Instant::now();
                }
                metrics.committed(cp.last_commit_ts_ms);
                writer.update(cp.clone());
                let _ = last.send(Some(cp));
            }
        }
    }
    Ok(())
}
