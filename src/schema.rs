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

use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::consts::ColumnType;

use crate::error::{Error, Result};

/// Character set of a text column, as far as decoding is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Charset {
    /// utf8mb4 / utf8mb3: validated UTF-8.
    Utf8,
    /// 7-bit ASCII.
    Ascii,
    /// UTF-32 (big-endian code units), which the Encoding Standard does not define.
    Utf32,
    /// Any other supported charset, decoded strictly (a malformed byte sequence is an error,
    /// never a replacement character) by `encoding_rs`. MySQL's `latin1` is Windows-1252.
    Other(&'static encoding_rs::Encoding),
    /// A single-byte charset that `encoding_rs` decodes like MySQL except for the listed bytes
    /// (MySQL's tables predate the Encoding Standard's; `tests/types.rs` compares every byte).
    Patched(&'static encoding_rs::Encoding, &'static [(u8, char)]),
}

/// MySQL/MariaDB charset names rtis decodes, for messages.
pub const SUPPORTED_CHARSETS: &str =
    "utf8mb4, utf8mb3, ascii, latin1, latin2, latin7, greek, hebrew, \
    cp1250, cp1251, cp1256, cp1257, cp866, koi8r, koi8u, macroman, utf16, utf16le, ucs2, utf32, \
    gbk, gb2312, gb18030, big5, sjis, cp932, ujis, eucjpms, euckr, binary";

/// Maps a charset name (`information_schema` spelling) to how its bytes are decoded;
/// `Some(None)` is `binary` (bytes, not text), `None` an unsupported charset.
pub fn charset(name: &str) -> Option<Option<Charset>> {
    use encoding_rs as e;
    let enc = |x: &'static e::Encoding| Some(Some(Charset::Other(x)));
    let patched =
        |x: &'static e::Encoding, p: &'static [(u8, char)]| Some(Some(Charset::Patched(x, p)));
    match name.to_ascii_lowercase().as_str() {
        "binary" => Some(None),
        "utf8" | "utf8mb3" | "utf8mb4" => Some(Some(Charset::Utf8)),
        "ascii" => Some(Some(Charset::Ascii)),
        "utf32" => Some(Some(Charset::Utf32)),
        "latin1" => enc(e::WINDOWS_1252),
        "latin2" => enc(e::ISO_8859_2),
        "latin7" => enc(e::ISO_8859_13),
        "greek" => patched(e::ISO_8859_7, &[(0xA1, '\u{02BD}'), (0xA2, '\u{02BC}')]),
        "hebrew" => patched(e::ISO_8859_8, &[(0xAF, '\u{203E}')]),
        "cp1250" => enc(e::WINDOWS_1250),
        "cp1251" => enc(e::WINDOWS_1251),
        "cp1256" => enc(e::WINDOWS_1256),
        "cp1257" => enc(e::WINDOWS_1257),
        "cp866" => patched(e::IBM866, &[(0xFC, '\u{207F}'), (0xFD, '\u{00B2}')]),
        "koi8r" => enc(e::KOI8_R),
        "koi8u" => patched(
            e::KOI8_U,
            &[(0x95, '\u{2022}'), (0xAE, '\u{255D}'), (0xBE, '\u{256C}')],
        ),
        "macroman" => enc(e::MACINTOSH),
        "utf16" | "ucs2" => enc(e::UTF_16BE),
        "utf16le" => enc(e::UTF_16LE),
        "gbk" | "gb2312" => enc(e::GBK),
        "gb18030" => enc(e::GB18030),
        "big5" => enc(e::BIG5),
        "sjis" | "cp932" => enc(e::SHIFT_JIS),
        "ujis" | "eucjpms" => enc(e::EUC_JP),
        "euckr" => enc(e::EUC_KR),
        _ => None,
    }
}

