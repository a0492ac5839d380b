//! Operator commands of `rtis-producer`: `status` (show the checkpoint) and `reset` (move it).
//!
//! `reset` takes the same exclusive lock as a running producer, so it refuses while one runs.
//! The checkpoint it writes is marked as a reset: on the next start it overrides the checkpoint
//! the topic holds (`<topic>-checkpoints`). Moving it never re-sends what the topic already
//! holds: records below the topic's checkpoint are skipped. Moving it *forward* skips changes on
//! purpose; moving it back only re-reads the binlog. `--snapshot` asks the next start for a new
//! snapshot, whatever the topic holds.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use mysql_async::prelude::Queryable;
use serde_json::json;

use crate::checkpoint::{Checkpoint, CheckpointStore, Status};
use crate::error::{Error, Result};
use crate::position::BinlogPosition;

/// Operator commands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Print the checkpoint: binlog position, GTID, last timestamps, snapshot phase and cursor.
    Status(StatusArgs),
    /// Move the checkpoint (refused while a producer runs on the state file).
    Reset(ResetArgs),
}

/// `rtis-producer status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// SQLite checkpoint file.
    #[arg(long, env = "RTIS_STATE", default_value = "state/rtis.sqlite")]
    pub state: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `rtis-producer reset`: exactly one of `--to-position`, `--to-gtid`, `--snapshot`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).multiple(false))]
pub struct ResetArgs {
    /// SQLite checkpoint file.
    #[arg(long, env = "RTIS_STATE", default_value = "state/rtis.sqlite")]
    pub state: PathBuf,

    /// Resume streaming at this binlog position, FILE:POS (the start of a transaction).
    #[arg(long, group = "target", value_name = "FILE:POS")]
    pub to_position: Option<BinlogPosition>,

    /// Resume streaming after the transaction with this GTID (MariaDB `D-S-N`, MySQL
    /// `UUID:N`); looked up in the source's binlogs, so `--mysql-url` is needed.
    #[arg(long, group = "target", requires = "mysql_url", value_name = "GTID")]
    pub to_gtid: Option<String>,

    /// Forget the checkpoint: the next start takes a new snapshot (with `--snapshot initial`).
    #[arg(long, group = "target")]
    pub snapshot: bool,

    /// Source database for `--to-gtid`: mysql://USER[:PASSWORD]@HOST:PORT/DB.
    #[arg(long, env = "RTIS_MYSQL_URL", hide_env_values = true)]
    pub mysql_url: Option<String>,

    /// Password for the source database. Never logged.
    #[arg(long, env = "RTIS_MYSQL_PASSWORD", hide_env_values = true, hide = true)]
    pub mysql_password: Option<String>,
}

/// ISO-8601 UTC with microseconds.
fn utc(us: i64) -> String {
    format!("{}Z", crate::value::format_micros(us))
}

fn iso_ms(ms: i64) -> String {
    utc(ms.saturating_mul(1000))
}

/// The status as JSON (what `status --json` prints).
pub fn status_json(path: &std::path::Path, st: &Status) -> serde_json::Value {
    let cp = st.checkpoint.as_ref();
    let phase = match cp {
        None => "none",
        Some(c) => match &c.snapshot {
            Some(s) if s.only => "snapshot-only",
            Some(_) => "snapshot",
            None => "streaming",
        },
    };
    json!({
        "state": path.display().to_string(),
        "producer_running": st.locked,
        "phase": phase,
        "binlog_file": cp.map(|c| c.position.file.clone()),
        "binlog_pos": cp.map(|c| c.position.pos),
        "gtid": cp.and_then(|c| c.gtid.clone()),
        "last_commit_time": cp.filter(|c| c.last_commit_ts_ms > 0).map(|c| iso_ms(c.last_commit_ts_ms)),
        "last_updated": cp.and_then(|c| c.last_updated_us).map(utc),
        "snapshot": cp.and_then(|c| c.snapshot.as_ref()).map(|s| json!({
            "rows_done": s.rows,
            "cursor": s.cursor.map(|k| json!({
                "last_updated": utc(k.ts_us),
                "id": k.id.to_string(),
            })),
            "since": s.since_us.map(utc),
            "only": s.only,
        })),
        "written_at": st.written_at_ms.map(iso_ms),
    })
}

