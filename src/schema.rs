//! Table schema: the columns of the captured table and how each maps to an exact Avro type.
//!
//! A [`TableSchema`] is built from two sources that must agree:
//! * the binlog's TABLE_MAP event (with `binlog_row_metadata=FULL` it carries names, signedness,
//!   charsets and the primary key), used to decode each rows event with the schema that was in
//!   force when the event was written — so events written before an `ALTER TABLE` still decode;
//! * `information_schema.COLUMNS`, used at start (preflight, key schema, snapshot).
//!
//! Unsupported column types are a definite error naming the column, never a silent drop.

use std::collections::HashMap;

use mysql_async::binlog::events::{OptionalMetaExtractor, TableMapEvent};
use mysql_async::consts::ColumnType;

use crate::error::{Error, Result};

/// Character set of a text column, as far as decoding is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Charset {
    /// utf8mb4 / utf8mb3: validated UTF-8.
    Utf8,
    /// MySQL's latin1, which is Windows-1252.
    Latin1,
    /// 7-bit ASCII.
    Ascii,
}

/// How a column is represented in Avro.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnKind {
    /// TINYINT, SMALLINT, MEDIUMINT (signed or not) and signed INT → Avro `int`.
    Int32,
    /// INT UNSIGNED and signed BIGINT → Avro `long`.
    Int64,
    /// BIGINT UNSIGNED → Avro `decimal(20,0)` (bytes), so 2^64-1 does not overflow.
    UInt64,
    /// DECIMAL(p,s) → Avro `decimal(p,s)` (bytes, two's complement of the unscaled value).
    Decimal {
        precision: u32,
        scale: u32,
    },
    Float,
    Double,
    /// CHAR/VARCHAR/TEXT → Avro `string`, decoded from the column's charset.
    String(Charset),
    /// BINARY/VARBINARY/BLOB → Avro `bytes`.
    Bytes,
    /// TIMESTAMP(fsp) → Avro `timestamp-micros` (UTC).
    Timestamp,
    /// DATETIME(fsp) → Avro `local-timestamp-micros` (wall-clock time, no zone).
    DateTime,
    /// DATE → Avro `date`.
    Date,
}

/// One column of the captured table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnSpec {
    pub name: String,
    pub kind: ColumnKind,
    pub nullable: bool,
}

/// The captured table's columns and primary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableSchema {
    pub db: String,
    pub table: String,
    pub columns: Vec<ColumnSpec>,
    /// Indexes into `columns` of the primary-key columns, in key order.
    pub key: Vec<usize>,
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }
}

fn unsupported(db: &str, table: &str, column: &str, what: &str) -> Error {
    Error::Schema(format!(
        "column `{db}`.`{table}`.`{column}` has type {what}, which rtis does not capture yet \
         (supported: integer types, DECIMAL, FLOAT, DOUBLE, CHAR/VARCHAR/TEXT in utf8/utf8mb4/latin1/ascii, \
         BINARY/VARBINARY/BLOB, TIMESTAMP, DATETIME, DATE)"
    ))
}

fn check_name(db: &str, table: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Schema(format!(
            "column `{db}`.`{table}`.`{name}`: the name is not a valid Avro field name \
             (expected [A-Za-z_][A-Za-z0-9_]*)"
        )))
    }
}

/// Maps a charset name (`information_schema` spelling) to a [`ColumnKind`].
pub fn kind_for_charset(charset: &str) -> Option<ColumnKind> {
    match charset.to_ascii_lowercase().as_str() {
        "utf8" | "utf8mb3" | "utf8mb4" => Some(ColumnKind::String(Charset::Utf8)),
        "latin1" => Some(ColumnKind::String(Charset::Latin1)),
        "ascii" => Some(ColumnKind::String(Charset::Ascii)),
        "binary" => Some(ColumnKind::Bytes),
        _ => None,
    }
}

/// One row of `information_schema.COLUMNS` (the fields rtis reads).
#[derive(Debug, Clone)]
pub struct InfoColumn {
    pub name: String,
    pub data_type: String,
    pub column_type: String,
    pub nullable: bool,
    pub precision: Option<u32>,
    pub scale: Option<u32>,
    pub charset: Option<String>,
}