/// How a column is represented in Avro (the README's type table says the same, per SQL type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnKind {
    /// TINYINT, SMALLINT, signed INT, and TINYINT/SMALLINT/MEDIUMINT UNSIGNED → Avro `int`.
    Int32,
    /// Signed MEDIUMINT → Avro `int`. Its 24-bit sign is restored here: the binlog parser hands
    /// negative values over as their unsigned 24-bit pattern.
    MediumInt,
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
    /// VARBINARY/BLOB → Avro `bytes`.
    Bytes,
    /// BINARY(n) → Avro `bytes` of exactly n bytes: row events strip trailing 0x00 bytes, which
    /// are restored here, so both paths (and a BINARY(16) key's partition) agree.
    FixedBytes(u32),
    /// BIT(n): n = 1 → Avro `boolean`; otherwise `bytes`, big-endian, ceil(n/8) of them (as
    /// `SELECT HEX(col)` shows them).
    Bit(u32),
    /// ENUM → Avro `string`, the member's text (the empty string for MySQL's invalid-value 0).
    Enum(Charset),
    /// SET → Avro `string`, the chosen members in definition order, comma-separated.
    Set(Charset),
    /// MySQL 8's JSON → Avro `string`, compact JSON text with object keys in a canonical order
    /// (MariaDB's JSON is a LONGTEXT and arrives as its stored text).
    Json,
    /// GEOMETRY and its subtypes → Avro record `Geometry {wkb: bytes, srid: long}`.
    Geometry,
    /// TIMESTAMP(fsp) → Avro `timestamp-micros` (UTC).
    Timestamp,
    /// DATETIME(fsp) → Avro `local-timestamp-micros` (wall-clock time, no zone).
    DateTime,
    /// DATE → Avro `date`.
    Date,
    /// TIME(fsp) → Avro `long`: signed microseconds (TIME spans -838:59:59 to 838:59:59, so it
    /// is a duration, not Avro's time of day).
    Time,
    /// YEAR → Avro `int` (0 for YEAR 0000).
    Year,
}

impl ColumnKind {
    /// Types that MySQL lets hold zero or partly zero dates (`0000-00-00`, `2024-00-10`).
    pub fn has_zero_dates(self) -> bool {
        matches!(
            self,
            ColumnKind::Timestamp | ColumnKind::DateTime | ColumnKind::Date
        )
    }
}

/// What a zero date (`0000-00-00`, `2024-05-00`: legal under a permissive `sql_mode`) becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum ZeroDates {
    /// Stop with an error naming the column and the binlog position (or the snapshot).
    #[default]
    Error,
    /// Emit NULL. DATE, DATETIME and TIMESTAMP fields are then nullable in the Avro schema
    /// even where the column is NOT NULL.
    Null,
}

/// One column of the captured table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnSpec {
    pub name: String,
    pub kind: ColumnKind,
    /// Whether the column is NULLable in SQL.
    pub nullable: bool,
    /// ENUM and SET members in definition order (empty for other types).
    pub members: Vec<String>,
    /// What a zero date in this column becomes.
    pub zero_dates: ZeroDates,
}

impl ColumnSpec {
    pub fn new(name: impl Into<String>, kind: ColumnKind, nullable: bool) -> Self {
        Self {
            name: name.into(),
            kind,
            nullable,
            members: Vec::new(),
            zero_dates: ZeroDates::Error,
        }
    }

    /// Whether the Avro field is a union with null.
    pub fn avro_nullable(&self) -> bool {
        self.nullable || (self.kind.has_zero_dates() && self.zero_dates == ZeroDates::Null)
    }
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
    /// Applies the `--zero-dates` policy to every column.
    pub fn with_zero_dates(mut self, policy: ZeroDates) -> Self {
        for c in &mut self.columns {
            c.zero_dates = policy;
        }
        self
    }
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
        "column `{db}`.`{table}`.`{column}` has type {what}, which rtis does not capture \
         (supported: every integer type, DECIMAL, FLOAT, DOUBLE, BIT, CHAR/VARCHAR/TEXT/ENUM/SET in \
         {SUPPORTED_CHARSETS}, BINARY/VARBINARY/BLOB, JSON, GEOMETRY types, DATE, TIME, DATETIME, \
         TIMESTAMP, YEAR; see the README's type table)"
    ))
}

/// The length in parentheses of a COLUMN_TYPE such as `binary(16)` or `bit(5)`.
fn type_length(column_type: &str) -> Option<u32> {
    let open = column_type.find('(')?;
    let close = column_type[open..].find(')')? + open;
    column_type[open + 1..close].trim().parse().ok()
}

