//! Preflight: everything the source must provide, checked before anything is read or written,
//! each failure naming the setting, what rtis expects and what it found.

use std::collections::HashMap;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Row};

use crate::error::{Error, Result};
use crate::position::{BinlogPosition, SourceId};
use crate::schema::{InfoColumn, TableSchema};

/// Facts about the source learned at start.
#[derive(Debug, Clone)]
pub struct SourceFacts {
    pub mariadb: bool,
    pub version: String,
    pub server_id: u32,
    /// The server's identity: positions are comparable only within one source.
    pub source: SourceId,
    pub schema: TableSchema,
    /// Collation id → charset name, to decode text columns of binlog rows.
    pub collations: HashMap<u16, String>,
    pub key_names: Vec<String>,
    /// Index of the `--timestamp-column` in the schema.
    pub timestamp_column: usize,
    /// The binlog files' name before the numeric suffix (`mysql-bin`), to name positions.
    pub binlog_base: Option<String>,
    /// `--zero-dates`, applied to every schema built for the table (also from table maps).
    pub zero_dates: crate::schema::ZeroDates,
}

/// Builds connection options from the URL and the separate password, with a bounded connect.
pub fn mysql_opts(url: &str, password: Option<&str>) -> Result<Opts> {
    let opts = Opts::from_url(url).map_err(|e| {
        Error::Config(format!(
            "--mysql-url: expected mysql://USER[:PASSWORD]@HOST:PORT/DB, found an invalid URL ({e})"
        ))
    })?;
    if opts.db_name().is_none_or(str::is_empty) {
        return Err(Error::Config(
            "--mysql-url: expected a database name in the path (mysql://USER@HOST:PORT/DB), found none".into(),
        ));
    }
    let mut b = OptsBuilder::from_opts(opts).prefer_socket(false);
    if let Some(p) = password {
        b = b.pass(Some(p.to_string()));
    }
    Ok(b.into())
}

/// Connects with a bounded wait and an actionable message.
pub async fn connect(opts: &Opts) -> Result<Conn> {
    let target = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    let user = opts.user().unwrap_or("").to_string();
    match tokio::time::timeout(std::time::Duration::from_secs(15), Conn::new(opts.clone())).await {
        Err(_) => Err(Error::StreamLost {
            position: target.clone(),
            msg: format!("connecting to MySQL at {target} timed out after 15s"),
        }),
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => {
            let ctx = match &e {
                mysql_async::Error::Server(s) if s.code == 1045 => {
                    return Err(Error::Preflight(format!(
                        "--mysql-url / RTIS_MYSQL_PASSWORD: access denied for user {user:?} at {target}: \
                         check the user name and password ({})",
                        s.message
                    )))
                }
                mysql_async::Error::Server(s) if s.code == 1049 => {
                    return Err(Error::Preflight(format!(
                        "--mysql-url: the database in the URL does not exist at {target} ({})",
                        s.message
                    )))
                }
                mysql_async::Error::Io(_) => format!(
                    "connecting to {target} (check --mysql-url host and port; is the server running?)"
                ),
                _ => format!("connecting to {target}"),
            };
            Err(Error::mysql(ctx, e))
        }
    }
}

/// Reads global variables by name (missing ones are absent from the map).
pub async fn variables(conn: &mut Conn, names: &[&str]) -> Result<HashMap<String, String>> {
    let list = names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(",");
    let rows: Vec<(String, String)> = conn
        .query(format!(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ({list})"
        ))
        .await
        .map_err(|e| Error::mysql("reading server variables", e))?;
    Ok(rows
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect())
}

/// The server's identity (`server_id`, and `server_uuid` where the server has one).
pub async fn source_id(conn: &mut Conn) -> Result<SourceId> {
    let vars = variables(conn, &["server_id", "server_uuid"]).await?;
    Ok(SourceId {
        server_id: vars
            .get("server_id")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        server_uuid: vars.get("server_uuid").filter(|u| !u.is_empty()).cloned(),
    })
}

/// Current end of the binlog and the server's GTID position.
pub async fn binlog_end(
    conn: &mut Conn,
    mariadb: bool,
) -> Result<(BinlogPosition, Option<String>)> {
    let mut row: Option<Row> = None;
    for q in ["SHOW BINARY LOG STATUS", "SHOW MASTER STATUS"] {
        match conn.query_first::<Row, _>(q).await {
            Ok(r) => {
                row = r;
                break;
            }
            Err(mysql_async::Error::Server(s)) if s.code == 1227 => {
                return Err(Error::Preflight(format!(
                    "grants: expected REPLICATION CLIENT (BINLOG MONITOR on MariaDB) for the connector's user, \
                     found it missing ({})",
                    s.message
                )))
            }
            Err(mysql_async::Error::Server(_)) => continue, // syntax not known by this version
            Err(e) => return Err(Error::mysql("reading the binlog position", e)),
        }
    }
    let row = row.ok_or_else(|| {
        Error::Preflight(
            "log_bin: expected ON, found the binary log disabled (SHOW MASTER STATUS is empty)"
                .into(),
        )
    })?;
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or(4);
    let gtid = if mariadb {
        conn.query_first::<String, _>("SELECT @@GLOBAL.gtid_binlog_pos")
            .await
            .ok()
            .flatten()
    } else {
        row.get::<Option<String>, _>("Executed_Gtid_Set").flatten()
    }
    .filter(|g| !g.is_empty());
    Ok((BinlogPosition::new(file, pos), gtid))
}

/// Binlog files the server still has, oldest first.
pub async fn binlog_files(conn: &mut Conn) -> Result<Vec<String>> {
    let rows: Vec<Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| Error::mysql("listing binlog files (SHOW BINARY LOGS)", e))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.get::<String, _>(0))
        .collect())
}

