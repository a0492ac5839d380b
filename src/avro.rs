//! Avro: schemas derived from the table, a hand-written encoder with schemas resolved once, and
//! Avro single-object encoding (`C3 01` + CRC-64-AVRO fingerprint, little-endian + body).
//!
//! The encoder writes the binary encoding directly from [`Datum`]s (no generic `Value` tree, no
//! per-record schema resolution). Its output is checked against `apache-avro`'s reader in the
//! tests, and the consumer decodes with `apache-avro` from the writer schema it finds by
//! fingerprint in the `<topic>-schemas` topic.

use apache_avro::rabin::Rabin;
use apache_avro::Schema;
use serde_json::{json, Value as Json};

use crate::error::{Error, Result};
use crate::schema::{ColumnKind, TableSchema};
use crate::value::Datum;

/// Marker of Avro single-object encoding.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];

/// A parsed schema with its fingerprint and canonical JSON, resolved once.
#[derive(Debug, Clone)]
pub struct WriterSchema {
    pub json: String,
    pub schema: Schema,
    /// CRC-64-AVRO (Rabin) fingerprint of the canonical form, little-endian.
    pub fingerprint: [u8; 8],
    /// Named types by full name, to follow references while decoding.
    names: std::collections::HashMap<String, Schema>,
}

fn collect_names(schema: &Schema, names: &mut std::collections::HashMap<String, Schema>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.fullname(None), schema.clone());
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        _ => {}
    }
}

impl WriterSchema {
    pub fn parse(json: &str) -> Result<Self> {
        // schemas come from the schema topic or a registry, untrusted: apache-avro 0.21 panics
        // on some malformed names (an `unwrap` in `Name::parse`), which must not take the
        // consumer down
        if let Ok(tree) = serde_json::from_str::<Json>(json) {
            check_schema_json(&tree, 0)
                .map_err(|e| Error::Schema(format!("invalid Avro schema: {e}")))?;
        }
        let parsed = std::panic::catch_unwind(|| Schema::parse_str(json)).map_err(|_| {
            Error::Schema(format!(
                "invalid Avro schema (the Avro parser gave up on it): {}",
                json.chars().take(300).collect::<String>()
            ))
        })?;
        let schema =
            parsed.map_err(|e| Error::Schema(format!("invalid Avro schema: {e}: {json}")))?;
        let fp = std::panic::catch_unwind(|| schema.fingerprint::<Rabin>()).map_err(|_| {
            Error::Schema(format!(
                "invalid Avro schema (no canonical form): {}",
                json.chars().take(300).collect::<String>()
            ))
        })?;
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&fp.bytes);
        let mut names = std::collections::HashMap::new();
        collect_names(&schema, &mut names);
        Ok(Self {
            json: json.to_string(),
            schema,
            fingerprint,
            names,
        })
    }

    pub fn fingerprint_hex(&self) -> String {
        fingerprint_hex(&self.fingerprint)
    }
}

