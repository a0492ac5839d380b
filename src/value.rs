//! Column values in rtis's own types, and the single conversion used by both the binlog path
//! and the snapshot path (so a row read either way encodes to identical bytes).
//!
//! The binlog client hands over decimals as strings, TIMESTAMP as `seconds[.micros]` since the
//! epoch, DATETIME as broken-down fields and text as raw bytes; the text protocol hands over
//! everything as strings. Both are normalised here, exactly (no float rounding, microseconds kept).

use mysql_async::Value;

use crate::schema::{Charset, ColumnKind, ColumnSpec, ZeroDates};

/// A column value, typed by the column's [`ColumnKind`].
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    Int(i64),
    UInt(u64),
    /// Canonical decimal text, e.g. `-0.01`, with exactly `scale` fractional digits.
    Decimal(String),
    Float(f32),
    Double(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// Microseconds since 1970-01-01T00:00:00Z.
    TimestampMicros(i64),
    /// Microseconds since 1970-01-01T00:00:00 on the wall clock (no zone).
    DateTimeMicros(i64),
    /// Days since 1970-01-01.
    Date(i32),
    /// BIT(1).
    Bool(bool),
    /// A geometry: its SRID and its WKB.
    Geometry {
        srid: u32,
        wkb: Vec<u8>,
    },
}

