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
    /// With FULL metadata the event names the primary-key columns whenever the table has a
    /// primary key, so an empty `key` means the table has none (at the time the event was
    /// written): the caller decides what to do (see [`key_problem`]); no key is guessed here.
    pub fn from_table_map(
        tme: &TableMapEvent<'_>,
        collations: &HashMap<u16, String>,
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
        let key: Vec<usize> = extractor
            .iter_primary_key()
            .filter_map(|k| k.ok())
            .map(|k| k as usize)
            .filter(|&k| k < n)
            .collect();
        Ok(Self {
            db,
            table,
            columns,
            key,
        })
    }
}

impl TableSchema {
    /// Names of the primary-key columns, in key order.
    pub fn key_names(&self) -> Vec<&str> {
        self.key
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect()
    }
}

/// SQL-ish spelling of a column kind, for messages.
pub fn kind_name(kind: ColumnKind) -> String {
    match kind {
        ColumnKind::Int32 => "INT (32-bit)".into(),
        ColumnKind::Int64 => "BIGINT / INT UNSIGNED (64-bit)".into(),
        ColumnKind::UInt64 => "BIGINT UNSIGNED".into(),
        ColumnKind::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
        ColumnKind::Float => "FLOAT".into(),
        ColumnKind::Double => "DOUBLE".into(),
        ColumnKind::String(_) => "text".into(),
        ColumnKind::Bytes => "binary".into(),
        ColumnKind::Timestamp => "TIMESTAMP".into(),
        ColumnKind::DateTime => "DATETIME".into(),
        ColumnKind::Date => "DATE".into(),
    }
}

/// What changed between two versions of a table, column by column (for the log line that
/// accompanies a new writer schema). Empty when nothing visible to Avro changed.
pub fn describe_changes(old: &TableSchema, new: &TableSchema) -> Vec<String> {
    let mut out = Vec::new();
    for c in &old.columns {
        match new
            .columns
            .iter()
            .find(|n| n.name.eq_ignore_ascii_case(&c.name))
        {
            None => out.push(format!("column {} dropped", c.name)),
            Some(n) if n.kind != c.kind => out.push(format!(
                "column {} changed type from {} to {}",
                c.name,
                kind_name(c.kind),
                kind_name(n.kind)
            )),
            Some(n) if n.nullable != c.nullable => out.push(format!(
                "column {} is now {}",
                c.name,
                if n.nullable { "NULL" } else { "NOT NULL" }
            )),
            Some(_) => {}
        }
    }
    for n in &new.columns {
        if !old
            .columns
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(&n.name))
        {
            out.push(format!("column {} added ({})", n.name, kind_name(n.kind)));
        }
    }
    if old.key_names() != new.key_names() {
        out.push(format!(
            "primary key changed from ({}) to ({})",
            old.key_names().join(", "),
            new.key_names().join(", ")
        ));
    }
    out
}

/// Why records of `new` cannot be keyed, if they cannot: the table has no primary key.
///
/// Records are keyed (and partitioned, and compacted) by the primary key; without one there is
/// no key to compute, and guessing one (the key rtis started with, or a unique index) would
/// silently change what a key means for consumers. So this is a reason to stop.
pub fn key_problem(new: &TableSchema) -> Option<String> {
    new.key.is_empty().then(|| {
        format!(
            "`{}`.`{}` has no primary key any more: records are keyed by the primary key, so their \
             key cannot be computed",
            new.db, new.table
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, kind: ColumnKind, nullable: bool) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            kind,
            nullable,
        }
    }

    fn product(price: ColumnKind, key: Vec<usize>) -> TableSchema {
        TableSchema {
            db: "shop".into(),
            table: "product".into(),
            columns: vec![
                col("id", ColumnKind::UInt64, false),
                col("name", ColumnKind::String(Charset::Utf8), false),
                col("price", price, false),
            ],
            key,
        }
    }

    const PRICE: ColumnKind = ColumnKind::Decimal {
        precision: 10,
        scale: 2,
    };

    #[test]
    fn a_type_change_is_described_by_column() {
        let old = product(PRICE, vec![0]);
        let new = product(
            ColumnKind::Decimal {
                precision: 12,
                scale: 4,
            },
            vec![0],
        );
        assert_eq!(
            describe_changes(&old, &new),
            vec!["column price changed type from DECIMAL(10,2) to DECIMAL(12,4)"]
        );
        assert!(describe_changes(&old, &old).is_empty());
        let mut added = old.clone();
        added.columns.push(col("stock", ColumnKind::Int32, true));
        assert_eq!(
            describe_changes(&old, &added),
            vec!["column stock added (INT (32-bit))"]
        );
        assert_eq!(describe_changes(&added, &old), vec!["column stock dropped"]);
    }

    #[test]
    fn a_dropped_primary_key_is_a_reason_to_stop() {
        let keyed = product(PRICE, vec![0]);
        assert_eq!(key_problem(&keyed), None);
        let keyless = product(PRICE, vec![]);
        let why = key_problem(&keyless).expect("no key");
        assert!(why.contains("`shop`.`product`"), "{why}");
        assert!(why.contains("no primary key"), "{why}");
        assert_eq!(
            describe_changes(&keyed, &keyless),
            vec!["primary key changed from (id) to ()"]
        );
    }
}