/// Checks a schema's JSON shape before apache-avro sees it: its parser and its canonical form
/// (the fingerprint) unwrap or panic where a name is malformed, where `size`, `precision` or
/// `scale` is not an integer, or where `type`, `fields`, `items`, `values` or `symbols` hold
/// something that is not a schema (found by fuzzing; schemas come from a topic or a registry).
fn check_schema_json(tree: &Json, depth: usize) -> std::result::Result<(), String> {
    if depth > 64 {
        return Err("nested more than 64 levels deep".into());
    }
    let valid = |full: &str| {
        full.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    let map = match tree {
        Json::String(_) => return Ok(()),
        // a union
        Json::Array(items) => {
            return items
                .iter()
                .try_for_each(|v| check_schema_json(v, depth + 1))
        }
        Json::Object(map) => map,
        other => return Err(format!("{other} is not a schema")),
    };
    let named = matches!(
        map.get("type").and_then(Json::as_str),
        Some("record" | "error" | "enum" | "fixed")
    );
    match map.get("name") {
        None if !named => {}
        Some(Json::String(n)) if !named || valid(n) => {}
        other => return Err(format!("bad name of a named type: {other:?}")),
    }
    match map.get("namespace") {
        None | Some(Json::Null) => {}
        Some(Json::String(ns)) if ns.is_empty() || valid(ns) => {}
        Some(other) => return Err(format!("bad namespace {other}")),
    }
    for k in ["size", "precision", "scale"] {
        match map.get(k) {
            None => {}
            Some(Json::Number(n)) if n.as_i64().is_some() => {}
            Some(Json::String(t)) if t.parse::<i64>().is_ok() => {}
            Some(other) => return Err(format!("{k} is not an integer: {other}")),
        }
    }
    for k in ["type", "items", "values"] {
        if let Some(v) = map.get(k) {
            check_schema_json(v, depth + 1)?;
        }
    }
    match map.get("order") {
        None | Some(Json::String(_)) => {}
        Some(other) => return Err(format!("order is not a string: {other}")),
    }
    match map.get("fields") {
        None => {}
        Some(Json::Array(fields)) => {
            for f in fields {
                if !f.is_object() {
                    return Err(format!("a field that is not an object: {f}"));
                }
                check_schema_json(f, depth + 1)?;
            }
        }
        Some(other) => return Err(format!("fields is not an array: {other}")),
    }
    match map.get("symbols") {
        None => Ok(()),
        Some(Json::Array(s)) if s.iter().all(Json::is_string) => Ok(()),
        Some(other) => Err(format!("symbols is not an array of names: {other}")),
    }
}

pub fn fingerprint_hex(fp: &[u8; 8]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Avro type of a column. `geometry_defined` says whether the named `Geometry` record was
/// already defined in this schema (Avro allows one definition, later uses name it).
fn column_type(kind: ColumnKind, geometry_defined: &mut bool) -> Json {
    match kind {
        ColumnKind::Int32 | ColumnKind::MediumInt | ColumnKind::Year => json!("int"),
        ColumnKind::Int64 => json!("long"),
        ColumnKind::UInt64 => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 0})
        }
        ColumnKind::Decimal { precision, scale } => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale})
        }
        ColumnKind::Float => json!("float"),
        ColumnKind::Double => json!("double"),
        ColumnKind::String(_) | ColumnKind::Enum(_) | ColumnKind::Set(_) | ColumnKind::Json => {
            json!("string")
        }
        ColumnKind::Bytes | ColumnKind::FixedBytes(_) => json!("bytes"),
        ColumnKind::Bit(1) => json!("boolean"),
        ColumnKind::Bit(_) => json!("bytes"),
        ColumnKind::Geometry if *geometry_defined => json!("rtis.Geometry"),
        ColumnKind::Geometry => {
            *geometry_defined = true;
            json!({"type": "record", "name": "Geometry", "namespace": "rtis", "fields": [
                {"name": "wkb", "type": "bytes"},
                {"name": "srid", "type": "long"}
            ]})
        }
        ColumnKind::Timestamp => json!({"type": "long", "logicalType": "timestamp-micros"}),
        ColumnKind::DateTime => json!({"type": "long", "logicalType": "local-timestamp-micros"}),
        ColumnKind::Date => json!({"type": "int", "logicalType": "date"}),
        ColumnKind::Time => json!("long"),
    }
}

fn record_json(name: &str, table: &TableSchema, cols: &[usize]) -> Json {
    let mut geometry_defined = false;
    let fields: Vec<Json> = cols
        .iter()
        .map(|&i| {
            let c = &table.columns[i];
            let t = column_type(c.kind, &mut geometry_defined);
            if c.avro_nullable() {
                json!({"name": c.name, "type": ["null", t], "default": null})
            } else {
                json!({"name": c.name, "type": t})
            }
        })
        .collect();
    json!({"type": "record", "name": name, "namespace": "rtis", "fields": fields})
}

/// Schema of the message key: a record of the primary-key columns.
pub fn key_schema_json(table: &TableSchema) -> String {
    record_json("Key", table, &table.key).to_string()
}