/// Why a value could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {msg}")]
pub struct ConvertError {
    pub column: String,
    pub msg: String,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats microseconds since the epoch as ISO-8601 (`2024-05-01T12:00:00.000001`), without zone.
pub fn format_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let us = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{us:06}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Formats days since the epoch as `YYYY-MM-DD`.
pub fn format_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

fn micros_of(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> i64 {
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    ((days * 86_400 + h as i64 * 3600 + mi as i64 * 60 + s as i64) * 1_000_000) + us as i64
}

/// Parses `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` (text protocol) into broken-down fields.
fn parse_datetime_text(s: &str) -> Option<(u16, u8, u8, u8, u8, u8, u32)> {
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut dp = date.split('-');
    let y = dp.next()?.parse().ok()?;
    let mo = dp.next()?.parse().ok()?;
    let d = dp.next()?.parse().ok()?;
    if dp.next().is_some() {
        return None;
    }
    let (mut h, mut mi, mut sec, mut us) = (0, 0, 0, 0);
    if let Some(t) = time {
        let (hms, frac) = match t.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (t, None),
        };
        let mut tp = hms.split(':');
        h = tp.next()?.parse().ok()?;
        mi = tp.next()?.parse().ok()?;
        sec = tp.next()?.parse().ok()?;
        if let Some(f) = frac {
            if f.is_empty() {
                return None;
            }
            us = fraction_micros(f)?;
        }
    }
    Some((y, mo, d, h, mi, sec, us))
}

/// Parses the binlog's TIMESTAMP2 rendering `seconds[.micros]` into microseconds.
fn parse_epoch_text(s: &str) -> Option<i64> {
    let (sec, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let sec: i64 = sec.parse().ok()?;
    sec.checked_mul(1_000_000)?
        .checked_add(fraction_micros(frac)? as i64)
}

/// Microseconds of a fraction of a second written with up to six digits (`5` is 500000); the
/// empty fraction is 0.
fn fraction_micros(f: &str) -> Option<u32> {
    if f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if f.is_empty() {
        return Some(0);
    }
    Some(f.parse::<u32>().ok()? * 10u32.pow(6 - f.len() as u32))
}

/// Decodes text bytes in the column's charset, strictly: a byte sequence that is not valid in
/// the charset is an error, never a replacement character.
pub fn decode_text(charset: Charset, bytes: Vec<u8>) -> Result<String, String> {
    match charset {
        Charset::Utf8 => String::from_utf8(bytes).map_err(|e| format!("invalid utf8: {e}")),
        Charset::Ascii => {
            if bytes.is_ascii() {
                Ok(String::from_utf8(bytes).expect("ascii is utf8"))
            } else {
                Err("non-ASCII byte in an ascii column".into())
            }
        }
        Charset::Utf32 => {
            if bytes.len() % 4 != 0 {
                return Err(format!(
                    "{} bytes is not a whole number of utf32 characters",
                    bytes.len()
                ));
            }
            bytes
                .chunks_exact(4)
                .map(|c| {
                    let u = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                    char::from_u32(u).ok_or_else(|| format!("invalid utf32 code point {u:#x}"))
                })
                .collect()
        }
        Charset::Other(enc) => enc
            .decode_without_bom_handling_and_without_replacement(&bytes)
            .map(|s| s.into_owned())
            .ok_or_else(|| format!("a byte sequence that is not valid {}", enc.name())),
        Charset::Patched(enc, overrides) => bytes
            .iter()
            .map(|&b| match overrides.iter().find(|(x, _)| *x == b) {
                Some((_, c)) => Ok(*c),
                None => enc
                    .decode_without_bom_handling_and_without_replacement(&[b])
                    .and_then(|s| s.chars().next())
                    .ok_or_else(|| format!("byte {b:#04x} is not valid {}", enc.name())),
            })
            .collect(),
    }
}

/// Normalises decimal text to exactly `scale` fractional digits, rejecting anything else.
pub fn normalize_decimal(s: &str, scale: u32) -> Option<String> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = match body.split_once('.') {
        Some((a, b)) => (a, b),
        None => (body, ""),
    };
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac_trim = frac.trim_end_matches('0');
    if frac_trim.len() > scale as usize {
        return None;
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let mut out = String::with_capacity(int.len() + scale as usize + 2);
    let zero = int == "0" && frac_trim.is_empty();
    if neg && !zero {
        out.push('-');
    }
    out.push_str(int);
    if scale > 0 {
        out.push('.');
        out.push_str(frac_trim);
        for _ in frac_trim.len()..scale as usize {
            out.push('0');
        }
    }
    Some(out)
}

fn as_text(v: &Value) -> Option<&str> {
    match v {
        Value::Bytes(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// What a zero or partly zero date becomes in `col`, under its `--zero-dates` policy.
fn zero_date(col: &ColumnSpec, v: &Value) -> Result<Datum, ConvertError> {
    match col.zero_dates {
        ZeroDates::Null => Ok(Datum::Null),
        ZeroDates::Error => Err(ConvertError {
            column: col.name.clone(),
            msg: format!(
                "zero date {} (MySQL's '0000-00-00', allowed by a permissive sql_mode) has no \
                 {} value: fix the row, or start with --zero-dates null to emit NULL for it",
                render_value(v),
                crate::schema::kind_name(col.kind)
            ),
        }),
    }
}

fn render_value(v: &Value) -> String {
    match v {
        Value::Bytes(b) => format!("'{}'", String::from_utf8_lossy(b)),
        Value::Date(y, mo, d, h, mi, s, us) => {
            format!("'{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}'")
        }
        other => shown(other),
    }
}

/// A value for an error message. Never mysql_common's `Debug` of a TIME, which overflows
/// (`days * 24`) on a malformed value and panics in debug builds.
pub fn shown(v: &Value) -> String {
    match v {
        Value::Time(neg, days, h, mi, s, us) => format!(
            "Time('{}{days}d {h:02}:{mi:02}:{s:02}.{us:06}')",
            if *neg { "-" } else { "" }
        ),
        other => format!("{other:?}"),
    }
}

/// A date's broken-down fields from the binary protocol or the binlog (`Value::Date`) or from
/// `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` text; a zero month or day is left for the caller to judge.
fn date_fields(v: &Value) -> Option<(u16, u8, u8, u8, u8, u8, u32)> {
    match *v {
        Value::Date(y, mo, d, h, mi, s, us) => Some((y, mo, d, h, mi, s, us)),
        ref other => as_text(other).and_then(parse_datetime_text),
    }
}

/// Converts a value from the binlog or from a snapshot query into a [`Datum`].
///
/// This is the one conversion both paths share, so a value read either way is the same datum.
/// Snapshot queries must run with `time_zone = '+00:00'` (TIMESTAMP text is then UTC) and
/// `character_set_results = binary` (text arrives as its stored bytes, as in row events).
pub fn convert(col: &ColumnSpec, v: Value) -> Result<Datum, ConvertError> {
    let err = |msg: String| ConvertError {
        column: col.name.clone(),
        msg,
    };
    if v == Value::NULL {
        return if col.nullable {
            Ok(Datum::Null)
        } else {
            Err(err("NULL in a NOT NULL column".into()))
        };
    }
    let bad = |v: &Value| err(format!("unexpected value {} for {:?}", shown(v), col.kind));
    let int = |v: &Value| -> Result<i64, ConvertError> {
        match *v {
            Value::Int(i) => Ok(i),
            Value::UInt(u) => i64::try_from(u).map_err(|_| bad(v)),
            ref other => as_text(other)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(other)),
        }
    };
    Ok(match col.kind {
        ColumnKind::Int32 | ColumnKind::Int64 => Datum::Int(int(&v)?),
        ColumnKind::MediumInt => {
            // mysql_common reads a signed 24-bit value without sign extension
            let i = int(&v)?;
            Datum::Int(if i >= 1 << 23 { i - (1 << 24) } else { i })
        }
        ColumnKind::Year => match v {
            // the binlog parser renders YEAR as 1900 + the stored byte; YEAR 0000 is byte 0
            Value::Bytes(ref b) if b.as_slice() == b"1900" => Datum::Int(0),
            ref other => Datum::Int(int(other)?),
        },
        ColumnKind::UInt64 => match v {
            Value::UInt(u) => Datum::UInt(u),
            // the binary protocol may hand BIGINT UNSIGNED over as a signed 64-bit pattern
            Value::Int(i) => Datum::UInt(i as u64),
            ref other => Datum::UInt(
                as_text(other)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(other))?,
            ),
        },
        ColumnKind::Decimal { scale, .. } => {
            let s = as_text(&v).ok_or_else(|| bad(&v))?;
            Datum::Decimal(normalize_decimal(s, scale).ok_or_else(|| bad(&v))?)
        }
        ColumnKind::Float => match v {
            Value::Float(f) => Datum::Float(f),
            Value::Double(d) => Datum::Float(d as f32),
            ref other => Datum::Float(
                as_text(other)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(other))?,
            ),
        },
        ColumnKind::Double => match v {
            Value::Double(d) => Datum::Double(d),
            Value::Float(f) => Datum::Double(f as f64),
            ref other => Datum::Double(
                as_text(other)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(other))?,
            ),
        },
        ColumnKind::String(cs) => match v {
            Value::Bytes(b) => Datum::Str(decode_text(cs, b).map_err(err)?),
            other => return Err(bad(&other)),
        },
        ColumnKind::Bytes => match v {
            Value::Bytes(b) => Datum::Bytes(b),
            other => return Err(bad(&other)),
        },
        ColumnKind::FixedBytes(n) => match v {
            // row events strip BINARY(n)'s trailing 0x00 bytes; SELECT shows them
            Value::Bytes(mut b) if b.len() <= n as usize => {
                b.resize(n as usize, 0);
                Datum::Bytes(b)
            }
            other => return Err(bad(&other)),
        },
        ColumnKind::Bit(n) => {
            let Value::Bytes(b) = v else {
                return Err(bad(&v));
            };
            let width = n.div_ceil(8) as usize;
            if b.len() > width {
                return Err(bad(&Value::Bytes(b)));
            }
            // big-endian, left-padded to ceil(n/8) bytes
            let mut out = vec![0u8; width - b.len()];
            out.extend_from_slice(&b);
            if n == 1 {
                Datum::Bool(out.iter().any(|&x| x != 0))
            } else {
                Datum::Bytes(out)
            }
        }
        ColumnKind::Enum(cs) => match v {
            // the binlog holds the member's 1-based index; 0 is MySQL's invalid-value ''
            Value::Int(0) | Value::UInt(0) => Datum::Str(String::new()),
            Value::Int(_) | Value::UInt(_) => {
                let i = int(&v)? as usize;
                Datum::Str(col.members.get(i - 1).cloned().ok_or_else(|| {
                    err(format!(
                        "ENUM index {i} beyond its {} members",
                        col.members.len()
                    ))
                })?)
            }
            Value::Bytes(b) => Datum::Str(decode_text(cs, b).map_err(err)?),
            other => return Err(bad(&other)),
        },
        ColumnKind::Set(cs) => match v {
            // the snapshot's text
            Value::Bytes(b) => Datum::Str(decode_text(cs, b).map_err(err)?),
            // the binlog's member bitmap (see `set_bitmap`)
            Value::UInt(bits) => {
                let n = col.members.len();
                if n < 64 && bits >> n != 0 {
                    return Err(err(format!(
                        "SET bitmap {bits:#x} names members beyond its {n}"
                    )));
                }
                let chosen: Vec<&str> = col
                    .members
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, m)| m.as_str())
                    .collect();
                Datum::Str(chosen.join(","))
            }
            other => return Err(bad(&other)),
        },
        ColumnKind::Json => match v {
            Value::Bytes(b) => {
                let text =
                    std::str::from_utf8(&b).map_err(|e| err(format!("JSON is not utf8: {e}")))?;
                let json: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| err(format!("invalid JSON text: {e}")))?;
                Datum::Str(canonical_json(json))
            }
            other => return Err(bad(&other)),
        },
        ColumnKind::Geometry => match v {
            // MySQL's internal form: 4-byte little-endian SRID, then WKB
            Value::Bytes(b) if b.len() >= 4 => Datum::Geometry {
                srid: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                wkb: b[4..].to_vec(),
            },
            other => return Err(bad(&other)),
        },
        ColumnKind::Time => match v {
            Value::Time(neg, days, h, mi, s, us) => {
                // at most ±838:59:59.999999 in MySQL; anything else is malformed, not wrapped
                let secs = ((days as i64 * 24 + h as i64) * 60 + mi as i64) * 60 + s as i64;
                let micros = secs
                    .checked_mul(1_000_000)
                    .and_then(|m| m.checked_add(us as i64))
                    .filter(|_| us < 1_000_000)
                    .ok_or_else(|| bad(&v))?;
                Datum::Int(if neg { -micros } else { micros })
            }
            ref other => Datum::Int(
                as_text(other)
                    .and_then(parse_time_text)
                    .ok_or_else(|| bad(other))?,
            ),
        },
        ColumnKind::Timestamp => match v {
            // the zero TIMESTAMP is stored as 0 (the type's range starts at 1970-01-01 00:00:01)
            Value::Int(0) => return zero_date(col, &v),
            // old 4-byte TIMESTAMP from the binlog
            Value::Int(sec) => {
                Datum::TimestampMicros(sec.checked_mul(1_000_000).ok_or_else(|| bad(&v))?)
            }
            // the binlog's TIMESTAMP2 rendering, `seconds[.micros]` since the epoch
            Value::Bytes(ref b) if !b.contains(&b'-') => {
                match as_text(&v)
                    .and_then(parse_epoch_text)
                    .ok_or_else(|| bad(&v))?
                {
                    0 => return zero_date(col, &v),
                    t => Datum::TimestampMicros(t),
                }
            }
            ref other => {
                let (y, mo, d, h, mi, s, us) = date_fields(other).ok_or_else(|| bad(other))?;
                if mo == 0 || d == 0 {
                    return zero_date(col, other);
                }
                Datum::TimestampMicros(micros_of(y, mo, d, h, mi, s, us))
            }
        },
        ColumnKind::DateTime => {
            let (y, mo, d, h, mi, s, us) = date_fields(&v).ok_or_else(|| bad(&v))?;
            if mo == 0 || d == 0 {
                return zero_date(col, &v);
            }
            Datum::DateTimeMicros(micros_of(y, mo, d, h, mi, s, us))
        }
        ColumnKind::Date => {
            let (y, mo, d, ..) = date_fields(&v).ok_or_else(|| bad(&v))?;
            if mo == 0 || d == 0 {
                return zero_date(col, &v);
            }
            Datum::Date(days_from_civil(y as i64, mo as u32, d as u32) as i32)
        }
    })
}

