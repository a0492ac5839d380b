//! Entry points of the fuzz targets in `fuzz/` (`cargo +nightly fuzz run consumer_decode`),
//! kept in the library so that `tests/fuzz_corpus.rs` replays the committed corpus, and every
//! finding's regression input, on stable in every test run.
//!
//! Each entry point feeds untrusted bytes to a parser rtis runs on data it does not control:
//! the consumer's decoding of records and schema-topic entries, the producer's reading of
//! checkpoints and position headers from the topic, of MariaDB's compressed events and of
//! column values. None may panic, hang or allocate beyond the input's size (errors are fine).
#![doc(hidden)]

use std::sync::OnceLock;

use mysql_async::Value;

use crate::avro::{self, WriterSchema};
use crate::schema::{Charset, ColumnKind, ColumnSpec, TableSchema, ZeroDates};

/// A column of every kind rtis captures, NULLable or not, zero dates as NULL or as errors.
fn every_kind() -> &'static [ColumnSpec] {
    static COLUMNS: OnceLock<Vec<ColumnSpec>> = OnceLock::new();
    COLUMNS.get_or_init(|| {
        let kinds = [
            ColumnKind::Int32,
            ColumnKind::MediumInt,
            ColumnKind::Int64,
            ColumnKind::UInt64,
            ColumnKind::Decimal {
                precision: 10,
                scale: 2,
            },
            ColumnKind::Decimal {
                precision: 65,
                scale: 30,
            },
            ColumnKind::Float,
            ColumnKind::Double,
            ColumnKind::String(Charset::Utf8),
            ColumnKind::String(Charset::Ascii),
            ColumnKind::String(Charset::Utf32),
            ColumnKind::String(Charset::Other(encoding_rs::WINDOWS_1252)),
            ColumnKind::String(Charset::Other(encoding_rs::GBK)),
            ColumnKind::Bytes,
            ColumnKind::FixedBytes(16),
            ColumnKind::Bit(1),
            ColumnKind::Bit(64),
            ColumnKind::Enum(Charset::Utf8),
            ColumnKind::Set(Charset::Utf8),
            ColumnKind::Json,
            ColumnKind::Geometry,
            ColumnKind::Timestamp,
            ColumnKind::DateTime,
            ColumnKind::Date,
            ColumnKind::Time,
            ColumnKind::Year,
        ];
        let mut out = Vec::new();
        for (i, kind) in kinds.into_iter().enumerate() {
            for nullable in [false, true] {
                let mut c = ColumnSpec::new(format!("c{i}_{nullable}"), kind, nullable);
                if matches!(kind, ColumnKind::Enum(_) | ColumnKind::Set(_)) {
                    c.members = vec!["a".into(), "b,c".into(), "ü".into()];
                }
                if kind.has_zero_dates() && nullable {
                    c.zero_dates = ZeroDates::Null;
                }
                out.push(c);
            }
        }
        out
    })
}

/// The key and envelope schemas of a table with a column of every kind.
fn schemas() -> &'static (WriterSchema, WriterSchema) {
    static SCHEMAS: OnceLock<(WriterSchema, WriterSchema)> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let table = TableSchema {
            db: "shop".into(),
            table: "every_kind".into(),
            columns: every_kind().to_vec(),
            key: vec![0, 6],
        };
        (
            WriterSchema::parse(&avro::key_schema_json(&table)).expect("key schema"),
            WriterSchema::parse(&avro::envelope_schema_json(&table)).expect("envelope schema"),
        )
    })
}

/// The consumer's side: record bytes, schema-topic entries, checkpoints and headers.
pub fn consumer_decode(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            let (key, value) = schemas();
            let _ = avro::decode_to_json(value, rest);
            let _ = avro::decode_to_json(key, rest);
        }
        1 => {
            // a schema (a schema-topic entry, a registry answer), 0xFF, a body written with it
            let (text, body) = match rest.iter().position(|&b| b == 0xFF) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            if let Ok(text) = std::str::from_utf8(text) {
                if let Ok(schema) = WriterSchema::parse(text) {
                    let _ = avro::decode_to_json(&schema, body);
                }
            }
        }
        2 => {
            let _ = avro::split_single_object(rest);
            let _ = crate::registry::split_confluent(rest);
            let _ = crate::framing::format_of(rest);
            let _ = serde_json::from_slice::<serde_json::Value>(rest);
        }
        _ => {
            let _ = crate::checkpoint::Checkpoint::from_json(rest);
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = text.parse::<crate::position::SourcePos>();
                let _ = text.parse::<crate::position::BinlogPosition>();
            }
        }
    }
}

/// The producer's side: MariaDB's compressed events and column values of every kind.
pub fn binlog_bytes(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            // a post-header length, then a compressed event's body
            if let Some((&post_header_len, body)) = rest.split_first() {
                for ty in 165..=171 {
                    let _ = crate::compressed::uncompress(ty, body, post_header_len as usize % 64);
                }
            }
        }
        1 => {
            // the snapshot path: the text (or bytes) the server sends for a column
            for col in every_kind() {
                let _ = crate::value::convert(col, Value::Bytes(rest.to_vec()));
            }
        }
        _ => {
            // the binlog path: the typed values the row-image parser hands over
            let mut b = [0u8; 16];
            let n = rest.len().min(16);
            b[..n].copy_from_slice(&rest[..n]);
            let word = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
            let values = [
                Value::NULL,
                Value::Int(word as i64),
                Value::UInt(word),
                Value::Float(f32::from_bits(word as u32)),
                Value::Double(f64::from_bits(word)),
                Value::Date(
                    u16::from_le_bytes([b[8], b[9]]),
                    b[10],
                    b[11],
                    b[12],
                    b[13],
                    b[14],
                    word as u32,
                ),
                Value::Time(b[15] & 1 != 0, word as u32, b[8], b[9], b[10], word as u32),
            ];
            for col in every_kind() {
                for v in &values {
                    let _ = crate::value::convert(col, v.clone());
                }
            }
        }
    }
}

