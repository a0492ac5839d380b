//! Column values in rtis's own types, and the single conversion used by both the binlog path
//! and the snapshot path (so a row read either way encodes to identical bytes).
//!
//! The binlog client hands over decimals as strings, TIMESTAMP as `seconds[.micros]` since the
//! epoch, DATETIME as broken-down fields and text as raw bytes; the text protocol hands over
//! everything as strings. Both are normalised here, exactly (no float rounding, microseconds kept).

use mysql_async::Value;

use crate::schema::{Charset, ColumnKind, ColumnSpec};

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

fn micros_of(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> Option<i64> {
    if mo == 0 || d == 0 {
        return None; // zero dates have no instant
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    Some(((days * 86_400 + h as i64 * 3600 + mi as i64 * 60 + s as i64) * 1_000_000) + us as i64)
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
            if f.is_empty() || f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            us = f.parse::<u32>().ok()? * 10u32.pow(6 - f.len() as u32);
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
    let us: i64 = if frac.is_empty() {
        0
    } else {
        if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        frac.parse::<i64>().ok()? * 10i64.pow(6 - frac.len() as u32)
    };
    Some(sec * 1_000_000 + us)
}

/// Decodes text bytes in the column's charset.
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
        Charset::Latin1 => Ok(bytes.into_iter().map(cp1252).collect()),
    }
}

/// MySQL's latin1 is Windows-1252: 0x80..0x9F map to typographic characters; the five bytes
/// that cp1252 leaves undefined map to the C1 control of the same value (as MySQL does).
fn cp1252(b: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
        0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
    ];
    match b {
        0x80..=0x9F => char::from_u32(HIGH[(b - 0x80) as usize] as u32).expect("valid code point"),
        _ => b as char,
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

/// Converts a value from the binlog or from a snapshot query into a [`Datum`].
///
/// Snapshot queries must run with `time_zone = '+00:00'` so TIMESTAMP text is UTC.
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
    let bad = |v: &Value| err(format!("unexpected value {v:?} for {:?}", col.kind));
    Ok(match col.kind {
        ColumnKind::Int32 | ColumnKind::Int64 => match v {
            Value::Int(i) => Datum::Int(i),
            Value::UInt(u) => Datum::Int(i64::try_from(u).map_err(|_| bad(&v))?),
            ref other => Datum::Int(
                as_text(other)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(other))?,
            ),
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
        ColumnKind::Timestamp => match v {
            // old 4-byte TIMESTAMP from the binlog
            Value::Int(sec) => Datum::TimestampMicros(sec * 1_000_000),
            Value::Date(y, mo, d, h, mi, s, us) => {
                Datum::TimestampMicros(micros_of(y, mo, d, h, mi, s, us).ok_or_else(|| bad(&v))?)
            }
            ref other => {
                let s = as_text(other).ok_or_else(|| bad(other))?;
                let micros = if s.contains('-') {
                    parse_datetime_text(s)
                        .and_then(|(y, mo, d, h, mi, sec, us)| micros_of(y, mo, d, h, mi, sec, us))
                } else {
                    parse_epoch_text(s)
                };
                Datum::TimestampMicros(micros.ok_or_else(|| bad(other))?)
            }
        },
        ColumnKind::DateTime => match v {
            Value::Date(y, mo, d, h, mi, s, us) => {
                Datum::DateTimeMicros(micros_of(y, mo, d, h, mi, s, us).ok_or_else(|| bad(&v))?)
            }
            ref other => {
                let s = as_text(other).ok_or_else(|| bad(other))?;
                let micros = parse_datetime_text(s)
                    .and_then(|(y, mo, d, h, mi, sec, us)| micros_of(y, mo, d, h, mi, sec, us));
                Datum::DateTimeMicros(micros.ok_or_else(|| bad(other))?)
            }
        },
        ColumnKind::Date => {
            let fields = match v {
                Value::Date(y, mo, d, ..) => Some((y, mo, d)),
                ref other => as_text(other)
                    .and_then(parse_datetime_text)
                    .map(|(y, mo, d, ..)| (y, mo, d)),
            };
            match fields {
                Some((y, mo, d)) if mo > 0 && d > 0 => {
                    Datum::Date(days_from_civil(y as i64, mo as u32, d as u32) as i32)
                }
                _ => return Err(err("zero or malformed DATE".into())),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(kind: ColumnKind) -> ColumnSpec {
        ColumnSpec {
            name: "c".into(),
            kind,
            nullable: true,
        }
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

    #[test]
    fn latin1_is_windows_1252_and_utf8_is_validated() {
        assert_eq!(
            decode_text(Charset::Latin1, vec![0x43, 0x61, 0x66, 0xE9, 0x80]).unwrap(),
            "Café€"
        );
        assert!(decode_text(Charset::Utf8, vec![0xE9]).is_err());
        assert!(decode_text(Charset::Ascii, vec![0xE9]).is_err());
    }

    #[test]
    fn null_in_not_null_column_is_an_error() {
        let c = ColumnSpec {
            name: "price".into(),
            kind: ColumnKind::Decimal {
                precision: 10,
                scale: 2,
            },
            nullable: false,
        };
        let e = convert(&c, Value::NULL).unwrap_err();
        assert!(e.to_string().contains("price"));
    }
}