/// A SET value from a row event (its member bitmap, little-endian, as bytes) as the number
/// [`convert`] takes: the snapshot hands SET over as text bytes, so the two must not meet as
/// bytes.
pub fn set_bitmap(v: Value) -> Value {
    match v {
        Value::Bytes(b) if b.len() <= 8 => {
            let mut le = [0u8; 8];
            le[..b.len()].copy_from_slice(&b);
            Value::UInt(u64::from_le_bytes(le))
        }
        other => other,
    }
}

/// Parses TIME text `[-]HHH:MM:SS[.ffffff]` into signed microseconds.
fn parse_time_text(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (hms, frac) = match body.split_once('.') {
        Some((a, b)) => (a, b),
        None => (body, ""),
    };
    let mut p = hms.split(':');
    let h: i64 = p.next()?.parse().ok()?;
    let m: i64 = p.next()?.parse().ok()?;
    let sec: i64 = p.next()?.parse().ok()?;
    if p.next().is_some() {
        return None;
    }
    // TIME text spans ±838:59:59; a longer one is malformed, never wrapped
    if !(0..=838).contains(&h) || !(0..60).contains(&m) || !(0..60).contains(&sec) {
        return None;
    }
    let micros = (h * 3600 + m * 60 + sec) * 1_000_000 + fraction_micros(frac)? as i64;
    Some(if neg { -micros } else { micros })
}

