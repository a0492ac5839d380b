//! Wiring of the producer: preflight → checkpoint → broker set-up → replication → acks →
//! checkpoint, inside a reconnect loop. Decisions live in the stage modules; this module only
//! connects them.
//!
//! Why resuming is exact: every session first initialises the connector's transactional
//! producer, which fences all earlier ones and aborts what they left open; then it reads the
//! connector's last committed checkpoint from `<topic>-checkpoints`, which committed in the same
//! Kafka transaction as the records it covers (see [`crate::sink`]). The topic holds exactly the
//! changes before that checkpoint, so the session starts there: nothing is skipped, nothing is
//! sent twice, whatever was in flight or half-replicated when the previous session died. The
//! SQLite state file follows the topic (written after each commit); it is used as the start
//! only when the topic has no checkpoint of the connector (a new topic), or after a `reset`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::checkpoint::{Checkpoint, CheckpointStore, CheckpointWriter, SnapshotState};
use crate::config::ProducerConfig;
use crate::config::{Format, SnapshotMode};
use crate::election::Election;
use crate::error::{chain, Error, Result};
use crate::framing::Framing;
use crate::kafka;
use crate::metrics::{ProducerMetrics, ProducerRegistry};
use crate::position::SourcePos;
use crate::preflight;
use crate::replication::{Ack, Streamer};
use crate::sink::{Sink, SinkNames};
use crate::snapshot;

