//! Snapshot: backfills the table's rows, anchored to a binlog position, resumable, and hands
//! over to the binlog stream with no gap.
//!
//! Why the handover has no gap and never goes back in time:
//! * The rows are read inside one consistent-snapshot transaction whose binlog position is
//!   known exactly (MariaDB: `START TRANSACTION WITH CONSISTENT SNAPSHOT` + `binlog_snapshot_*`,
//!   lock-free; MySQL: the same under a brief `FLUSH TABLES WITH READ LOCK`). That position is the
//!   anchor: the snapshot shows every transaction before it and none after, and streaming starts
//!   at the anchor, so every later change arrives from the binlog — including deletes.
//! * All snapshot rows are emitted before any binlog change, so no snapshot row can follow (and
//!   overwrite) a newer binlog change of the same key.
//! * Resuming after a crash: the cursor `(last_updated, id)` of the last committed chunk is in
//!   the checkpoint, and the anchor stays the first snapshot's. Each chunk's rows commit in one
//!   Kafka transaction with the checkpoint holding the cursor after them (see [`crate::sink`]),
//!   so the resumed snapshot starts exactly after the last committed row, whichever partitions'
//!   leaders were slow when the producer died.
//! * The rest is read from a new consistent view at a later position V, which shows the changes
//!   made between the anchor A and V: a row updated there has a newer `last_updated` (it moved
//!   behind the cursor and would be read twice), a row inserted there did not exist at A, and
//!   a row updated or deleted there shows a value the binlog changes from A would then repeat.
//!   So before reading, the binlog from A to V is scanned (nothing emitted) for the keys it
//!   changes, with each key's first before image: the row as it was at A. The view's copy of
//!   those keys is skipped, and their rows at A, where still ahead of the cursor, are emitted
//!   in their place in A's order. Rows the view shows unchanged are as they were at A. The
//!   records are then exactly a snapshot at A, and the stream from A follows with every change.
//!   A crash during the resumed read resumes the same way (the scan from A covers it again).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, Row, Value};
use tokio::sync::watch;

use crate::checkpoint::{Checkpoint, SnapshotState, SortKey};
use crate::error::{Error, Result};
use crate::position::{BinlogPosition, SourcePos};
use crate::preflight::{self, SourceFacts};
use crate::replication::Streamer;
use crate::schema::ColumnKind;
use crate::value::{convert, format_micros, Datum};