/// The status as text (what `status` prints).
pub fn status_text(path: &std::path::Path, st: &Status) -> String {
    let j = status_json(path, st);
    let s = |k: &str| match &j[k] {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<17} {v}\n"));
    line("state file:", s("state"));
    line(
        "producer:",
        if st.locked {
            "running (holds the state file)".into()
        } else {
            "not running".into()
        },
    );
    line("phase:", s("phase"));
    if let Some(cp) = &st.checkpoint {
        line("binlog position:", cp.position.to_string());
    }
    line("gtid:", s("gtid"));
    line("last commit:", s("last_commit_time"));
    line("last_updated:", s("last_updated"));
    if let Some(sn) = st.checkpoint.as_ref().and_then(|c| c.snapshot.as_ref()) {
        line("snapshot rows:", sn.rows.to_string());
        line(
            "snapshot cursor:",
            sn.cursor.map_or("-".into(), |k| {
                format!("last_updated {} id {}", utc(k.ts_us), k.id)
            }),
        );
        line(
            "snapshot since:",
            sn.since_us.map_or("all rows".into(), utc),
        );
    }
    let written = match st.written_at_ms {
        Some(ms) => format!(
            "{} ({} s ago)",
            iso_ms(ms),
            (crate::metrics::now_ms() - ms).max(0) / 1000
        ),
        None => "-".into(),
    };
    line("written at:", written);
    out
}

/// Runs `status`; returns what to print.
pub fn status(args: &StatusArgs) -> Result<String> {
    let st = CheckpointStore::inspect(&args.state)?;
    Ok(if args.json {
        format!("{}\n", status_json(&args.state, &st))
    } else {
        status_text(&args.state, &st)
    })
}

/// Runs `reset`; returns a description of what changed.
pub async fn reset(args: &ResetArgs) -> Result<String> {
    let target = match (&args.to_position, &args.to_gtid) {
        (Some(p), _) => Some((p.clone(), None, None)),
        (None, Some(g)) => {
            let url = args.mysql_url.as_deref().ok_or_else(|| {
                Error::Config(
                    "--to-gtid: expected --mysql-url to look the GTID up, found none".into(),
                )
            })?;
            let (pos, source) = position_after_gtid(url, args.mysql_password.as_deref(), g).await?;
            Some((pos, Some(g.clone()), Some(source)))
        }
        (None, None) => None,
    };
    let path = args.state.clone();
    tokio::task::spawn_blocking(move || {
        let store = CheckpointStore::open(&path).map_err(|e| match e {
            Error::State { path, msg } if msg.contains("locked") => Error::State {
                path,
                msg: "reset refused: a running rtis-producer holds this file; stop it first".into(),
            },
            other => other,
        })?;
        let old = store.load()?;
        let was = old
            .as_ref()
            .map_or("no checkpoint".to_string(), |c| c.position.to_string());
        match target {
            Some((position, gtid, source)) => {
                // --to-gtid names the server it found the GTID on (a failover target is
                // accepted that way); --to-position keeps the server of the old checkpoint
                let cp = Checkpoint {
                    gtid,
                    last_updated_us: old.as_ref().and_then(|c| c.last_updated_us),
                    source: source.or_else(|| old.as_ref().and_then(|c| c.source.clone())),
                    reset: true,
                    ..Checkpoint::at(position.clone())
                };
                store.save(&cp)?;
                Ok(format!(
                    "{}: checkpoint moved from {was} to {position}; the next start streams from there",
                    path.display()
                ))
            }
            None => {
                store.request_snapshot()?;
                Ok(format!(
                    "{}: checkpoint {was} removed; the next start (--snapshot initial) takes a new snapshot",
                    path.display()
                ))
            }
        }
    })
    .await
    .expect("reset thread")
}