/// A value of `kind` as the converters produce it.
fn sample(kind: ColumnKind, i: usize) -> crate::value::Datum {
    use crate::value::Datum;
    match kind {
        ColumnKind::Int32 | ColumnKind::Year | ColumnKind::Time => Datum::Int(-(i as i64) * 1000),
        ColumnKind::MediumInt => Datum::Int(-8_388_608),
        ColumnKind::Int64 => Datum::Int(i64::MIN + i as i64),
        ColumnKind::UInt64 => Datum::UInt(u64::MAX - i as u64),
        ColumnKind::Decimal { scale, .. } => {
            Datum::Decimal(format!("-12.{}", "5".repeat(scale as usize)))
        }
        ColumnKind::Float => Datum::Float(0.1),
        ColumnKind::Double => Datum::Double(-1e300),
        ColumnKind::String(_) | ColumnKind::Enum(_) | ColumnKind::Set(_) => {
            Datum::Str(format!("ü{i}"))
        }
        ColumnKind::Json => Datum::Str(r#"{"a":[1,2]}"#.into()),
        ColumnKind::Bytes | ColumnKind::Bit(_) => Datum::Bytes(vec![0, 1, 2, i as u8]),
        ColumnKind::FixedBytes(n) => Datum::Bytes(vec![7; n as usize]),
        ColumnKind::Geometry => Datum::Geometry {
            srid: 4326,
            wkb: vec![1, 1, 0, 0, 0],
        },
        ColumnKind::Timestamp => Datum::TimestampMicros(1_700_000_000_123_456),
        ColumnKind::DateTime => Datum::DateTimeMicros(-1),
        ColumnKind::Date => Datum::Date(19_000),
    }
}

/// Valid inputs of each target (`(target, bytes)`): the seeds of `tests/fuzz_corpus.rs`'s
/// mutation run (the committed corpus grew from them and was minimised with `cargo fuzz cmin`).
pub fn valid_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let (key, value) = schemas();
    let table = TableSchema {
        db: "shop".into(),
        table: "every_kind".into(),
        columns: every_kind().to_vec(),
        key: vec![0, 6],
    };
    let row: Vec<_> = every_kind()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.nullable && i % 4 == 1 {
                crate::value::Datum::Null
            } else {
                sample(c.kind, i)
            }
        })
        .collect();
    let source = avro::SourceInfo {
        server_id: 1,
        file: "mariadb-bin.000001",
        pos: 4242,
        row: 1,
        gtid: Some("0-1-7"),
        ts_ms: 1_700_000_000_000,
        snapshot: false,
        connector: "fuzz",
        server_uuid: None,
    };
    let mut body = Vec::new();
    avro::encode_envelope(
        &mut body,
        &[],
        &table,
        "u",
        Some(&row),
        Some(&row),
        &source,
        1,
    );
    let mut key_body = Vec::new();
    avro::encode_key(&mut key_body, &[], &table, &row);
    let with = |mode: u8, b: &[u8]| [&[mode][..], b].concat();
    let mut framed = crate::framing::single_object(value);
    framed.extend_from_slice(&body);
    let mut confluent = crate::registry::confluent_header(7).to_vec();
    confluent.extend_from_slice(&key_body);
    let checkpoint = crate::checkpoint::Checkpoint::at(crate::position::BinlogPosition::new(
        "mariadb-bin.000003".to_string(),
        1234,
    ))
    .to_json("fuzz");
    let schema_and_body = [key.json.as_bytes(), &[0xFF], &key_body].concat();
    // a compressed QUERY event: post-header 13, no status vars, db "shop", then zlib text
    let mut query = vec![0u8; 13];
    query[8] = 4;
    query.extend_from_slice(b"shop\0");
    let text = b"INSERT INTO product VALUES (1)";
    query.push(0x81);
    query.push(text.len() as u8);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, text).expect("zlib");
    query.extend_from_slice(&z.finish().expect("zlib"));
    let mut inputs = vec![
        ("consumer_decode", with(0, &body)),
        ("consumer_decode", with(0, &key_body)),
        ("consumer_decode", with(1, &schema_and_body)),
        ("consumer_decode", with(2, &framed)),
        ("consumer_decode", with(2, &confluent)),
        ("consumer_decode", with(3, checkpoint.as_bytes())),
        ("consumer_decode", with(3, b"3:4242:1:0")),
        ("binlog_bytes", with(0, &[&[13u8][..], &query].concat())),
        ("binlog_bytes", with(2, &1_700_000_000u64.to_le_bytes())),
    ];
    for text in [
        "2024-02-29 23:59:59.999999",
        "-838:59:59.000001",
        "-99999999.99",
        "18446744073709551615",
        "a,b,c",
        r#"{"b":1,"a":[true,null]}"#,
        "0000-00-00",
    ] {
        inputs.push(("binlog_bytes", with(1, text.as_bytes())));
    }
    inputs
}