/// Canonical JSON text: compact, object keys sorted by their UTF-8 bytes at every level, so the
/// snapshot's text and the binlog's binary JSON of one document give the same string.
pub fn canonical_json(v: serde_json::Value) -> String {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    sort(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(kind: ColumnKind) -> ColumnSpec {
        ColumnSpec::new("c", kind, true)
    }

    #[test]
    fn out_of_range_times_are_errors_not_overflows() {
        // malformed values a broken or hostile server could send (found by fuzzing)
        for (kind, v) in [
            (
                ColumnKind::Time,
                Value::Time(false, u32::MAX, 23, 59, 59, 0),
            ),
            (ColumnKind::Time, Value::Time(true, 0, 0, 0, 0, u32::MAX)),
            (ColumnKind::Timestamp, Value::Int(i64::MAX)),
            (
                ColumnKind::Timestamp,
                Value::Bytes(b"99999999999999999".to_vec()),
            ),
        ] {
            let e = convert(&col(kind), v.clone()).unwrap_err();
            assert!(e.msg.contains("unexpected value"), "{v:?}: {e}");
        }
        // the largest TIME is still exact
        assert_eq!(
            convert(
                &col(ColumnKind::Time),
                Value::Time(true, 34, 22, 59, 59, 999_999)
            )
            .unwrap(),
            Datum::Int(-(838 * 3600 + 59 * 60 + 59) * 1_000_000 - 999_999)
        );
    }

    #[test]
    fn decimals_are_normalised_exactly() {
        assert_eq!(normalize_decimal("99999999.99", 2).unwrap(), "99999999.99");
        assert_eq!(normalize_decimal("-0.01", 2).unwrap(), "-0.01");
        assert_eq!(normalize_decimal("-0.00", 2).unwrap(), "0.00");
        assert_eq!(normalize_decimal("007.5", 2).unwrap(), "7.50");
        assert_eq!(normalize_decimal("12", 0).unwrap(), "12");
        assert_eq!(normalize_decimal(".5", 1).unwrap(), "0.5");
        assert!(normalize_decimal("1.234", 2).is_none());
        assert!(normalize_decimal("1e5", 2).is_none());
        assert!(normalize_decimal("", 2).is_none());
    }

    #[test]
    fn binlog_and_text_timestamps_agree() {
        let c = col(ColumnKind::Timestamp);
        let from_binlog = convert(&c, Value::Bytes(b"1700000000.000123".to_vec())).unwrap();
        let from_text = convert(&c, Value::Bytes(b"2023-11-14 22:13:20.000123".to_vec())).unwrap();
        let from_binary = convert(&c, Value::Date(2023, 11, 14, 22, 13, 20, 123)).unwrap();
        assert_eq!(from_binlog, Datum::TimestampMicros(1_700_000_000_000_123));
        assert_eq!(from_binlog, from_text);
        assert_eq!(from_binlog, from_binary);
        assert_eq!(
            convert(&c, Value::Bytes(b"1700000000".to_vec())).unwrap(),
            Datum::TimestampMicros(1_700_000_000_000_000)
        );
        assert_eq!(
            format_micros(1_700_000_000_000_123),
            "2023-11-14T22:13:20.000123"
        );
        assert_eq!(format_micros(-1), "1969-12-31T23:59:59.999999");
    }

    #[test]
    fn dates_round_trip_through_civil_days() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (1969, 12, 31),
            (9999, 12, 31),
            (1, 1, 1),
        ] {
            let days = days_from_civil(y, m, d);
            assert_eq!(civil_from_days(days), (y, m, d));
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(format_date(19_000), "2022-01-08");
    }

    #[test]
    fn unsigned_bigint_keeps_its_full_range() {
        let c = col(ColumnKind::UInt64);
        assert_eq!(
            convert(&c, Value::UInt(u64::MAX)).unwrap(),
            Datum::UInt(u64::MAX)
        );
        assert_eq!(convert(&c, Value::Int(-1)).unwrap(), Datum::UInt(u64::MAX));
        assert_eq!(
            convert(&c, Value::Bytes(b"18446744073709551615".to_vec())).unwrap(),
            Datum::UInt(u64::MAX)
        );
    }

    fn latin1() -> Charset {
        crate::schema::charset("latin1").unwrap().unwrap()
    }

    #[test]
    fn latin1_is_windows_1252_and_utf8_is_validated() {
        assert_eq!(
            decode_text(latin1(), vec![0x43, 0x61, 0x66, 0xE9, 0x80]).unwrap(),
            "Café€"
        );
        assert!(decode_text(Charset::Utf8, vec![0xE9]).is_err());
        assert!(decode_text(Charset::Ascii, vec![0xE9]).is_err());
    }

    #[test]
    fn binlog_renderings_of_the_four_issue_14_defects_are_mended() {
        // MEDIUMINT: mysql_common hands -8388608 over as its unsigned 24-bit pattern
        let m = col(ColumnKind::MediumInt);
        assert_eq!(
            convert(&m, Value::Int(8_388_608)).unwrap(),
            Datum::Int(-8_388_608)
        );
        assert_eq!(convert(&m, Value::Int(16_777_215)).unwrap(), Datum::Int(-1));
        assert_eq!(
            convert(&m, Value::Int(-8_388_608)).unwrap(),
            Datum::Int(-8_388_608)
        );
        assert_eq!(
            convert(&m, Value::Int(8_388_607)).unwrap(),
            Datum::Int(8_388_607)
        );
        // BINARY(4): row events strip trailing zero bytes
        let b = col(ColumnKind::FixedBytes(4));
        assert_eq!(
            convert(&b, Value::Bytes(vec![1])).unwrap(),
            Datum::Bytes(vec![1, 0, 0, 0])
        );
        assert_eq!(
            convert(&b, Value::Bytes(vec![1, 0, 0, 0])).unwrap(),
            Datum::Bytes(vec![1, 0, 0, 0])
        );
        assert!(convert(&b, Value::Bytes(vec![1; 5])).is_err());
        // the zero TIMESTAMP is 0 in the binlog, a zero Date in the snapshot: never 1970
        let mut t = col(ColumnKind::Timestamp);
        for v in [
            Value::Bytes(b"0".to_vec()),
            Value::Int(0),
            Value::Date(0, 0, 0, 0, 0, 0, 0),
            Value::Bytes(b"0000-00-00 00:00:00".to_vec()),
        ] {
            let e = convert(&t, v).unwrap_err();
            assert!(e.to_string().contains("--zero-dates null"), "{e}");
        }
        t.zero_dates = ZeroDates::Null;
        assert_eq!(
            convert(&t, Value::Bytes(b"0".to_vec())).unwrap(),
            Datum::Null
        );
        assert_eq!(
            convert(&t, Value::Bytes(b"1".to_vec())).unwrap(),
            Datum::TimestampMicros(1_000_000)
        );
        let mut d = col(ColumnKind::Date);
        assert!(convert(&d, Value::Date(2024, 0, 10, 0, 0, 0, 0)).is_err());
        d.zero_dates = ZeroDates::Null;
        assert_eq!(
            convert(&d, Value::Date(2024, 0, 10, 0, 0, 0, 0)).unwrap(),
            Datum::Null
        );
    }

    #[test]
    fn time_year_bit_enum_set_and_geometry_agree_across_renderings() {
        let t = col(ColumnKind::Time);
        let binlog = convert(&t, Value::Time(true, 34, 22, 59, 59, 0)).unwrap();
        assert_eq!(binlog, Datum::Int(-3_020_399_000_000));
        assert_eq!(
            convert(&t, Value::Bytes(b"-838:59:59".to_vec())).unwrap(),
            binlog
        );
        assert_eq!(
            convert(&t, Value::Bytes(b"00:00:00.5".to_vec())).unwrap(),
            Datum::Int(500_000)
        );
        let y = col(ColumnKind::Year);
        assert_eq!(
            convert(&y, Value::Bytes(b"1900".to_vec())).unwrap(),
            Datum::Int(0)
        );
        assert_eq!(
            convert(&y, Value::Bytes(b"2155".to_vec())).unwrap(),
            Datum::Int(2155)
        );
        assert_eq!(convert(&y, Value::UInt(2024)).unwrap(), Datum::Int(2024));
        assert_eq!(
            convert(&col(ColumnKind::Bit(1)), Value::Bytes(vec![1])).unwrap(),
            Datum::Bool(true)
        );
        assert_eq!(
            convert(&col(ColumnKind::Bit(10)), Value::Bytes(vec![1])).unwrap(),
            Datum::Bytes(vec![0, 1])
        );
        let mut e = col(ColumnKind::Enum(Charset::Utf8));
        e.members = vec!["a".into(), "b".into()];
        assert_eq!(convert(&e, Value::Int(2)).unwrap(), Datum::Str("b".into()));
        assert_eq!(
            convert(&e, Value::Int(0)).unwrap(),
            Datum::Str(String::new())
        );
        assert_eq!(
            convert(&e, Value::Bytes(b"b".to_vec())).unwrap(),
            Datum::Str("b".into())
        );
        assert!(convert(&e, Value::Int(3)).is_err());
        let mut s = col(ColumnKind::Set(Charset::Utf8));
        s.members = (0..9).map(|i| format!("m{i}")).collect();
        assert_eq!(
            convert(&s, set_bitmap(Value::Bytes(vec![0b101, 0b1]))).unwrap(),
            Datum::Str("m0,m2,m8".into())
        );
        // one member's text from the snapshot is as long as a bitmap could be: still text
        assert_eq!(
            convert(&s, Value::Bytes(b"m1".to_vec())).unwrap(),
            Datum::Str("m1".into())
        );
        assert!(
            convert(&s, set_bitmap(Value::Bytes(vec![0, 0b10]))).is_err(),
            "bit 9 of 9 members"
        );
        let g = convert(
            &col(ColumnKind::Geometry),
            Value::Bytes(vec![0xE6, 0x10, 0, 0, 1, 2]),
        )
        .unwrap();
        assert_eq!(
            g,
            Datum::Geometry {
                srid: 4326,
                wkb: vec![1, 2]
            }
        );
    }

    #[test]
    fn json_text_is_canonical() {
        let j = col(ColumnKind::Json);
        assert_eq!(
            convert(
                &j,
                Value::Bytes(r#"{"b": [1, 2.5], "a": {"y": null, "x": "é"}}"#.as_bytes().to_vec())
            )
            .unwrap(),
            Datum::Str(r#"{"a":{"x":"é","y":null},"b":[1,2.5]}"#.into())
        );
        assert!(convert(&j, Value::Bytes(b"{".to_vec())).is_err());
    }

    #[test]
    fn null_in_not_null_column_is_an_error() {
        let c = ColumnSpec::new(
            "price",
            ColumnKind::Decimal {
                precision: 10,
                scale: 2,
            },
            false,
        );
        let e = convert(&c, Value::NULL).unwrap_err();
        assert!(e.to_string().contains("price"));
    }
}