/// `--snapshot when-needed` re-selects rows changed this long before the checkpoint.
const WHEN_NEEDED_MARGIN_US: i64 = 60_000_000;
/// How long a session start waits for an open transaction on its partitions to complete
/// (see [`kafka::wait_transactions_settled`]) before it fails and is retried with backoff.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

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
        run_table(one, stop_rx, &metrics).await
    } else {
        let mut set = tokio::task::JoinSet::new();
        for t in tables {
            let (rx, metrics) = (stop_rx.clone(), registry.table(&t.table));
            metrics.set_heartbeat(t.heartbeat());
            set.spawn(async move {
                let table = t.table.clone();
                run_table(&t, rx, &metrics).await.map_err(|e| Error::Table {
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

/// One table's producer; with `--standby`, as long as it holds the active role, standing by
/// again when it loses it (see [`crate::election`]).
async fn run_table(
    cfg: &ProducerConfig,
    stop: watch::Receiver<bool>,
    metrics: &Arc<ProducerMetrics>,
) -> Result<()> {
    if !cfg.standby {
        return run_inner(cfg, stop, metrics, None).await;
    }
    // a standby checks everything an active start would, so a misconfiguration shows now and
    // not at the takeover; it checks again once elected (the table may change meanwhile)
    preflight_all(cfg).await?;
    let connector = cfg.connector_name();
    let mut election = Election::join(
        &cfg.brokers,
        &cfg.kafka_options,
        &connector,
        &crate::sink::checkpoint_topic(&cfg.topic),
    )?;
    let mut failures = 0u32;
    let res = loop {
        let started = Instant::now();
        let res = run_inner(cfg, stop.clone(), metrics, Some(&mut election)).await;
        if *stop.borrow() {
            break res;
        }
        match res {
            // the role went elsewhere (cut off from the brokers, or paused): wait again
            Ok(()) => {
                tracing::warn!(connector = %connector, "no longer the active producer of the connector; standing by");
            }
            // another member took over while this one still held the role: give the election
            // time to notice before trying again, instead of fencing the new active one back
            Err(Error::Fenced { .. }) => {
                tracing::warn!(connector = %connector, "fenced by another producer of the connector; standing by");
                election
                    .inactive_within(2 * crate::election::SESSION_TIMEOUT)
                    .await;
            }
            // an outage (the source, the brokers, the registry) at the start of an active run,
            // or an error while giving up the role: stand by again, with backoff
            Err(e) if e.is_transient() || !election.is_active() => {
                if started.elapsed() > Duration::from_secs(60) {
                    failures = 0;
                }
                failures += 1;
                let wait = Duration::from_millis(500 * 2u64.pow(failures.min(6)))
                    .min(Duration::from_secs(30));
                tracing::warn!(connector = %connector, error = %chain(&e), retry_in_ms = wait.as_millis() as u64, "the active run failed; standing by again");
                let mut s = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = s.wait_for(|s| *s) => break Ok(()),
                }
            }
            Err(e) => break Err(e),
        }
    };
    election.leave().await;
    res
}

/// Everything checked before anything is written: the source, the topics (created when
/// allowed), the registry.
async fn preflight_all(
    cfg: &ProducerConfig,
) -> Result<(mysql_async::Opts, preflight::SourceFacts, Framing)> {
    let opts = preflight::mysql_opts(&cfg.mysql_url, cfg.mysql_password.as_deref())?;
    let db = opts.db_name().unwrap_or_default().to_string();
    let mut conn = preflight::connect(&opts).await?;
    let mut facts =
        preflight::check_source(&mut conn, &db, &cfg.table, &cfg.timestamp_column).await?;
    facts.zero_dates = cfg.zero_dates;
    facts.schema = facts.schema.with_zero_dates(cfg.zero_dates);
    let _ = conn.disconnect().await;
    tracing::info!(version = %facts.version, table = %format!("{db}.{}", cfg.table), source = %facts.source, "source preflight passed");
    ensure_topics(cfg).await?;
    let framing = framing(cfg).await?;
    Ok((opts, facts, framing))
}

async fn run_inner(
    cfg: &ProducerConfig,
    stop: watch::Receiver<bool>,
    metrics: &Arc<ProducerMetrics>,
    election: Option<&mut Election>,
) -> Result<()> {
    // with --standby, wait for the role first: the preflight below then describes the source
    // as it is at the takeover
    let (mut stop, _watch_role) = match election {
        None => (stop, None),
        Some(election) => match stand_by(cfg, election, stop).await {
            Some((stop, watcher)) => (stop, Some(watcher)),
            None => return Ok(()), // stopped while standing by
        },
    };
    // preflight before anything is written
    let (opts, facts, framing) = preflight_all(cfg).await?;
    metrics.set_active(true);
    let _inactive_on_return = Deferred(Some(|| metrics.set_active(false)));

    let path = cfg.state.clone();
    // SQLite stays off the async workers
    let (store, checkpoint, snapshot_requested) = tokio::task::spawn_blocking(move || {
        let store = CheckpointStore::open(&path)?;
        let checkpoint = store.load()?;
        let requested = store.snapshot_requested()?;
        Ok::<_, Error>((store, checkpoint, requested))
    })
    .await
    .expect("open checkpoint store")?;
    let m = metrics.clone();
    let writer =
        CheckpointWriter::spawn_observed(store, move |cp| m.checkpoint_written(&cp.position));
    let (last_tx, last_rx) = watch::channel(checkpoint.clone());
    let mut state = Resume {
        stored: checkpoint,
        snapshot_requested,
    };
    let mut failures = 0u32;
    let result = loop {
        let started = Instant::now();
        let res = session(
            cfg, &opts, &facts, &framing, &mut state, &writer, &last_tx, &mut stop, metrics,
        )
        .await;
        if let Some(cp) = last_rx.borrow().clone() {
            state.stored = Some(cp);
        }
        match res {
            Ok(()) => break Ok(()),
            Err(e) if e.is_transient() && *stop.borrow() => {
                // a stop was requested and the session ended with an error while draining
                // (e.g. the broker is down): do not start another session, and say that the
                // records in flight were not committed (the next start aborts their transaction)
                tracing::warn!(error = %chain(&e), "stopping as requested; records in flight were not committed and will be re-read from the checkpoint on the next start");
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
                tracing::warn!(error = %chain(&e), retry_in_ms = wait.as_millis() as u64, attempt = failures, "session failed; reconnecting from the last committed checkpoint");
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

/// Waits for the active role (`None`: stopped first). Returns the stop signal of the active
/// run: the user's stop, or the loss of the role, and the task that raises it.
async fn stand_by(
    cfg: &ProducerConfig,
    election: &mut Election,
    mut stop: watch::Receiver<bool>,
) -> Option<(watch::Receiver<bool>, AbortOnDrop)> {
    if !election.is_active() {
        tracing::info!(connector = %cfg.connector_name(), group = %crate::election::group(&cfg.connector_name()), "standing by: waiting for the connector's active role (held by another producer, or being assigned)");
    }
    tokio::select! {
        _ = election.active() => {}
        _ = stop.wait_for(|s| *s) => return None,
    }
    tracing::info!(connector = %cfg.connector_name(), "active: this producer now writes the connector's topic");
    let (tx, rx) = watch::channel(false);
    let mut role = election.role();
    let watcher = tokio::spawn(async move {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = role.wait_for(|active| !*active) => {
                tracing::warn!("lost the active role (the election's session expired, or another member took over); stopping this session");
            }
        }
        let _ = tx.send(true);
    });
    Some((rx, AbortOnDrop(watcher)))
}

/// Runs its function when dropped.
struct Deferred<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for Deferred<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the producer knows of its progress between sessions.
struct Resume {
    /// The state file's checkpoint (then the last one committed by this process).
    stored: Option<Checkpoint>,
    /// `reset --snapshot` asked for a new snapshot, and none has started yet.
    snapshot_requested: bool,
}

/// The framing of `--format`; for `confluent`, checks first that the registry answers.
async fn framing(cfg: &ProducerConfig) -> Result<Framing> {
    Ok(match cfg.format {
        Format::Avro => Framing::SingleObject,
        Format::Json => Framing::Json,
        Format::Confluent => {
            let registry = cfg.registry.client()?.ok_or_else(|| {
                Error::Config("--format confluent: expected --schema-registry-url".into())
            })?;
            let r = registry.clone();
            tokio::task::spawn_blocking(move || r.check())
                .await
                .expect("registry check")
                .map_err(|e| {
                    Error::Preflight(format!(
                        "--schema-registry-url: expected a Schema Registry (Confluent API) that \
                         answers GET /subjects, found: {e}"
                    ))
                })?;
            tracing::info!(registry = %registry.url(), "schema registry reachable; records use the Confluent wire format");
            Framing::Confluent {
                registry,
                topic: cfg.topic.clone(),
            }
        }
    })
}

async fn ensure_topics(cfg: &ProducerConfig) -> Result<()> {
    let replication = kafka::Replication {
        factor: cfg.replication_factor,
        min_insync: cfg.min_insync_replicas,
    };
    let info = |topic: String| {
        let (brokers, extra) = (cfg.brokers.clone(), cfg.kafka_options.clone());
        async move {
            tokio::task::spawn_blocking(move || kafka::topic_info(&brokers, &extra, &topic))
                .await
                .expect("metadata")
        }
    };
    match (info(cfg.topic.clone()).await?, cfg.partitions) {
        (Some(t), _) => {
            if t.min_replicas < 2 && t.brokers >= 2 {
                tracing::warn!(topic = %cfg.topic, replication_factor = t.min_replicas, brokers = t.brokers, "the topic has a single replica on a cluster of several brokers: losing that broker loses records");
            }
        }
        (None, Some(n)) => {
            kafka::create_topic(&cfg.brokers, &cfg.kafka_options, &cfg.topic, n, replication, &[])
                .await?;
        }
        (None, None) => {
            return Err(Error::Preflight(format!(
                "--topic: expected topic {} to exist on {}, found none; create it, or pass --partitions N to let rtis create it",
                cfg.topic, cfg.brokers
            )))
        }
    }
    // compacted side topics: writer schemas by fingerprint, checkpoints by connector (small
    // segments so compaction keeps the checkpoint topic short: it is read whole at start)
    // (the schema topic only for --format avro: the others keep no schemas in Kafka)
    let schemas = (cfg.format == Format::Avro).then(|| (format!("{}-schemas", cfg.topic), vec![]));
    let checkpoints = (
        crate::sink::checkpoint_topic(&cfg.topic),
        vec![
            ("segment.bytes", "8388608"),
            ("min.cleanable.dirty.ratio", "0.1"),
        ],
    );
    for (topic, extra) in schemas.into_iter().chain([checkpoints]) {
        if info(topic.clone()).await?.is_none() {
            let mut config = vec![("cleanup.policy", "compact")];
            config.extend(extra);
            kafka::create_topic(
                &cfg.brokers,
                &cfg.kafka_options,
                &topic,
                1,
                replication,
                &config,
            )
            .await?;
        }
    }
    Ok(())
}

/// The last record position a checkpoint covers: its `resume_after`, or every event that ends
/// at or before its position (positions of records are event end offsets).
fn covered(cp: &Checkpoint) -> SourcePos {
    cp.resume_after.unwrap_or(SourcePos {
        file_seq: cp.position.file_seq(),
        pos: cp.position.pos,
        row: u32::MAX,
        sub: u8::MAX,
    })
}

/// Where a session starts: the state file's checkpoint when an operator reset it, else the
/// topic's (exact: it committed with the records), else the state file's. Returns the start
/// checkpoint and what to skip.
fn choose_start(
    stored: Option<&Checkpoint>,
    topic: Option<Checkpoint>,
    snapshot_requested: bool,
    state: &std::path::Path,
) -> (Option<Checkpoint>, Option<SourcePos>) {
    if snapshot_requested {
        tracing::info!("reset --snapshot: taking a new snapshot");
        return (None, None);
    }
    match (stored, topic) {
        (Some(s), k) if s.reset => {
            // the operator's position; below what the topic holds, nothing is sent again
            let skip = k
                .filter(|k| s.source.is_none() || k.source == s.source)
                .map(|k| covered(&k))
                .filter(|k| *k > covered(s));
            tracing::info!(position = %s.position, skip_up_to = ?skip.map(|p| p.to_string()), "starting from the position set by `reset`");
            (Some(s.clone()), skip)
        }
        (_, Some(k)) => {
            let skip = k.resume_after;
            (Some(k), skip)
        }
        (Some(s), None) => {
            tracing::warn!(state = %state.display(), position = %s.position, "the topic holds no checkpoint of this connector; resuming from the state file");
            (Some(s.clone()), s.resume_after)
        }
        (None, None) => (None, None),
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    cfg: &ProducerConfig,
    opts: &mysql_async::Opts,
    facts: &preflight::SourceFacts,
    framing: &Framing,
    resume: &mut Resume,
    writer: &CheckpointWriter,
    last: &watch::Sender<Option<Checkpoint>>,
    stop: &mut watch::Receiver<bool>,
    metrics: &Arc<ProducerMetrics>,
) -> Result<()> {
    let names = SinkNames {
        connector: cfg.connector_name(),
        topic: cfg.topic.clone(),
        source: facts.source.to_string(),
        binlog_base: facts.binlog_base.clone(),
    };
    // the transactional producer first: initialising it fences every earlier producer of this
    // connector and aborts its open transaction; the reads below then wait until no
    // transaction is open on the partitions (one being completed by the coordinator could
    // otherwise land after them), so what they read is final
    let producer = kafka::create_producer(
        &cfg.brokers,
        &cfg.kafka_options,
        &names.transactional_id(),
        cfg.delivery_timeout_ms.max(1),
    )?;
    let probe = producer.clone();
    let fenced = |e: Error| crate::sink::fenced(&probe, &names).unwrap_or(e);
    let (ack_tx, ack_rx) = mpsc::channel(cfg.max_in_flight);
    let delivery_timeout = Duration::from_millis(cfg.delivery_timeout_ms.max(1));
    let mut sink = Sink::new(producer, names.clone(), ack_tx, delivery_timeout);
    sink.metrics = metrics.clone();
    sink.max_records = cfg.max_transaction_records;
    let t0 = std::time::Instant::now();
    sink.init(delivery_timeout.max(Duration::from_secs(10)))
        .await
        .map_err(&fenced)?;
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "transactions initialised; any earlier writer is fenced"
    );

    let (brokers, extra, topic) = (
        cfg.brokers.clone(),
        cfg.kafka_options.clone(),
        cfg.topic.clone(),
    );
    let connector = names.connector.clone();
    let (partitions, topic_cp, tails) = tokio::task::spawn_blocking(move || {
        let partitions = kafka::partition_count(&brokers, &extra, &topic)?
            .ok_or_else(|| Error::Preflight(format!("topic {topic} disappeared")))?;
        let mut settle: Vec<(String, i32)> = (0..partitions).map(|p| (topic.clone(), p)).collect();
        settle.push((crate::sink::checkpoint_topic(&topic), 0));
        kafka::wait_transactions_settled(&brokers, &extra, &settle, SETTLE_TIMEOUT)?;
        let cp = kafka::read_last_value(
            &brokers,
            &extra,
            &crate::sink::checkpoint_topic(&topic),
            &connector,
        )?;
        let tails = kafka::read_partition_tails(&brokers, &extra, &topic, partitions)?;
        Ok::<_, Error>((partitions, cp, tails))
    })
    .await
    .expect("topic reader")?;
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "checkpoint and partition tails read"
    );
    let topic_cp = topic_cp
        .map(|bytes| {
            Checkpoint::from_json(&bytes).map_err(|e| {
                Error::Preflight(format!(
                    "{}: the checkpoint of connector {:?} does not parse ({e}); it was not written by this rtis",
                    crate::sink::checkpoint_topic(&cfg.topic),
                    names.connector
                ))
            })
        })
        .transpose()?;
    check_tails(&names, &tails, topic_cp.is_some(), framing.name())?;

    let (start_cp, skip_up_to) = choose_start(
        resume.stored.as_ref(),
        topic_cp,
        resume.snapshot_requested,
        &cfg.state,
    );
    if let Some(cp) = &start_cp {
        check_source(&names.connector, cp, facts)?;
    }

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
                last_updated_us,
                snapshot: Some(SnapshotState {
                    since_us,
                    cursor: None,
                    rows: 0,
                    only,
                }),
                source: Some(facts.source.clone()),
                ..Checkpoint::at(anchor)
            };
            Ok::<_, Error>((conn, cp))
        }
    };
    let only = cfg.snapshot == SnapshotMode::SnapshotOnly;
    // a snapshot to run before streaming: its connection (inside the consistent view) and state
    let mut start = start_cp.clone();
    let plan = match start_cp {
        Some(cp) if cp.snapshot.is_some() && !purged(&cp) => {
            // resume the interrupted snapshot from its cursor, anchored where it began, in a
            // new read view (reconciled with the binlog in between: see `snapshot`)
            let (conn, view) = snapshot::open_consistent(opts, facts.mariadb).await?;
            Some((conn, cp, Some(view)))
        }
        Some(cp) if cp.snapshot.is_some() => {
            if cfg.snapshot != SnapshotMode::WhenNeeded {
                return Err(purged_error(&cp));
            }
            tracing::warn!(anchor = %cp.position, "the interrupted snapshot's anchor was purged; starting the snapshot again");
            let since = cp.snapshot.as_ref().and_then(|s| s.since_us);
            let only = cp.snapshot.as_ref().is_some_and(|s| s.only);
            let (conn, cp) = fresh_snapshot(since, only, Some(&cp)).await?;
            Some((conn, cp, None))
        }
        Some(cp) if !purged(&cp) => {
            if only {
                return Err(Error::Config(format!(
                    "--snapshot snapshot-only: connector {:?} already streams into {} (its checkpoint is {}); \
                     a one-time backfill needs a topic of its own (--topic) and its own --state file",
                    names.connector, cfg.topic, cp.position
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
            let (conn, cp) = fresh_snapshot(since, false, Some(&cp)).await?;
            Some((conn, cp, None))
        }
        None if cfg.snapshot == SnapshotMode::Never => {
            // stream from the current end, and make that durable right away so a crash before
            // the first transaction cannot skip what happens meanwhile
            let cp = Checkpoint {
                gtid: end_gtid,
                source: Some(facts.source.clone()),
                ..Checkpoint::at(end.clone())
            };
            sink.commit_now(cp.clone()).await.map_err(&fenced)?;
            resume.snapshot_requested = false;
            start = Some(cp);
            None
        }
        None => {
            let since = if only { cfg.since_us()? } else { None };
            let (conn, cp) = fresh_snapshot(since, only, None).await?;
            Some((conn, cp, None))
        }
    };
    let mut snapshot_plan = None;
    if let Some((conn, cp, view)) = plan {
        if view.is_none() {
            // the anchor is durable before the first row is read
            sink.commit_now(cp.clone()).await.map_err(&fenced)?;
            resume.snapshot_requested = false;
        }
        start = Some(cp.clone());
        snapshot_plan = Some((conn, cp, view));
    }
    let start_cp = start.expect("a start position");
    let start = start_cp.position.clone();
    tracing::info!(start = %start, connector = %names.connector, skip_up_to = ?skip_up_to.map(|p| p.to_string()), partitions, "session starting");

    // a session resumed inside a large source transaction part-commits from where it starts
    sink.resume_from(start_cp.clone());
    let last_updated = start_cp.last_updated_us;
    let mut streamer = Streamer::new(
        opts.clone(),
        facts,
        cfg.server_id,
        cfg.heartbeat(),
        sink,
        partitions,
        skip_up_to,
        cfg.timestamp_column.clone(),
        last_updated,
    );
    streamer.metrics = metrics.clone();
    streamer.framing = framing.clone();
    metrics.session_started();
    // until this session's first commit, the lag counts from the checkpointed commit (a
    // backlog at start shows as lag, not as 0)
    metrics.committed(start_cp.last_commit_ts_ms);
    streamer.max_message_bytes = kafka::message_max_bytes(&cfg.kafka_options);
    let reader = async {
        let r = async {
            if let Some((conn, cp, view)) = snapshot_plan {
                let only = cp.snapshot.as_ref().is_some_and(|s| s.only);
                // a resumed snapshot reads in a newer view than its anchor: the rows changed
                // in between are taken as they were at the anchor, from the binlog
                let changed = match &view {
                    Some(view) => {
                        match streamer.changed_between(&cp.position, view, stop).await? {
                            Some(changed) => changed,
                            None => return Ok(()), // stopped; nothing was sent
                        }
                    }
                    None => Default::default(),
                };
                if let Some(view) = &view {
                    tracing::info!(anchor = %cp.position, view = %view, keys_changed = changed.len(), "resuming the snapshot in a new read view; rows changed since the anchor are taken from the binlog");
                }
                let done = snapshot::run(
                    &mut streamer,
                    conn,
                    facts,
                    cp,
                    changed,
                    cfg.snapshot_chunk,
                    cfg.snapshot_max_rows_per_sec,
                    stop,
                )
                .await?;
                if !done || only {
                    // stopped, or a one-time backfill: commit what is complete
                    streamer.sink.finish(false).await?;
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
    let max_message_bytes = kafka::message_max_bytes(&cfg.kafka_options);
    let tracker = track_acks(
        ack_rx,
        writer,
        last,
        &names,
        &max_message_bytes,
        cfg.delivery_timeout_ms.max(1),
        metrics,
    );
    tokio::pin!(reader, tracker);
    // A failed delivery ends the session at once: the reader is dropped (it may be waiting for
    // binlog events that never come while the source is idle), its transaction is never
    // committed, and the next session resumes from the last committed checkpoint.
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
    track_res.map_err(&fenced)?;
    read_res.map_err(&fenced)
}

/// Refuses a topic whose last records another connector or source wrote (their positions
/// cannot be compared with this connector's), and a topic holding this connector's records
/// without its checkpoint.
fn check_tails(
    names: &SinkNames,
    tails: &[Option<kafka::Tail>],
    has_checkpoint: bool,
    format: &str,
) -> Result<()> {
    let expected = format!(
        "connector {:?} from source {}",
        names.connector, names.source
    );
    for (p, tail) in tails.iter().enumerate() {
        let Some(t) = tail else { continue };
        let found = match (&t.writer, &t.source) {
            // this connector's: its source is checked against the checkpoint (check_source,
            // which names the recovery)
            (Some(w), Some(_)) if *w == names.connector => {
                if !has_checkpoint {
                    return Err(Error::Preflight(format!(
                        "topic {} partition {p} holds records of connector {:?}, but {} holds no \
                         checkpoint of it (deleted or recreated?): rtis cannot tell what the topic \
                         holds. Restore that topic, or start over with a new topic and state file",
                        names.topic,
                        names.connector,
                        crate::sink::checkpoint_topic(&names.topic)
                    )));
                }
                if let Some(found) = t.format.filter(|f| *f != format) {
                    return Err(Error::Preflight(format!(
                        "--format: topic {} partition {p} holds records of this connector in format \
                         {found} (its last, offset {}), and this producer writes {format}. A key's \
                         bytes, and so its partition, differ between formats: per-key order and \
                         compaction would break. Keep --format {found}, or write the new format to a \
                         new topic (with a new --state file)",
                        names.topic, t.offset
                    )));
                }
                continue;
            }
            (Some(w), Some(s)) => format!("connector {w:?} from source {s}"),
            _ => "a writer that is not this version of rtis (no rtis.writer/rtis.source headers)"
                .to_string(),
        };
        return Err(Error::ForeignWriter {
            topic: names.topic.clone(),
            partition: p as i32,
            offset: t.offset,
            found,
            expected,
        });
    }
    Ok(())
}

/// Refuses a checkpoint taken on another source server.
fn check_source(connector: &str, cp: &Checkpoint, facts: &preflight::SourceFacts) -> Result<()> {
    let Some(src) = &cp.source else {
        return Ok(());
    };
    let same = src.server_id == facts.source.server_id
        && (src.server_uuid.is_none()
            || facts.source.server_uuid.is_none()
            || src.server_uuid == facts.source.server_uuid);
    if same {
        return Ok(());
    }
    let recovery = match &cp.gtid {
        Some(g) => format!(
            "If the new server replicated the old one's transactions, resume after the last captured \
             one with `rtis-producer reset --state <state file> --to-gtid {g} --mysql-url <url>`; \
             otherwise start over with a new topic and state file (a fresh snapshot)"
        ),
        None => "No GTID is known for the checkpoint: start over with a new topic and state file \
                 (a fresh snapshot), or move the checkpoint with `rtis-producer reset --to-position` \
                 if you know the matching position on the new server"
            .to_string(),
    };
    Err(Error::SourceChanged {
        connector: connector.to_string(),
        position: cp.position.to_string(),
        checkpoint: src.to_string(),
        found: facts.source.to_string(),
        recovery,
    })
}

/// Awaits acknowledgements in order; queues a checkpoint once every record before it is acked.
async fn track_acks(
    mut rx: mpsc::Receiver<Ack>,
    writer: &CheckpointWriter,
    last: &watch::Sender<Option<Checkpoint>>,
    names: &SinkNames,
    max_message_bytes: &str,
    delivery_timeout_ms: u64,
    metrics: &ProducerMetrics,
) -> Result<()> {
    let (topic, binlog_base) = (&names.topic, names.binlog_base.as_deref());
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
                            position: crate::position::describe(binlog_base, &pos),
                            record: pos.to_string(),
                            size,
                            limit: format!(
                                "{} here; the broker refused it: {e}",
                                max_message_bytes
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