/// Finds where to resume after the transaction `gtid`: the start of the next transaction's
/// GTID event, or the end of the file that holds it. Scans the newest binlog first.
pub async fn position_after_gtid(
    url: &str,
    password: Option<&str>,
    gtid: &str,
) -> Result<(BinlogPosition, crate::position::SourceId)> {
    let opts = crate::preflight::mysql_opts(url, password)?;
    let mut conn = crate::preflight::connect(&opts).await?;
    let source = crate::preflight::source_id(&mut conn).await?;
    let files = crate::preflight::binlog_files(&mut conn).await?;
    for file in files.iter().rev() {
        let rows: Vec<(String, u64, String, u64, u64, String)> = conn
            .query(format!(
                "SHOW BINLOG EVENTS IN '{}'",
                file.replace('\\', "\\\\").replace('\'', "''")
            ))
            .await
            .map_err(|e| Error::mysql(format!("reading the events of {file}"), e))?;
        if let Some(pos) = find_after_gtid(&rows, gtid) {
            let _ = conn.disconnect().await;
            return Ok((BinlogPosition::new(file.clone(), pos), source));
        }
    }
    let _ = conn.disconnect().await;
    Err(Error::Config(format!(
        "--to-gtid: expected a transaction {gtid} in the source's binlogs ({} .. {}), found none \
         (purged, or a GTID of another server)",
        files.first().map_or("none", String::as_str),
        files.last().map_or("none", String::as_str)
    )))
}

/// In `SHOW BINLOG EVENTS` rows (Log_name, Pos, Event_type, Server_id, End_log_pos, Info),
/// the position after the transaction whose GTID event names `gtid`.
fn find_after_gtid(rows: &[(String, u64, String, u64, u64, String)], gtid: &str) -> Option<u64> {
    let is_gtid = |ty: &str| ty.eq_ignore_ascii_case("Gtid");
    let names = |info: &str| {
        info.split(|c: char| c.is_whitespace() || c == '\'' || c == '=')
            .any(|t| t == gtid)
    };
    let at = rows.iter().position(|r| is_gtid(&r.2) && names(&r.5))?;
    Some(
        rows[at + 1..]
            .iter()
            .find(|r| is_gtid(&r.2))
            .map_or_else(|| rows.last().map_or(0, |r| r.4), |next| next.1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pos: u64, ty: &str, end: u64, info: &str) -> (String, u64, String, u64, u64, String) {
        ("b.000001".into(), pos, ty.into(), 1, end, info.into())
    }

    #[test]
    fn finds_the_position_after_a_gtid() {
        let rows = vec![
            ev(4, "Format_desc", 256, "Server ver"),
            ev(256, "Gtid_list", 285, "[]"),
            ev(328, "Gtid", 370, "BEGIN GTID 0-1-1"),
            ev(370, "Write_rows_v1", 420, "table_id: 1"),
            ev(420, "Xid", 451, "COMMIT /* xid=9 */"),
            ev(451, "Gtid", 493, "GTID 0-1-2"),
            ev(493, "Query", 600, "ALTER TABLE t ADD c INT"),
            ev(600, "Gtid", 642, "BEGIN GTID 0-1-3"),
            ev(642, "Xid", 673, "COMMIT"),
        ];
        assert_eq!(find_after_gtid(&rows, "0-1-1"), Some(451));
        assert_eq!(find_after_gtid(&rows, "0-1-2"), Some(600));
        assert_eq!(
            find_after_gtid(&rows, "0-1-3"),
            Some(673),
            "last: end of file"
        );
        assert_eq!(find_after_gtid(&rows, "0-1-"), None, "whole tokens only");
        assert_eq!(find_after_gtid(&rows, "0-1-4"), None);
        // MySQL's form
        let mysql = vec![
            ev(
                157,
                "Gtid",
                236,
                "SET @@SESSION.GTID_NEXT= '3e11fa47-71ca-11e1-9e33-c80aa9429562:23'",
            ),
            ev(236, "Xid", 300, "COMMIT"),
            ev(
                300,
                "Gtid",
                379,
                "SET @@SESSION.GTID_NEXT= '3e11fa47-71ca-11e1-9e33-c80aa9429562:24'",
            ),
        ];
        assert_eq!(
            find_after_gtid(&mysql, "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"),
            Some(300)
        );
    }
}