/// Runs every check; returns the facts the pipeline needs.
pub async fn check_source(
    conn: &mut Conn,
    db: &str,
    table: &str,
    ts_col: &str,
) -> Result<SourceFacts> {
    let version: String = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| Error::mysql("reading the server version", e))?
        .unwrap_or_default();
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let vars = variables(
        conn,
        &[
            "log_bin",
            "binlog_format",
            "binlog_row_image",
            "binlog_row_metadata",
            "server_id",
            "server_uuid",
            "encrypt_binlog",
            "log_bin_basename",
        ],
    )
    .await?;
    let get = |k: &str| {
        vars.get(k)
            .map(String::as_str)
            .unwrap_or("(not set: unknown to this server)")
    };
    let expect = |k: &str, want: &str, hint: &str| -> Result<()> {
        let found = get(k);
        if found.eq_ignore_ascii_case(want) {
            Ok(())
        } else {
            Err(Error::Preflight(format!(
                "{k}: expected {want}, found {found}. {hint}"
            )))
        }
    };
    expect(
        "log_bin",
        "ON",
        "Start the server with --log-bin (binary logging is required for CDC).",
    )?;
    expect(
        "binlog_format",
        "ROW",
        "Set binlog_format=ROW in the server config (STATEMENT/MIXED do not carry row images).",
    )?;
    expect(
        "binlog_row_image",
        "FULL",
        "Set binlog_row_image=FULL so updates and deletes carry every column.",
    )?;
    expect(
        "binlog_row_metadata",
        "FULL",
        "Set binlog_row_metadata=FULL (MariaDB >= 10.5, MySQL >= 8.0.1): without it unsigned columns and column names are lost.",
    )?;
    for (k, hint) in [(
        "encrypt_binlog",
        "rtis cannot read encrypted binlogs over the replication protocol; set encrypt_binlog=OFF.",
    )] {
        if vars.get(k).is_some_and(|v| v.eq_ignore_ascii_case("ON")) {
            return Err(Error::Preflight(format!(
                "{k}: expected OFF, found ON. {hint}"
            )));
        }
    }
    let server_id: u32 = get("server_id").parse().unwrap_or(0);
    let source = SourceId {
        server_id,
        // MySQL has a server_uuid; MariaDB identifies servers by server_id (unique among replicas)
        server_uuid: vars.get("server_uuid").filter(|u| !u.is_empty()).cloned(),
    };

    // grants: REPLICATION SLAVE cannot be probed without starting a dump; read SHOW GRANTS
    let grants: Vec<String> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(|e| Error::mysql("reading the connector user's grants", e))?;
    let all = grants.join("\n").to_ascii_uppercase();
    let has = |p: &str| all.contains(p) || all.contains("ALL PRIVILEGES");
    if !(has("REPLICATION SLAVE") || has("REPLICATION REPLICA")) {
        return Err(Error::Preflight(format!(
            "grants: expected REPLICATION SLAVE for the connector's user, found: {}",
            grants.join("; ")
        )));
    }
    binlog_end(conn, mariadb).await?; // probes REPLICATION CLIENT / BINLOG MONITOR

    // table, columns, key
    let cols: Vec<Row> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE, CHARACTER_SET_NAME
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(|e| Error::mysql("reading the table's columns", e))?;
    if cols.is_empty() {
        return Err(Error::Preflight(format!(
            "--table: expected table `{db}`.`{table}` to exist and be readable by the connector's user \
             (GRANT SELECT ON `{db}`.`{table}`), found no such table"
        )));
    }
    let info: Vec<InfoColumn> = cols
        .into_iter()
        .map(|r| InfoColumn {
            name: r.get(0).unwrap_or_default(),
            data_type: r.get(1).unwrap_or_default(),
            column_type: r.get(2).unwrap_or_default(),
            nullable: r.get::<String, _>(3).unwrap_or_default() == "YES",
            precision: r.get::<Option<u64>, _>(4).flatten().map(|v| v as u32),
            scale: r.get::<Option<u64>, _>(5).flatten().map(|v| v as u32),
            charset: r.get::<Option<String>, _>(6).flatten(),
        })
        .collect();
    let key_names: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(|e| Error::mysql("reading the table's primary key", e))?;
    if key_names.is_empty() {
        return Err(Error::Preflight(format!(
            "table `{db}`.`{table}`: expected a PRIMARY KEY (records are keyed by it), found none"
        )));
    }
    let schema = TableSchema::from_information_schema(db, table, &info, &key_names)?;
    let timestamp_column = schema.column_index(ts_col).ok_or_else(|| {
        Error::Preflight(format!(
            "--timestamp-column: expected a column `{ts_col}` in `{db}`.`{table}`, found columns {}",
            schema.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    if let Err(e) = conn
        .query_drop(format!(
            "SELECT 1 FROM `{}`.`{}` LIMIT 0",
            db.replace('`', "``"),
            table.replace('`', "``")
        ))
        .await
    {
        return Err(Error::Preflight(format!(
            "grants: expected SELECT on `{db}`.`{table}` for the connector's user, found it missing ({e})"
        )));
    }
    let collations: HashMap<u16, String> = conn
        .query::<(Option<u64>, Option<String>), _>(
            "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS",
        )
        .await
        .map_err(|e| Error::mysql("reading collations", e))?
        .into_iter()
        .filter_map(|(id, cs)| Some((id? as u16, cs?)))
        .collect();
    Ok(SourceFacts {
        mariadb,
        version,
        server_id,
        source,
        schema,
        collations,
        key_names,
        timestamp_column,
        zero_dates: Default::default(),
        binlog_base: vars
            .get("log_bin_basename")
            .and_then(|p| p.rsplit('/').next())
            .filter(|b| !b.is_empty())
            .map(str::to_string),
    })
}