/// Opens a consistent read view and returns its exact binlog position.
pub async fn open_consistent(opts: &Opts, mariadb: bool) -> Result<(Conn, BinlogPosition)> {
    let mut conn = preflight::connect(opts).await?;
    let q = |e| Error::mysql("opening the snapshot transaction", e);
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .map_err(q)?;
    // text as its stored bytes, in the column's charset (as row events carry it), so one
    // decoder serves both paths: a conversion to the connection's utf8mb4 here would be decoded
    // a second time as the column's charset
    conn.query_drop("SET SESSION character_set_results = binary")
        .await
        .map_err(q)?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(q)?;
    if mariadb {
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(q)?;
        let vars: Vec<(String, String)> = conn
            .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
            .await
            .map_err(q)?;
        let get = |k: &str| {
            vars.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        match (get("binlog_snapshot_file"), get("binlog_snapshot_position").and_then(|p| p.parse().ok())) {
            (Some(f), Some(p)) if !f.is_empty() => Ok((conn, BinlogPosition::new(f, p))),
            _ => Err(Error::Preflight("binlog_snapshot_file/position: expected the snapshot's binlog position, found none (is log_bin ON?)".into())),
        }
    } else {
        if let Err(e) = conn.query_drop("FLUSH TABLES WITH READ LOCK").await {
            return Err(Error::Preflight(format!(
                "snapshot on MySQL: expected the RELOAD privilege for a brief FLUSH TABLES WITH READ LOCK \
                 (to pin the snapshot's binlog position), found it missing ({e}); grant RELOAD or use --snapshot never"
            )));
        }
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(q)?;
        let pos = preflight::binlog_end(&mut conn, false).await;
        conn.query_drop("UNLOCK TABLES").await.map_err(q)?;
        Ok((conn, pos?.0))
    }
}

fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// Checks the table can be paginated by `(timestamp column, primary key)`.
pub fn check_snapshot_shape(facts: &SourceFacts) -> Result<()> {
    let t = &facts.schema;
    let ts = &t.columns[facts.timestamp_column];
    if !matches!(ts.kind, ColumnKind::Timestamp | ColumnKind::DateTime) || ts.nullable {
        return Err(Error::Schema(format!(
            "--timestamp-column {}: the snapshot pages by it, so it must be a NOT NULL TIMESTAMP or DATETIME",
            ts.name
        )));
    }
    let key_ok = t.key.len() == 1
        && matches!(
            t.columns[t.key[0]].kind,
            ColumnKind::Int32 | ColumnKind::Int64 | ColumnKind::UInt64
        );
    if !key_ok {
        return Err(Error::Schema(format!(
            "`{}`.`{}`: the snapshot pages by (timestamp, primary key) and needs a single integer primary key",
            t.db, t.table
        )));
    }
    Ok(())
}

fn sort_key(facts: &SourceFacts, row: &[Datum]) -> Option<SortKey> {
    let ts_us = match row[facts.timestamp_column] {
        Datum::TimestampMicros(t) | Datum::DateTimeMicros(t) => t,
        _ => return None,
    };
    let id = match row[facts.schema.key[0]] {
        Datum::Int(i) => i as i128,
        Datum::UInt(u) => u as i128,
        _ => return None,
    };
    Some(SortKey { ts_us, id })
}

fn text_time(us: i64) -> String {
    format_micros(us).replace('T', " ")
}

fn id_param(id: i128) -> Value {
    if id >= 0 {
        Value::UInt(id as u64)
    } else {
        Value::Int(id as i64)
    }
}

/// Reads the snapshot in chunks from `conn` (inside its consistent transaction) and emits every
/// row; checkpoints after each chunk. `changed`: the keys changed between the anchor and the
/// view, with their rows at the anchor ([`Streamer::changed_between`]). Returns `false` if
/// stopped before the end.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    streamer: &mut Streamer<'_>,
    mut conn: Conn,
    facts: &SourceFacts,
    mut cp: Checkpoint,
    changed: HashMap<i128, Option<Vec<Datum>>>,
    chunk: u64,
    max_rows_per_sec: u64,
    stop: &watch::Receiver<bool>,
) -> Result<bool> {
    let mut state: SnapshotState = cp.snapshot.clone().expect("snapshot state");
    let prepared = streamer
        .prepare(facts.schema.clone(), String::new())
        .await?;
    let anchor = SourcePos {
        file_seq: cp.position.file_seq(),
        pos: cp.position.pos,
        row: 0,
        sub: 0,
    };
    streamer.set_source(&cp.position.file, cp.gtid.clone());
    let t = &facts.schema;
    let cols: Vec<String> = t.columns.iter().map(|c| quote(&c.name)).collect();
    let ts = quote(&t.columns[facts.timestamp_column].name);
    let id = quote(&t.columns[t.key[0]].name);
    let table = format!("{}.{}", quote(&t.db), quote(&t.table));
    let since = state.since_us.map(text_time);
    let since_sql = if since.is_some() {
        format!("{ts} >= ?")
    } else {
        "1 = 1".to_string()
    };
    let q = |e| Error::mysql(format!("reading the snapshot of {table}"), e);
    let total: u64 = match &since {
        Some(s) => {
            conn.exec_first(
                format!("SELECT COUNT(*) FROM {table} WHERE {since_sql}"),
                (s.clone(),),
            )
            .await
        }
        None => {
            conn.query_first(format!("SELECT COUNT(*) FROM {table}"))
                .await
        }
    }
    .map_err(q)?
    .unwrap_or(0);
    tracing::info!(anchor = %cp.position, rows_total = total, rows_done = state.rows, cursor = ?state.cursor.map(|c| c.to_string()), "snapshot running");
    let select = cols.join(", ");
    let first =
        format!("SELECT {select} FROM {table} WHERE {since_sql} ORDER BY {ts}, {id} LIMIT {chunk}");
    // Two index range scans instead of `ts > ? OR (ts = ? AND id > ?)`, which the optimizer
    // reads as one scan from the start of the cursor's timestamp: with many rows sharing a
    // timestamp (one bulk statement), every chunk would rescan them all.
    let next = format!(
        "SELECT * FROM ((SELECT {select} FROM {table} WHERE {ts} = ? AND {id} > ? ORDER BY {id} LIMIT {chunk}) \
         UNION ALL (SELECT {select} FROM {table} WHERE {since_sql} AND {ts} > ? ORDER BY {ts}, {id} LIMIT {chunk})) \
         AS chunk ORDER BY {ts}, {id} LIMIT {chunk}"
    );
    // Rows changed since the anchor (a resumed snapshot's view is newer than its anchor): the
    // view's copy is skipped, and the row as it was at the anchor (the first change's before
    // image) is emitted in its place in the anchor's order, if it is still ahead of the cursor.
    // Rows the view shows unchanged are as they were at the anchor.
    let mut restored: BTreeMap<SortKey, Vec<Datum>> = BTreeMap::new();
    for row in changed.values().flatten() {
        if let Some(k) = sort_key(facts, row) {
            let ahead = state.cursor.is_none_or(|c| k > c);
            if ahead && state.since_us.is_none_or(|s| k.ts_us >= s) {
                restored.insert(k, row.clone());
            }
        }
    }
    if !changed.is_empty() {
        tracing::info!(
            keys_changed = changed.len(),
            rows_restored = restored.len(),
            "snapshot rows changed since the anchor are emitted as they were at the anchor"
        );
    }
    let started = Instant::now();
    let start_rows = state.rows;
    // a progress bar on a terminal, periodic log lines otherwise
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let b = indicatif::ProgressBar::new(total.max(state.rows));
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "snapshot {bar:40} {pos}/{len} rows  {per_sec}  ETA {eta}",
            )
            .expect("progress template"),
        );
        b.set_position(state.rows);
        b
    });
    let mut logged = Instant::now();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    loop {
        if *stop.borrow() {
            return Ok(false);
        }
        let mut params: Vec<Value> = Vec::new();
        if let Some(s) = &since {
            params.push(Value::from(s.clone()));
        }
        let rows: Vec<Row> = match state.cursor {
            None => conn.exec(first.as_str(), params).await,
            Some(c) => {
                let t = text_time(c.ts_us);
                let mut p = vec![Value::from(t.clone()), id_param(c.id)];
                p.extend(params);
                p.push(Value::from(t));
                conn.exec(next.as_str(), p).await
            }
        }
        .map_err(q)?;
        let n = rows.len() as u64;
        for row in rows {
            let values = row.unwrap();
            let mut datums = Vec::with_capacity(values.len());
            for (col, v) in t.columns.iter().zip(values) {
                datums.push(convert(col, v).map_err(|e| Error::Binlog {
                    position: format!("snapshot of {table}"),
                    msg: e.to_string(),
                })?);
            }
            let key = sort_key(facts, &datums).ok_or_else(|| Error::Binlog {
                position: format!("snapshot of {table}"),
                msg: "row without a sort key".into(),
            })?;
            // restored rows that come before this one in the anchor's order
            while let Some(entry) = restored.first_entry().filter(|e| *e.key() < key) {
                let (k, row) = entry.remove_entry();
                streamer
                    .emit_snapshot_row(&prepared, row, anchor, state.rows as u32, now_ms())
                    .await?;
                state.rows += 1;
                state.cursor = Some(k);
            }
            if !changed.contains_key(&key.id) {
                streamer
                    .emit_snapshot_row(&prepared, datums, anchor, state.rows as u32, now_ms())
                    .await?;
                state.rows += 1;
            }
            state.cursor = Some(key);
        }
        if n < chunk {
            // the view has no more rows: the restored ones left come after all of them
            while let Some((k, row)) = restored.pop_first() {
                streamer
                    .emit_snapshot_row(&prepared, row, anchor, state.rows as u32, now_ms())
                    .await?;
                state.rows += 1;
                state.cursor = Some(k);
            }
        }
        cp.snapshot = Some(state.clone());
        cp.last_updated_us = streamer.last_updated_us;
        streamer.checkpoint(cp.clone()).await?;
        streamer.metrics.snapshot_progress(state.rows, total);
        if let Some(b) = &bar {
            b.set_length(total.max(state.rows));
            b.set_position(state.rows);
        }
        if logged.elapsed() > Duration::from_secs(5) || n < chunk {
            let rate =
                (state.rows - start_rows) as f64 / started.elapsed().as_secs_f64().max(0.001);
            let eta = total.saturating_sub(state.rows) as f64 / rate.max(1.0);
            tracing::info!(
                rows_done = state.rows,
                rows_total = total,
                rows_per_s = rate as u64,
                eta_s = eta as u64,
                "snapshot progress"
            );
            logged = Instant::now();
        }
        if n < chunk {
            break;
        }
        if max_rows_per_sec > 0 {
            // pace the reads: the rows read so far may not come earlier than the rate allows
            let due =
                Duration::from_secs_f64((state.rows - start_rows) as f64 / max_rows_per_sec as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    conn.query_drop("COMMIT").await.map_err(q)?;
    let _ = conn.disconnect().await;
    cp.snapshot = None;
    streamer.checkpoint(cp).await?;
    tracing::info!(
        rows = state.rows,
        "snapshot complete; handing over to the binlog stream at the anchor"
    );
    Ok(true)
}