/// Schema of the message value: the change envelope.
pub fn envelope_schema_json(table: &TableSchema) -> String {
    let all: Vec<usize> = (0..table.columns.len()).collect();
    let value = record_json("Value", table, &all);
    json!({
        "type": "record", "name": "Envelope", "namespace": "rtis",
        "doc": format!("change of `{}`.`{}`", table.db, table.table),
        "fields": [
            {"name": "op", "type": "string", "doc": "c insert, u update, d delete, r snapshot read"},
            {"name": "before", "type": ["null", value], "default": null},
            {"name": "after", "type": ["null", "Value"], "default": null},
            {"name": "source", "type": {"type": "record", "name": "Source", "fields": [
                {"name": "server_id", "type": "long"},
                {"name": "file", "type": "string"},
                {"name": "pos", "type": "long"},
                {"name": "row", "type": "int"},
                {"name": "gtid", "type": ["null", "string"], "default": null},
                {"name": "ts_ms", "type": "long", "doc": "binlog event time (ms since epoch)"},
                {"name": "snapshot", "type": "boolean"},
                {"name": "db", "type": "string"},
                {"name": "table", "type": "string"},
                {"name": "connector", "type": "string", "doc": "the connector that wrote the record (--name)"},
                {"name": "server_uuid", "type": ["null", "string"], "default": null, "doc": "the source's server_uuid (MySQL)"}
            ]}},
            {"name": "ts_ms", "type": "long", "doc": "when rtis read the change (ms since epoch)"}
        ]
    })
    .to_string()
}

// ---- binary encoding ------------------------------------------------------------------------

#[inline]
pub fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[inline]
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Two's complement big-endian bytes of a decimal's unscaled value (minimal length).
pub fn decimal_bytes(text: &str) -> Vec<u8> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text),
    };
    // magnitude in base 256, big-endian
    let mut mag: Vec<u8> = vec![0];
    for d in body.bytes().filter(u8::is_ascii_digit) {
        let mut carry = (d - b'0') as u32;
        for byte in mag.iter_mut().rev() {
            let x = *byte as u32 * 10 + carry;
            *byte = x as u8;
            carry = x >> 8;
        }
        while carry > 0 {
            mag.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    if neg {
        // two's complement: invert and add one
        for b in mag.iter_mut() {
            *b = !*b;
        }
        for b in mag.iter_mut().rev() {
            let (v, overflow) = b.overflowing_add(1);
            *b = v;
            if !overflow {
                break;
            }
        }
    }
    // make room for the sign bit
    let sign_ok = (mag[0] & 0x80 != 0) == neg;
    if !sign_ok {
        mag.insert(0, if neg { 0xFF } else { 0 });
    }
    // strip redundant leading bytes
    while mag.len() > 1
        && ((mag[0] == 0 && mag[1] & 0x80 == 0) || (mag[0] == 0xFF && mag[1] & 0x80 != 0))
    {
        mag.remove(0);
    }
    mag
}

fn unsigned_bytes(u: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(9);
    v.push(0);
    v.extend_from_slice(&u.to_be_bytes());
    while v.len() > 1 && v[0] == 0 && v[1] & 0x80 == 0 {
        v.remove(0);
    }
    v
}

/// Encodes one column value (its union branch first when the column is nullable).
pub fn put_datum(out: &mut Vec<u8>, nullable: bool, d: &Datum) {
    if nullable {
        if *d == Datum::Null {
            put_long(out, 0);
            return;
        }
        put_long(out, 1);
    }
    match d {
        Datum::Null => unreachable!("NULL in a NOT NULL column is rejected by value::convert"),
        Datum::Int(i) => put_long(out, *i),
        Datum::UInt(u) => put_bytes(out, &unsigned_bytes(*u)),
        Datum::Decimal(s) => put_bytes(out, &decimal_bytes(s)),
        Datum::Float(f) => out.extend_from_slice(&f.to_le_bytes()),
        Datum::Double(f) => out.extend_from_slice(&f.to_le_bytes()),
        Datum::Str(s) => put_bytes(out, s.as_bytes()),
        Datum::Bytes(b) => put_bytes(out, b),
        Datum::TimestampMicros(t) | Datum::DateTimeMicros(t) => put_long(out, *t),
        Datum::Date(d) => put_long(out, *d as i64),
        Datum::Bool(b) => out.push(*b as u8),
        Datum::Geometry { srid, wkb } => {
            put_bytes(out, wkb);
            put_long(out, *srid as i64);
        }
    }
}

/// Encodes a row (all columns) as the `Value` record.
pub fn put_row(out: &mut Vec<u8>, table: &TableSchema, row: &[Datum]) {
    for (c, d) in table.columns.iter().zip(row) {
        put_datum(out, c.avro_nullable(), d);
    }
}

/// The `source` block of an envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo<'a> {
    pub server_id: u32,
    pub file: &'a str,
    pub pos: u64,
    pub row: u32,
    pub gtid: Option<&'a str>,
    pub ts_ms: i64,
    pub snapshot: bool,
    /// The connector that writes the record (`--name`).
    pub connector: &'a str,
    /// The source's `server_uuid` (MySQL; MariaDB has none).
    pub server_uuid: Option<&'a str>,
}