/// The members of an `enum('a','b''c')` or `set(...)` COLUMN_TYPE, unquoted.
pub fn parse_members(column_type: &str) -> Option<Vec<String>> {
    let open = column_type.find('(')?;
    let body = column_type[open + 1..].strip_suffix(')')?;
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        if chars.next()? != '\'' {
            return None;
        }
        let mut m = String::new();
        loop {
            match chars.next()? {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    m.push('\'');
                }
                '\'' => break,
                '\\' => m.push(chars.next()?),
                c => m.push(c),
            }
        }
        out.push(m);
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// The byte length of a CHAR/BINARY column from its table-map metadata (the encoding
/// `Field_string::do_save_field_metadata` writes: lengths above 255 borrow two bits of byte 0).
fn string_length(meta: &[u8]) -> u32 {
    match meta {
        [b0, b1, ..] if b0 & 0x30 != 0x30 => *b1 as u32 | ((((*b0 as u32) & 0x30) ^ 0x30) << 4),
        [_, b1, ..] => *b1 as u32,
        _ => 0,
    }
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
            let column_type = c.column_type.to_ascii_lowercase();
            let unsigned = column_type.contains("unsigned");
            let dt = c.data_type.to_ascii_lowercase();
            let text = |what: &str| -> Result<Option<Charset>> {
                let cs = c.charset.as_deref().unwrap_or("binary");
                charset(cs).ok_or_else(|| {
                    unsupported(db, table, &c.name, &format!("{what} CHARACTER SET {cs}"))
                })
            };
            let mut members = Vec::new();
            let kind = match dt.as_str() {
                "mediumint" if !unsigned => ColumnKind::MediumInt,
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
                "bit" => ColumnKind::Bit(type_length(&column_type).unwrap_or(1)),
                "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                    match text(&c.column_type)? {
                        Some(cs) => ColumnKind::String(cs),
                        None if dt == "char" => {
                            ColumnKind::FixedBytes(type_length(&column_type).unwrap_or(1))
                        }
                        None => ColumnKind::Bytes,
                    }
                }
                "binary" => ColumnKind::FixedBytes(type_length(&column_type).unwrap_or(1)),
                "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => ColumnKind::Bytes,
                "enum" | "set" => {
                    let cs = text(&dt.to_ascii_uppercase())?.unwrap_or(Charset::Utf8);
                    members = parse_members(&c.column_type).ok_or_else(|| {
                        Error::Schema(format!(
                            "column `{db}`.`{table}`.`{}`: cannot read the members of {}",
                            c.name, c.column_type
                        ))
                    })?;
                    if dt == "enum" {
                        ColumnKind::Enum(cs)
                    } else {
                        ColumnKind::Set(cs)
                    }
                }
                "json" => ColumnKind::Json,
                "geometry" | "point" | "linestring" | "polygon" | "multipoint"
                | "multilinestring" | "multipolygon" | "geometrycollection" | "geomcollection" => {
                    ColumnKind::Geometry
                }
                "timestamp" => ColumnKind::Timestamp,
                "datetime" => ColumnKind::DateTime,
                "date" => ColumnKind::Date,
                "time" => ColumnKind::Time,
                "year" => ColumnKind::Year,
                _ => return Err(unsupported(db, table, &c.name, &c.column_type)),
            };
            columns.push(ColumnSpec {
                members,
                ..ColumnSpec::new(c.name.clone(), kind, c.nullable)
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
        let mut enum_set_charsets = extractor.iter_enum_and_set_charset();
        let mut names = extractor.iter_column_name();
        // the extractor drops ENUM and SET members: read them here (raw bytes, one list per
        // ENUM column and one per SET column, in column order)
        let mut enum_members: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut set_members: Vec<Vec<Vec<u8>>> = Vec::new();
        for field in tme.iter_optional_meta() {
            match field.map_err(meta_err)? {
                OptionalMetadataField::EnumStrValue(v) => {
                    for col in v.iter_values() {
                        let col = col.map_err(meta_err)?;
                        enum_members.push(
                            col.values()
                                .iter()
                                .map(|m| m.value_raw().to_vec())
                                .collect(),
                        );
                    }
                }
                OptionalMetadataField::SetStrValue(v) => {
                    for col in v.iter_values() {
                        let col = col.map_err(meta_err)?;
                        set_members.push(
                            col.values()
                                .iter()
                                .map(|m| m.value_raw().to_vec())
                                .collect(),
                        );
                    }
                }
                _ => {}
            }
        }
        let (mut enum_members, mut set_members) =
            (enum_members.into_iter(), set_members.into_iter());
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
            let charset_id = if ty.is_character_type() {
                Some(charsets.next().transpose().map_err(meta_err)?.unwrap_or(63))
            } else if ty.is_enum_or_set_type() {
                Some(
                    enum_set_charsets
                        .next()
                        .transpose()
                        .map_err(meta_err)?
                        .unwrap_or(63),
                )
            } else {
                None
            };
            // the column's charset: Some(None) for binary
            let text = |what: &str| -> Result<Option<Charset>> {
                let id = charset_id.unwrap_or(63);
                let cs = collations
                    .get(&id)
                    .map(String::as_str)
                    .unwrap_or(if id == 63 { "binary" } else { "unknown" });
                charset(cs).ok_or_else(|| {
                    unsupported(
                        &db,
                        &table,
                        &name,
                        &format!("{what} CHARACTER SET {cs} (collation id {id})"),
                    )
                })
            };
            let members = |raw: Option<Vec<Vec<u8>>>,
                           what: &str|
             -> Result<(Charset, Vec<String>)> {
                let cs = text(what)?.unwrap_or(Charset::Utf8);
                let raw = raw.ok_or_else(|| {
                    Error::Schema(format!(
                        "the binlog's table map for `{db}`.`{table}` has no {what} members for column {name}: \
                         binlog_row_metadata must be FULL"
                    ))
                })?;
                let list = raw
                    .into_iter()
                    .map(|m| crate::value::decode_text(cs, m))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| {
                        Error::Schema(format!(
                            "column `{db}`.`{table}`.`{name}`: {what} member: {e}"
                        ))
                    })?;
                Ok((cs, list))
            };
            let mut column_members = Vec::new();
            use ColumnType::*;
            let kind = match ty {
                MYSQL_TYPE_INT24 if !unsigned => ColumnKind::MediumInt,
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
                MYSQL_TYPE_BIT if meta.len() >= 2 => {
                    ColumnKind::Bit(meta[1] as u32 * 8 + meta[0] as u32)
                }
                MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => match text("VARCHAR")? {
                    Some(cs) => ColumnKind::String(cs),
                    None => ColumnKind::Bytes,
                },
                MYSQL_TYPE_STRING => match text("CHAR")? {
                    Some(cs) => ColumnKind::String(cs),
                    None => ColumnKind::FixedBytes(string_length(meta)),
                },
                MYSQL_TYPE_ENUM => {
                    let (cs, list) = members(enum_members.next(), "ENUM")?;
                    column_members = list;
                    ColumnKind::Enum(cs)
                }
                MYSQL_TYPE_SET => {
                    let (cs, list) = members(set_members.next(), "SET")?;
                    column_members = list;
                    ColumnKind::Set(cs)
                }
                MYSQL_TYPE_BLOB => match text("BLOB/TEXT")? {
                    Some(cs) => ColumnKind::String(cs),
                    None => ColumnKind::Bytes,
                },
                MYSQL_TYPE_JSON => ColumnKind::Json,
                MYSQL_TYPE_GEOMETRY => ColumnKind::Geometry,
                MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => ColumnKind::Timestamp,
                MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => ColumnKind::DateTime,
                MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => ColumnKind::Date,
                MYSQL_TYPE_TIME2 => ColumnKind::Time,
                MYSQL_TYPE_TIME => {
                    return Err(unsupported(
                        &db,
                        &table,
                        &name,
                        "TIME in the pre-5.6 storage format (its sign is not decoded); \
                         rebuild the table (ALTER TABLE ... FORCE) to store it in the current format",
                    ))
                }
                MYSQL_TYPE_YEAR => ColumnKind::Year,
                other => return Err(unsupported(&db, &table, &name, &format!("{other:?}"))),
            };
            let nullable = nulls.get(i).map(|b| *b).unwrap_or(true);
            columns.push(ColumnSpec {
                members: column_members,
                ..ColumnSpec::new(name, kind, nullable)
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
        ColumnKind::MediumInt => "MEDIUMINT".into(),
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
        ColumnKind::FixedBytes(n) => format!("BINARY({n})"),
        ColumnKind::Bit(n) => format!("BIT({n})"),
        ColumnKind::Enum(_) => "ENUM".into(),
        ColumnKind::Set(_) => "SET".into(),
        ColumnKind::Json => "JSON".into(),
        ColumnKind::Geometry => "GEOMETRY".into(),
        ColumnKind::Time => "TIME".into(),
        ColumnKind::Year => "YEAR".into(),
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
            Some(n) if n.members != c.members => out.push(format!(
                "column {} members changed from ({}) to ({})",
                c.name,
                c.members.join(", "),
                n.members.join(", ")
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
        ColumnSpec::new(name, kind, nullable)
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