impl TableSchema {
    /// Builds the schema from `information_schema` rows (ordinal order) and the primary-key
    /// column names (key order).
    pub fn from_information_schema(
        db: &str,
        table: &str,
        cols: &[InfoColumn],
        key_names: &[String],
    ) -> Result<Self> {
        let mut columns = Vec::with_capacity(cols.len());
        for c in cols {
            check_name(db, table, &c.name)?;
            let unsigned = c.column_type.to_ascii_lowercase().contains("unsigned");
            let dt = c.data_type.to_ascii_lowercase();
            let kind = match dt.as_str() {
                "tinyint" | "smallint" | "mediumint" => ColumnKind::Int32,
                "int" | "integer" if unsigned => ColumnKind::Int64,
                "int" | "integer" => ColumnKind::Int32,
                "bigint" if unsigned => ColumnKind::UInt64,
                "bigint" => ColumnKind::Int64,
                "decimal" | "numeric" => ColumnKind::Decimal {
                    precision: c.precision.unwrap_or(10),
                    scale: c.scale.unwrap_or(0),
                },
                "float" => ColumnKind::Float,
                "double" | "real" => ColumnKind::Double,
                "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                    let cs = c.charset.as_deref().unwrap_or("binary");
                    kind_for_charset(cs).ok_or_else(|| {
                        unsupported(
                            db,
                            table,
                            &c.name,
                            &format!("{} CHARACTER SET {cs}", c.column_type),
                        )
                    })?
                }
                "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                    ColumnKind::Bytes
                }
                "timestamp" => ColumnKind::Timestamp,
                "datetime" => ColumnKind::DateTime,
                "date" => ColumnKind::Date,
                _ => return Err(unsupported(db, table, &c.name, &c.column_type)),
            };
            columns.push(ColumnSpec {
                name: c.name.clone(),
                kind,
                nullable: c.nullable,
            });
        }
        let mut key = Vec::with_capacity(key_names.len());
        for k in key_names {
            let idx = columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(k))
                .ok_or_else(|| {
                    Error::Schema(format!(
                        "primary-key column {k} of `{db}`.`{table}` not found"
                    ))
                })?;
            key.push(idx);
        }
        Ok(Self {
            db: db.to_string(),
            table: table.to_string(),
            columns,
            key,
        })
    }

    /// Builds the schema from a TABLE_MAP event written with `binlog_row_metadata=FULL`.
    ///
    /// `collations` maps collation ids to charset names (from `information_schema.COLLATIONS`).
    /// `fallback_key` names the key columns to use when the event carries no primary-key metadata.
    pub fn from_table_map(
        tme: &TableMapEvent<'_>,
        collations: &HashMap<u16, String>,
        fallback_key: &[String],
    ) -> Result<Self> {
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let meta_err = |e: std::io::Error| {
            Error::Schema(format!(
                "table map of `{db}`.`{table}`: bad optional metadata: {e}"
            ))
        };
        let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta()).map_err(meta_err)?;
        let mut signedness = extractor.iter_signedness();
        let mut charsets = extractor.iter_charset();
        let mut names = extractor.iter_column_name();
        let nulls = tme.null_bitmask();
        let n = tme.columns_count() as usize;
        let mut columns = Vec::with_capacity(n);
        for i in 0..n {
            let ty = tme
                .get_column_type(i)
                .map_err(|e| Error::Schema(format!("`{db}`.`{table}` column #{i}: {e}")))?
                .ok_or_else(|| Error::Schema(format!("`{db}`.`{table}` column #{i}: no type")))?;
            let meta = tme.get_column_metadata(i).unwrap_or(&[]);
            let name = match names.next() {
                Some(n) => n.map_err(meta_err)?.name().into_owned(),
                None => {
                    return Err(Error::Preflight(format!(
                        "the binlog's table map for `{db}`.`{table}` has no column names: \
                         binlog_row_metadata must be FULL (found MINIMAL for this event)"
                    )))
                }
            };
            check_name(&db, &table, &name)?;
            let unsigned = if ty.is_numeric_type() {
                signedness.next().unwrap_or(false)
            } else {
                false
            };
            let charset = if ty.is_character_type() {
                Some(charsets.next().transpose().map_err(meta_err)?.unwrap_or(63))
            } else {
                None
            };
            let text_kind = |what: &str| -> Result<ColumnKind> {
                let id = charset.unwrap_or(63);
                let cs = collations
                    .get(&id)
                    .map(String::as_str)
                    .unwrap_or(if id == 63 { "binary" } else { "unknown" });
                kind_for_charset(cs).ok_or_else(|| {
                    unsupported(
                        &db,
                        &table,
                        &name,
                        &format!("{what} CHARACTER SET {cs} (collation id {id})"),
                    )
                })
            };
            use ColumnType::*;
            let kind = match ty {
                MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 => ColumnKind::Int32,
                MYSQL_TYPE_LONG if unsigned => ColumnKind::Int64,
                MYSQL_TYPE_LONG => ColumnKind::Int32,
                MYSQL_TYPE_LONGLONG if unsigned => ColumnKind::UInt64,
                MYSQL_TYPE_LONGLONG => ColumnKind::Int64,
                MYSQL_TYPE_NEWDECIMAL if meta.len() >= 2 => ColumnKind::Decimal {
                    precision: meta[0] as u32,
                    scale: meta[1] as u32,
                },
                MYSQL_TYPE_FLOAT => ColumnKind::Float,
                MYSQL_TYPE_DOUBLE => ColumnKind::Double,
                MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => text_kind("VARCHAR")?,
                MYSQL_TYPE_STRING => {
                    // the real type of ENUM/SET columns hides in the metadata
                    if let Some(&real) = meta.first() {
                        if real == MYSQL_TYPE_ENUM as u8 || real == MYSQL_TYPE_SET as u8 {
                            return Err(unsupported(&db, &table, &name, "ENUM/SET"));
                        }
                    }
                    text_kind("CHAR")?
                }
                MYSQL_TYPE_BLOB => text_kind("BLOB/TEXT")?,
                MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => ColumnKind::Timestamp,
                MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => ColumnKind::DateTime,
                MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => ColumnKind::Date,
                other => return Err(unsupported(&db, &table, &name, &format!("{other:?}"))),
            };
            let nullable = nulls.get(i).map(|b| *b).unwrap_or(true);
            columns.push(ColumnSpec {
                name,
                kind,
                nullable,
            });
        }
        let mut key: Vec<usize> = extractor
            .iter_primary_key()
            .filter_map(|k| k.ok())
            .map(|k| k as usize)
            .filter(|&k| k < n)
            .collect();
        if key.is_empty() {
            for k in fallback_key {
                if let Some(i) = columns.iter().position(|c| c.name.eq_ignore_ascii_case(k)) {
                    key.push(i);
                }
            }
        }
        if key.is_empty() {
            return Err(Error::Schema(format!(
                "`{db}`.`{table}` has no primary key in the binlog's table map; rtis keys records by primary key"
            )));
        }
        Ok(Self {
            db,
            table,
            columns,
            key,
        })
    }
}