/// Encodes a whole envelope message after `header` (the framing's: single-object, Confluent,
/// or none; see [`crate::framing`]).
#[allow(clippy::too_many_arguments)]
pub fn encode_envelope(
    out: &mut Vec<u8>,
    header: &[u8],
    table: &TableSchema,
    op: &str,
    before: Option<&[Datum]>,
    after: Option<&[Datum]>,
    source: &SourceInfo<'_>,
    ts_ms: i64,
) {
    out.extend_from_slice(header);
    put_bytes(out, op.as_bytes());
    for image in [before, after] {
        match image {
            None => put_long(out, 0),
            Some(row) => {
                put_long(out, 1);
                put_row(out, table, row);
            }
        }
    }
    put_long(out, source.server_id as i64);
    put_bytes(out, source.file.as_bytes());
    put_long(out, source.pos as i64);
    put_long(out, source.row as i64);
    match source.gtid {
        None => put_long(out, 0),
        Some(g) => {
            put_long(out, 1);
            put_bytes(out, g.as_bytes());
        }
    }
    put_long(out, source.ts_ms);
    out.push(source.snapshot as u8);
    put_bytes(out, table.db.as_bytes());
    put_bytes(out, table.table.as_bytes());
    put_bytes(out, source.connector.as_bytes());
    match source.server_uuid {
        None => put_long(out, 0),
        Some(u) => {
            put_long(out, 1);
            put_bytes(out, u.as_bytes());
        }
    }
    put_long(out, ts_ms);
}

/// Encodes a key message after `header`.
pub fn encode_key(out: &mut Vec<u8>, header: &[u8], table: &TableSchema, row: &[Datum]) {
    out.extend_from_slice(header);
    put_key(out, table, row);
}

/// Encodes the primary-key columns of `row` (the `Key` record's body).
pub fn put_key(out: &mut Vec<u8>, table: &TableSchema, row: &[Datum]) {
    for &i in &table.key {
        put_datum(out, table.columns[i].avro_nullable(), &row[i]);
    }
}

/// Splits a single-object message into fingerprint and body.
pub fn split_single_object(msg: &[u8]) -> Option<([u8; 8], &[u8])> {
    if msg.len() < 10 || msg[..2] != SINGLE_OBJECT_MAGIC {
        return None;
    }
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&msg[2..10]);
    Some((fp, &msg[10..]))
}

// ---- decoding to JSON (consumer) ------------------------------------------------------------

/// Decodes a single-object body with its writer schema into JSON with exact renderings:
/// decimals as strings, timestamps as ISO-8601 with microseconds (`Z` for timestamp-micros),
/// dates as `YYYY-MM-DD`, bytes as base64.
pub fn decode_to_json(schema: &WriterSchema, body: &[u8]) -> std::result::Result<Json, String> {
    // a record's bytes are untrusted: check that every declared length fits in them before
    // apache-avro allocates what they declare (up to 512 MB per field for a 10-byte record)
    let mut probe = body;
    fits(&schema.schema, &mut probe, &schema.names, 0)?;
    let mut reader = body;
    let value = apache_avro::from_avro_datum(&schema.schema, &mut reader, None)
        .map_err(|e| format!("Avro decode failed: {e}"))?;
    if !reader.is_empty() {
        return Err(format!(
            "{} trailing bytes after the Avro datum",
            reader.len()
        ));
    }
    to_json(&schema.schema, value, &schema.names)
}

/// The Avro varint at the front of `r` (zig-zag), consumed.
fn take_long(r: &mut &[u8]) -> std::result::Result<i64, String> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let Some((&b, rest)) = r.split_first() else {
            return Err("truncated: the record ends inside a number".into());
        };
        *r = rest;
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v >> 1) as i64 ^ -((v & 1) as i64));
        }
    }
    Err("corrupt: a number longer than 10 bytes".into())
}

fn take(r: &mut &[u8], n: usize, what: &str) -> std::result::Result<(), String> {
    if n > r.len() {
        return Err(format!(
            "corrupt: {what} of {n} bytes declared, but only {} bytes of the record are left",
            r.len()
        ));
    }
    *r = &r[n..];
    Ok(())
}

fn take_len(r: &mut &[u8], what: &str) -> std::result::Result<(), String> {
    let n = take_long(r)?;
    if n < 0 {
        return Err(format!("corrupt: negative length {n} of {what}"));
    }
    take(r, usize::try_from(n).unwrap_or(usize::MAX), what)
}

/// Walks a datum of `schema` at the front of `r` without allocating, failing where a declared
/// length or count cannot fit in the bytes left.
fn fits(
    schema: &Schema,
    r: &mut &[u8],
    names: &Names,
    depth: usize,
) -> std::result::Result<(), String> {
    if depth > 64 {
        return Err("corrupt: values nested more than 64 levels deep".into());
    }
    match schema {
        Schema::Null => Ok(()),
        Schema::Boolean => take(r, 1, "a boolean"),
        Schema::Int
        | Schema::Long
        | Schema::Enum(_)
        | Schema::Date
        | Schema::TimeMillis
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => take_long(r).map(|_| ()),
        Schema::Float => take(r, 4, "a float"),
        Schema::Double => take(r, 8, "a double"),
        Schema::Bytes | Schema::String | Schema::BigDecimal => take_len(r, "a string or bytes"),
        Schema::Decimal(d) => fits(&d.inner, r, names, depth + 1),
        Schema::Fixed(f) => take(r, f.size, "a fixed"),
        Schema::Duration => take(r, 12, "a duration"),
        Schema::Union(u) => {
            let i = take_long(r)?;
            let branch = usize::try_from(i)
                .ok()
                .and_then(|i| u.variants().get(i))
                .ok_or_else(|| format!("corrupt: union branch {i} of {}", u.variants().len()))?;
            fits(branch, r, names, depth + 1)
        }
        Schema::Record(rec) => rec
            .fields
            .iter()
            .try_for_each(|f| fits(&f.schema, r, names, depth + 1)),
        Schema::Ref { name } => {
            let target = names
                .get(&name.fullname(None))
                .ok_or_else(|| format!("unknown named type {}", name.fullname(None)))?;
            fits(target, r, names, depth + 1)
        }
        Schema::Array(a) => blocks(r, |r| fits(&a.items, r, names, depth + 1)),
        Schema::Map(m) => blocks(r, |r| {
            take_len(r, "a map key")?;
            fits(&m.types, r, names, depth + 1)
        }),
        // its encoding varies with the schema's form: left to apache-avro
        Schema::Uuid => Ok(()),
    }
}

/// The blocks of an array or map: each item must consume a byte at least, so a count larger
/// than the bytes left is corrupt (and never loops).
fn blocks(
    r: &mut &[u8],
    mut item: impl FnMut(&mut &[u8]) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    loop {
        let mut n = take_long(r)?;
        if n == 0 {
            return Ok(());
        }
        if n < 0 {
            n = n.checked_neg().ok_or("corrupt: block count")?;
            take_long(r)?; // the block's size in bytes
        }
        if n as u64 > r.len() as u64 {
            return Err(format!(
                "corrupt: a block of {n} items declared, but only {} bytes of the record are left",
                r.len()
            ));
        }
        for _ in 0..n {
            let before = r.len();
            item(r)?;
            if r.len() == before {
                return Err("corrupt: an array or map of items that take no bytes".into());
            }
        }
    }
}

fn decimal_to_string(bytes: &[u8], scale: usize) -> String {
    // two's complement big-endian → decimal text
    let neg = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut mag: Vec<u8> = bytes.to_vec();
    if neg {
        for b in mag.iter_mut() {
            *b = !*b;
        }
        for b in mag.iter_mut().rev() {
            let (v, o) = b.overflowing_add(1);
            *b = v;
            if !o {
                break;
            }
        }
    }
    // repeated division by 10
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut() {
            let x = (rem << 8) | *b as u32;
            *b = (x / 10) as u8;
            rem = x % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    while digits.len() <= scale {
        digits.push(b'0');
    }
    digits.reverse();
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    let int_len = digits.len() - scale;
    s.push_str(std::str::from_utf8(&digits[..int_len]).expect("ascii"));
    if scale > 0 {
        s.push('.');
        s.push_str(std::str::from_utf8(&digits[int_len..]).expect("ascii"));
    }
    s
}

type Names = std::collections::HashMap<String, Schema>;

fn to_json(
    schema: &Schema,
    value: apache_avro::types::Value,
    names: &Names,
) -> std::result::Result<Json, String> {
    use apache_avro::types::Value as V;
    use base64::Engine;
    Ok(match (schema, value) {
        (_, V::Null) => Json::Null,
        (Schema::Ref { name }, v) => {
            let full = name.fullname(None);
            let target = names
                .get(&full)
                .ok_or_else(|| format!("unknown named type {full}"))?;
            to_json(target, v, names)?
        }
        (Schema::Union(u), V::Union(idx, inner)) => {
            let branch = u
                .variants()
                .get(idx as usize)
                .ok_or_else(|| format!("union branch {idx} out of range"))?;
            to_json(branch, *inner, names)?
        }
        (Schema::Record(r), V::Record(fields)) => {
            let mut map = serde_json::Map::new();
            for (f, (name, v)) in r.fields.iter().zip(fields) {
                map.insert(name, to_json(&f.schema, v, names)?);
            }
            Json::Object(map)
        }
        (Schema::Decimal(d), V::Decimal(dec)) => {
            let bytes: Vec<u8> = dec
                .try_into()
                .map_err(|e: apache_avro::Error| format!("decimal: {e}"))?;
            Json::String(decimal_to_string(&bytes, d.scale))
        }
        (_, V::TimestampMicros(t)) => Json::String(format!("{}Z", crate::value::format_micros(t))),
        (_, V::LocalTimestampMicros(t)) => Json::String(crate::value::format_micros(t)),
        (_, V::TimestampMillis(t)) => {
            Json::String(format!("{}Z", crate::value::format_micros(t * 1000)))
        }
        (_, V::Date(d)) => Json::String(crate::value::format_date(d)),
        (_, V::Boolean(b)) => Json::Bool(b),
        (_, V::Int(i)) => json!(i),
        (_, V::Long(i)) => json!(i),
        // the shortest text that reads back as the same f32 (not the f64 widening's digits)
        (_, V::Float(f)) => format!("{f}")
            .parse::<f64>()
            .map_or(Json::Null, |d| json!(d)),
        (_, V::Double(f)) => json!(f),
        (_, V::String(s)) | (_, V::Enum(_, s)) => Json::String(s),
        (_, V::Bytes(b)) | (_, V::Fixed(_, b)) => {
            Json::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (_, V::Array(items)) => {
            let inner = match schema {
                Schema::Array(a) => &a.items,
                _ => return Err("array without array schema".into()),
            };
            Json::Array(
                items
                    .into_iter()
                    .map(|v| to_json(inner, v, names))
                    .collect::<std::result::Result<_, _>>()?,
            )
        }
        (_, other) => return Err(format!("unsupported Avro value {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Charset, ColumnSpec};

    fn product() -> TableSchema {
        let c = |name: &str, kind, nullable| ColumnSpec::new(name, kind, nullable);
        TableSchema {
            db: "shop".into(),
            table: "product".into(),
            columns: vec![
                c("id", ColumnKind::UInt64, false),
                c("name", ColumnKind::String(Charset::Utf8), false),
                c("category", ColumnKind::String(Charset::Utf8), true),
                c(
                    "price",
                    ColumnKind::Decimal {
                        precision: 10,
                        scale: 2,
                    },
                    false,
                ),
                c("last_updated", ColumnKind::Timestamp, false),
            ],
            key: vec![0],
        }
    }

    #[test]
    fn decimal_bytes_are_minimal_twos_complement() {
        assert_eq!(decimal_bytes("0.00"), vec![0]);
        assert_eq!(decimal_bytes("1.27"), vec![0x7f]);
        assert_eq!(decimal_bytes("1.28"), vec![0x00, 0x80]);
        assert_eq!(decimal_bytes("-0.01"), vec![0xff]);
        assert_eq!(decimal_bytes("-1.28"), vec![0x80]);
        assert_eq!(decimal_bytes("-1.29"), vec![0xff, 0x7f]);
        assert_eq!(
            unsigned_bytes(u64::MAX),
            vec![0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        for s in [
            "99999999.99",
            "-99999999.99",
            "0.00",
            "-0.01",
            "12345678901234567890123456789012345678901234.5",
        ] {
            let scale = s.split_once('.').map_or(0, |(_, f)| f.len());
            assert_eq!(decimal_to_string(&decimal_bytes(s), scale), s);
        }
    }

    #[test]
    fn hand_encoding_decodes_with_apache_avro() {
        let t = product();
        let schema = WriterSchema::parse(&envelope_schema_json(&t)).unwrap();
        let row = vec![
            Datum::UInt(u64::MAX),
            Datum::Str("Café ☕".into()),
            Datum::Null,
            Datum::Decimal("-0.01".into()),
            Datum::TimestampMicros(1_700_000_000_000_123),
        ];
        let src = SourceInfo {
            server_id: 1,
            file: "mariadb-bin.000001",
            pos: 1234,
            row: 2,
            gtid: Some("0-1-7"),
            ts_ms: 1_700_000_000_000,
            snapshot: false,
            connector: "shop-product",
            server_uuid: None,
        };
        let mut msg = Vec::new();
        encode_envelope(
            &mut msg,
            &crate::framing::single_object(&schema),
            &t,
            "u",
            Some(&row),
            Some(&row),
            &src,
            42,
        );
        // apache-avro's own single-object reader accepts our header
        let (fp, body) = split_single_object(&msg).unwrap();
        assert_eq!(fp, schema.fingerprint);
        let json = decode_to_json(&schema, body).unwrap();
        assert_eq!(json["op"], "u");
        assert_eq!(json["after"]["id"], "18446744073709551615");
        assert_eq!(json["after"]["name"], "Café ☕");
        assert_eq!(json["after"]["category"], Json::Null);
        assert_eq!(json["after"]["price"], "-0.01");
        assert_eq!(json["after"]["last_updated"], "2023-11-14T22:13:20.000123Z");
        assert_eq!(json["before"], json["after"]);
        assert_eq!(json["source"]["gtid"], "0-1-7");
        assert_eq!(json["source"]["pos"], 1234);
        assert_eq!(json["source"]["table"], "product");
        assert_eq!(json["source"]["connector"], "shop-product");
        assert_eq!(json["source"]["server_uuid"], Json::Null);
        assert_eq!(json["ts_ms"], 42);

        let reader = apache_avro::GenericSingleObjectReader::new(schema.schema.clone()).unwrap();
        let v = reader.read_value(&mut msg.as_slice()).unwrap();
        assert!(matches!(v, apache_avro::types::Value::Record(_)));
    }

    #[test]
    fn key_schema_is_the_primary_key() {
        let t = product();
        let schema = WriterSchema::parse(&key_schema_json(&t)).unwrap();
        let row = vec![
            Datum::UInt(7),
            Datum::Str("x".into()),
            Datum::Null,
            Datum::Decimal("1.00".into()),
            Datum::TimestampMicros(0),
        ];
        let mut msg = Vec::new();
        encode_key(&mut msg, &crate::framing::single_object(&schema), &t, &row);
        let (_, body) = split_single_object(&msg).unwrap();
        assert_eq!(decode_to_json(&schema, body).unwrap(), json!({"id": "7"}));
    }

    #[test]
    fn declared_lengths_that_do_not_fit_the_record_are_corrupt_not_allocated() {
        let t = product();
        let schema = WriterSchema::parse(&envelope_schema_json(&t)).unwrap();
        // op: a string declared 400 MB long, in a 6-byte record
        let mut body = Vec::new();
        put_long(&mut body, 400 << 20);
        body.push(b'c');
        let e = decode_to_json(&schema, &body).unwrap_err();
        assert!(
            e.contains("419430400 bytes declared, but only 1 bytes"),
            "{e}"
        );
        // a union branch that does not exist, a negative length, a truncated number
        for (bytes, want) in [
            (vec![2, b'c', 9], "union branch -5"),
            (vec![1], "negative length"),
            (vec![0x80], "truncated"),
        ] {
            let e = decode_to_json(&schema, &bytes).unwrap_err();
            assert!(e.contains(want), "{bytes:?}: {e}");
        }
        // an array of 2^62 nulls in 3 bytes never loops
        let arr = WriterSchema::parse(r#"{"type":"array","items":"null"}"#).unwrap();
        let mut body = Vec::new();
        put_long(&mut body, 1 << 62);
        let e = decode_to_json(&arr, &body).unwrap_err();
        assert!(e.contains("items declared"), "{e}");
        let arr = WriterSchema::parse(r#"{"type":"array","items":"null"}"#).unwrap();
        let e = decode_to_json(&arr, &[2, 0]).unwrap_err();
        assert!(e.contains("take no bytes"), "{e}");
        // a self-referencing record nested beyond reason
        let deep = WriterSchema::parse(
            r#"{"type":"record","name":"N","fields":[{"name":"n","type":["null","N"]}]}"#,
        )
        .unwrap();
        let e = decode_to_json(&deep, &[2; 100]).unwrap_err();
        assert!(e.contains("nested more than 64"), "{e}");
    }

    #[test]
    fn a_schema_name_the_avro_parser_panics_on_is_an_error() {
        for (json, want) in [
            (
                r#"{"type":"record","name":"","fields":[]}"#,
                "bad name of a named type",
            ),
            (
                r#"{"type":"record","name":"a..b","fields":[]}"#,
                "bad name of a named type",
            ),
            // apache-avro's canonical form unwraps a size anywhere as an integer
            (
                r#"{"type":"record","name":"K","size":"int","fields":[]}"#,
                "size is not an integer",
            ),
            (
                r#"{"type":"record","name":"K","scale":1.5,"fields":[]}"#,
                "scale is not an integer",
            ),
            // and panics on a known key holding something that is not a schema
            (
                r#"{"type":"record","name":"K","fields":[{"name":"a","type":null}]}"#,
                "null is not a schema",
            ),
            (r#"{"type":"array","items":7}"#, "7 is not a schema"),
            (
                r#"{"type":"record","name":"K","order":null,"fields":[]}"#,
                "order is not a string",
            ),
            (
                r#"{"type":"record","name":"K","fields":null}"#,
                "fields is not an array",
            ),
        ] {
            let e = WriterSchema::parse(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn fingerprint_is_crc64_avro_of_canonical_form() {
        // test vector from the Avro specification's test suite: "int" → 0x7275d51a3f395c8f
        let s = WriterSchema::parse("\"int\"").unwrap();
        assert_eq!(u64::from_le_bytes(s.fingerprint), 0x7275_d51a_3f39_5c8f);
    }
}
