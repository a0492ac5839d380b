//! Every column type, exact, and identical whether read by the snapshot or from the binlog.
//!
//! The matrix: one column per type (with its edge values) added to `product`; the same SQL
//! literals are inserted once before the producer starts (snapshot path, op `r`) and once after
//! (binlog path, op `c`); the consumer's JSON of both must equal the value written in the table
//! below, which is what `SELECT` shows, in the README's type table's JSON form. The server runs in
//! a non-UTC zone. Charsets are checked byte by byte against the server's own conversion.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use common::*;
use mysql_async::prelude::*;
use serde_json::{json, Value};

fn b64(hex: &str) -> Value {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// One column: its SQL type and (SQL literal, JSON the consumer writes) per edge value.
struct Col {
    name: &'static str,
    sql_type: &'static str,
    values: Vec<(&'static str, Value)>,
}

fn col(name: &'static str, sql_type: &'static str, values: Vec<(&'static str, Value)>) -> Col {
    Col {
        name,
        sql_type,
        values,
    }
}

fn matrix() -> Vec<Col> {
    vec![
        col(
            "t_tiny",
            "TINYINT",
            vec![("-128", json!(-128)), ("127", json!(127)), ("0", json!(0))],
        ),
        col(
            "t_utiny",
            "TINYINT UNSIGNED",
            vec![("255", json!(255)), ("0", json!(0))],
        ),
        col(
            "t_small",
            "SMALLINT",
            vec![("-32768", json!(-32768)), ("32767", json!(32767))],
        ),
        col(
            "t_usmall",
            "SMALLINT UNSIGNED",
            vec![("65535", json!(65535))],
        ),
        col(
            "t_medium",
            "MEDIUMINT",
            vec![
                ("-8388608", json!(-8388608)),
                ("8388607", json!(8388607)),
                ("-1", json!(-1)),
            ],
        ),
        col(
            "t_umedium",
            "MEDIUMINT UNSIGNED",
            vec![("16777215", json!(16777215)), ("8388608", json!(8388608))],
        ),
        col(
            "t_int",
            "INT",
            vec![
                ("-2147483648", json!(-2147483648i64)),
                ("2147483647", json!(2147483647)),
            ],
        ),
        col(
            "t_uint",
            "INT UNSIGNED",
            vec![("4294967295", json!(4294967295u64))],
        ),
        col(
            "t_big",
            "BIGINT",
            vec![
                ("-9223372036854775808", json!(i64::MIN)),
                ("9223372036854775807", json!(i64::MAX)),
            ],
        ),
        col(
            "t_ubig",
            "BIGINT UNSIGNED",
            vec![
                ("18446744073709551615", json!("18446744073709551615")),
                ("0", json!("0")),
            ],
        ),
        col(
            "t_dec",
            "DECIMAL(65,30)",
            vec![
                (
                    "-12345678901234567890123456789012345.123456789012345678901234567890",
                    json!("-12345678901234567890123456789012345.123456789012345678901234567890"),
                ),
                ("0", json!("0.000000000000000000000000000000")),
            ],
        ),
        col("t_dec0", "DECIMAL(5,0)", vec![("-99999", json!("-99999"))]),
        col(
            "t_float",
            "FLOAT",
            vec![
                ("0.1", json!(0.1)),
                ("-3.4028234e38", json!(-3.4028235e38)),
                ("1.17549435e-38", json!(1.1754944e-38)),
            ],
        ),
        col(
            "t_double",
            "DOUBLE",
            vec![
                ("0.1", json!(0.1)),
                ("1.7976931348623157e308", json!(1.7976931348623157e308)),
                ("-2.2250738585072014e-308", json!(-2.2250738585072014e-308)),
            ],
        ),
        col(
            "t_bit1",
            "BIT(1)",
            vec![("b'1'", json!(true)), ("b'0'", json!(false))],
        ),
        col(
            "t_bit10",
            "BIT(10)",
            vec![("b'1000000001'", b64("0201")), ("b'0'", b64("0000"))],
        ),
        col(
            "t_bit64",
            "BIT(64)",
            vec![("0xFFFFFFFFFFFFFFFF", b64("FFFFFFFFFFFFFFFF"))],
        ),
        // unsigned columns after BIT and after YEAR: the table map's signedness bits count
        // numeric columns only, so one type counted wrongly would flip these ones' sign
        col(
            "t_after_bit",
            "MEDIUMINT UNSIGNED",
            vec![("16777215", json!(16777215))],
        ),
        col(
            "t_char",
            "CHAR(10)",
            vec![
                ("'abc'", json!("abc")),
                ("''", json!("")),
                ("'日本語'", json!("日本語")),
            ],
        ),
        col(
            "t_varchar",
            "VARCHAR(50)",
            vec![
                ("'Café ☕ 😀'", json!("Café ☕ 😀")),
                ("'tab\\there'", json!("tab\there")),
            ],
        ),
        col(
            "t_text",
            "TEXT",
            vec![("REPEAT('x', 300)", json!("x".repeat(300)))],
        ),
        col(
            "t_latin1",
            "VARCHAR(20) CHARACTER SET latin1",
            vec![("'café'", json!("café")), ("'€ Œ'", json!("€ Œ"))],
        ),
        col(
            "t_cp1251",
            "VARCHAR(20) CHARACTER SET cp1251",
            vec![("'Привет'", json!("Привет"))],
        ),
        col(
            "t_utf16",
            "VARCHAR(20) CHARACTER SET utf16",
            vec![("'A😀'", json!("A😀"))],
        ),
        col(
            "t_ucs2",
            "VARCHAR(20) CHARACTER SET ucs2",
            vec![("'Ωmega'", json!("Ωmega"))],
        ),
        col(
            "t_utf32",
            "VARCHAR(20) CHARACTER SET utf32",
            vec![("'😀x'", json!("😀x"))],
        ),
        col(
            "t_gbk",
            "VARCHAR(20) CHARACTER SET gbk",
            vec![("'中文'", json!("中文"))],
        ),
        col(
            "t_big5",
            "VARCHAR(20) CHARACTER SET big5",
            vec![("'中文'", json!("中文"))],
        ),
        col(
            "t_sjis",
            "VARCHAR(20) CHARACTER SET sjis",
            vec![("'ｱ日本'", json!("ｱ日本"))],
        ),
        col(
            "t_euckr",
            "VARCHAR(20) CHARACTER SET euckr",
            vec![("'한국어'", json!("한국어"))],
        ),
        col(
            "t_binary",
            "BINARY(4)",
            vec![
                ("X'01'", b64("01000000")),
                ("X'00000000'", b64("00000000")),
                ("X'01020304'", b64("01020304")),
            ],
        ),
        col(
            "t_binary255",
            "BINARY(255)",
            vec![("X'FF'", b64(&format!("FF{}", "00".repeat(254))))],
        ),
        col("t_char100", "CHAR(100)", vec![("'ü '", json!("ü"))]),
        col(
            "t_varbinary",
            "VARBINARY(10)",
            vec![("X'00FF00'", b64("00FF00")), ("X''", b64(""))],
        ),
        col("t_blob", "BLOB", vec![("X'DEADBEEF00'", b64("DEADBEEF00"))]),
        col(
            "t_enum",
            "ENUM('a','b','it''s','ünï')",
            vec![
                ("'b'", json!("b")),
                ("'it''s'", json!("it's")),
                ("'ünï'", json!("ünï")),
            ],
        ),
        col(
            "t_set",
            "SET('x','y','z')",
            vec![
                ("'x,z'", json!("x,z")),
                ("''", json!("")),
                ("'z,y'", json!("y,z")),
                ("'x'", json!("x")),
            ],
        ),
        col(
            "t_json",
            "JSON",
            vec![(
                r#"'{"b": 1, "a": [1, 2.5, "é"]}'"#,
                json!(r#"{"b": 1, "a": [1, 2.5, "é"]}"#),
            )],
        ),
        col(
            "t_point",
            "POINT",
            vec![(
                "ST_GeomFromText('POINT(1 2)', 4326)",
                json!({"wkb": b64("0101000000000000000000F03F0000000000000040"), "srid": 4326}),
            )],
        ),
        col(
            "t_geom",
            "GEOMETRY",
            vec![(
                "ST_GeomFromText('LINESTRING(0 0, 1 1)')",
                json!({"wkb": b64(&format!("010200000002000000{}{}", "00".repeat(16), "000000000000F03F".repeat(2))), "srid": 0}),
            )],
        ),
        col(
            "t_date",
            "DATE",
            vec![
                ("'1000-01-01'", json!("1000-01-01")),
                ("'9999-12-31'", json!("9999-12-31")),
                ("'2024-02-29'", json!("2024-02-29")),
            ],
        ),
        col(
            "t_time",
            "TIME",
            vec![
                ("'-838:59:59'", json!(-3_020_399_000_000i64)),
                ("'12:34:56'", json!(45_296_000_000i64)),
                ("'00:00:00'", json!(0)),
            ],
        ),
        col(
            "t_time6",
            "TIME(6)",
            vec![
                ("'838:59:59.000000'", json!(3_020_399_000_000i64)),
                ("'-00:00:00.000001'", json!(-1)),
                ("'-01:00:00.5'", json!(-3_600_500_000i64)),
            ],
        ),
        col(
            "t_time3",
            "TIME(3)",
            vec![("'00:00:01.999'", json!(1_999_000))],
        ),
        col(
            "t_dt",
            "DATETIME",
            vec![
                ("'1000-01-01 00:00:00'", json!("1000-01-01T00:00:00.000000")),
                ("'9999-12-31 23:59:59'", json!("9999-12-31T23:59:59.000000")),
            ],
        ),
        col(
            "t_dt1",
            "DATETIME(1)",
            vec![(
                "'2024-01-01 12:00:00.9'",
                json!("2024-01-01T12:00:00.900000"),
            )],
        ),
        col(
            "t_dt2",
            "DATETIME(2)",
            vec![(
                "'2024-01-01 12:00:00.99'",
                json!("2024-01-01T12:00:00.990000"),
            )],
        ),
        col(
            "t_dt3",
            "DATETIME(3)",
            vec![(
                "'2024-01-01 12:00:00.123'",
                json!("2024-01-01T12:00:00.123000"),
            )],
        ),
        col(
            "t_dt4",
            "DATETIME(4)",
            vec![(
                "'2024-01-01 12:00:00.1234'",
                json!("2024-01-01T12:00:00.123400"),
            )],
        ),
        col(
            "t_dt5",
            "DATETIME(5)",
            vec![(
                "'2024-01-01 12:00:00.12345'",
                json!("2024-01-01T12:00:00.123450"),
            )],
        ),
        col(
            "t_dt6",
            "DATETIME(6)",
            vec![
                (
                    "'9999-12-31 23:59:59.999999'",
                    json!("9999-12-31T23:59:59.999999"),
                ),
                (
                    "'1969-12-31 23:59:59.999999'",
                    json!("1969-12-31T23:59:59.999999"),
                ),
            ],
        ),
        // the server's zone is +05:30: TIMESTAMP literals are read in it, records are UTC
        col(
            "t_ts",
            "TIMESTAMP NULL",
            vec![
                (
                    "'1970-01-01 05:30:01'",
                    json!("1970-01-01T00:00:01.000000Z"),
                ),
                (
                    "'2024-06-01 12:00:00'",
                    json!("2024-06-01T06:30:00.000000Z"),
                ),
            ],
        ),
        col(
            "t_ts6",
            "TIMESTAMP(6) NULL",
            vec![
                (
                    "'2038-01-19 08:44:07.999999'",
                    json!("2038-01-19T03:14:07.999999Z"),
                ),
                (
                    "'2000-01-01 05:30:00.000001'",
                    json!("2000-01-01T00:00:00.000001Z"),
                ),
            ],
        ),
        col(
            "t_ts3",
            "TIMESTAMP(3) NULL",
            vec![(
                "'2024-01-01 05:30:00.5'",
                json!("2024-01-01T00:00:00.500000Z"),
            )],
        ),
        col(
            "t_year",
            "YEAR",
            vec![
                ("1901", json!(1901)),
                ("2155", json!(2155)),
                ("0", json!(0)),
                ("2024", json!(2024)),
            ],
        ),
        col(
            "t_after_year",
            "SMALLINT UNSIGNED",
            vec![("65535", json!(65535))],
        ),
    ]
}

/// Rows `first_id + i`: value i of every column (NULL where a column has fewer values).
fn insert_sql(cols: &[Col], first_id: u64) -> String {
    let rows = cols.iter().map(|c| c.values.len()).max().unwrap() + 1; // the last row: all NULL
    let names: Vec<&str> = cols.iter().map(|c| c.name).collect();
    (0..rows)
        .map(|i| {
            let vals: Vec<&str> = cols
                .iter()
                .map(|c| c.values.get(i).map_or("NULL", |v| v.0))
                .collect();
            format!(
                "INSERT INTO product (id, name, price, {}) VALUES ({}, 'row {i}', 1.00, {})",
                names.join(", "),
                first_id + i as u64,
                vals.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join(";\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_is_exact_and_the_same_from_snapshot_and_binlog() {
    let db = MariaDb::start_with(&["--default-time-zone=+05:30"]);
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    let cols = matrix();
    let alter: Vec<String> = cols
        .iter()
        .map(|c| format!("ADD COLUMN {} {}", c.name, c.sql_type))
        .collect();
    db.exec(&shop, &format!("ALTER TABLE product {}", alter.join(", ")))
        .await;
    let rows = cols.iter().map(|c| c.values.len()).max().unwrap() + 1;
    db.exec(&shop, &insert_sql(&cols, 1000)).await;

    let topic = unique("types");
    let state = tempfile::tempdir().unwrap();
    let mut producer = InProcess::start(producer_config(
        &db,
        &shop,
        broker,
        &topic,
        &state.path().join("rtis.sqlite"),
    ));
    // the snapshot's rows are in the topic before the same values are written again (a value
    // the snapshot cannot convert stops the producer: say so at once, with its error)
    let bootstrap = broker.bootstrap();
    tokio::select! {
        _ = records_at_least(&bootstrap, &topic, rows as i64, Duration::from_secs(90)) => {}
        out = &mut producer.handle => panic!("the producer stopped during the snapshot: {out:?}"),
    }
    db.exec(&shop, &insert_sql(&cols, 2000)).await;
    let lines = drain_topic(
        &broker.bootstrap(),
        &topic,
        2 * rows as i64,
        Duration::from_secs(90),
    )
    .await;
    producer.stop().await.unwrap();

    let by_id: BTreeMap<String, &Value> = lines
        .iter()
        .map(|l| (l["key"]["id"].as_str().unwrap().to_string(), l))
        .collect();
    assert_eq!(by_id.len(), 2 * rows, "{lines:#?}");
    let mut wrong = Vec::new();
    for i in 0..rows {
        let snap = by_id[&(1000 + i).to_string()];
        let bin = by_id[&(2000 + i).to_string()];
        assert_eq!(snap["op"], "r", "{snap}");
        assert_eq!(bin["op"], "c", "{bin}");
        for c in &cols {
            let want = c.values.get(i).map_or(Value::Null, |v| v.1.clone());
            for (path, rec) in [("snapshot", snap), ("binlog", bin)] {
                let got = &rec["after"][c.name];
                if *got != want {
                    wrong.push(format!(
                        "{} {} = {}: {path} gave {got}, expected {want}",
                        c.name,
                        c.sql_type,
                        c.values.get(i).map_or("NULL", |v| v.0)
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong values:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Zero dates: an error naming the column by default (never a silent 1970), NULL under
/// `--zero-dates null`, the same from the snapshot and the binlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_dates_are_an_error_or_null_never_1970() {
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    db.exec(
        &shop,
        "ALTER TABLE product ADD COLUMN z_ts TIMESTAMP NULL, ADD COLUMN z_dt DATETIME(3) NOT NULL DEFAULT '2000-01-01', \
         ADD COLUMN z_d DATE NULL",
    )
    .await;
    let zero = "SET SESSION sql_mode = ''; INSERT INTO product (id, name, price, z_ts, z_dt, z_d) VALUES \
                ({id}, 'zero', 1.00, '0000-00-00 00:00:00', '0000-00-00 00:00:00.000', '2024-00-10')";
    db.exec(&shop, &zero.replace("{id}", "1")).await;

    // default policy, snapshot path: stops naming the column and the way out
    let topic = unique("zero");
    let state = tempfile::tempdir().unwrap();
    let cfg = producer_config(&db, &shop, broker, &topic, &state.path().join("a.sqlite"));
    let err = InProcess::start(cfg).failure().await;
    assert!(
        err.contains("z_ts") && err.contains("--zero-dates null"),
        "{err}"
    );

    // default policy, binlog path
    let topic = unique("zero");
    let mut cfg = producer_config(&db, &shop, broker, &topic, &state.path().join("b.sqlite"));
    cfg.snapshot = rtis::config::SnapshotMode::Never;
    let p = InProcess::start_streaming(cfg).await;
    db.exec(&shop, &zero.replace("{id}", "2")).await;
    let err = p.failure().await;
    assert!(err.contains("z_ts") && err.contains("zero date"), "{err}");
    assert!(
        err.contains("mariadb-bin.0"),
        "names the binlog position: {err}"
    );

    // --zero-dates null: NULL from both paths, a real date next to it untouched
    let topic = unique("zero");
    let mut cfg = producer_config(&db, &shop, broker, &topic, &state.path().join("c.sqlite"));
    cfg.zero_dates = rtis::schema::ZeroDates::Null;
    let p = InProcess::start(cfg);
    records_at_least(&broker.bootstrap(), &topic, 2, Duration::from_secs(60)).await;
    db.exec(&shop, &zero.replace("{id}", "3")).await;
    db.exec(
        &shop,
        "INSERT INTO product (id, name, price, z_ts, z_dt, z_d) VALUES (4, 'real', 1.00, '1970-01-01 00:00:01', '2024-01-01 00:00:00.5', '2024-01-10')",
    )
    .await;
    let lines = drain_topic(&broker.bootstrap(), &topic, 4, Duration::from_secs(60)).await;
    p.stop().await.unwrap();
    let after = |id: &str| {
        lines
            .iter()
            .find(|l| l["key"]["id"] == id)
            .unwrap_or_else(|| panic!("no record for {id}: {lines:#?}"))["after"]
            .clone()
    };
    for id in ["1", "2", "3"] {
        let a = after(id);
        assert_eq!(
            (&a["z_ts"], &a["z_dt"], &a["z_d"]),
            (&Value::Null, &Value::Null, &Value::Null),
            "id {id}: {a}"
        );
    }
    let a = after("4");
    assert_eq!(a["z_ts"], "1970-01-01T00:00:01.000000Z");
    assert_eq!(a["z_dt"], "2024-01-01T00:00:00.500000");
    assert_eq!(a["z_d"], "2024-01-10");
}

/// Single-byte charsets, every byte: rtis decodes each byte as the server converts it to
/// utf8mb4 (bytes the server leaves undefined, shown as `?`, are skipped: no client text can
/// store them). Multi-byte charsets: sample text through the server's conversion and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charsets_decode_as_the_server_converts() {
    let db = MariaDb::start();
    let mut c = db.conn("").await;
    let mut wrong = Vec::new();
    for cs in [
        "latin1", "latin2", "latin7", "greek", "hebrew", "cp1250", "cp1251", "cp1256", "cp1257",
        "cp866", "koi8r", "koi8u", "macroman",
    ] {
        let charset = rtis::schema::charset(cs).unwrap().unwrap();
        for b in 0u8..=255 {
            let server: Option<Vec<u8>> = c
                .query_first(format!("SELECT CONVERT(_{cs} X'{b:02X}' USING utf8mb4)"))
                .await
                .unwrap();
            let server = String::from_utf8(server.unwrap()).unwrap();
            if server == "?" && b != b'?' {
                continue;
            }
            let ours = rtis::value::decode_text(charset, vec![b]);
            if ours.as_deref() != Ok(server.as_str()) {
                wrong.push(format!(
                    "{cs} byte {b:02X}: server {server:?}, rtis {ours:?}"
                ));
            }
        }
    }
    for (cs, text) in [
        ("utf16", "A😀Ω"),
        ("utf16le", "A😀Ω"),
        ("ucs2", "AΩ€"),
        ("utf32", "😀x"),
        ("gbk", "中文，汉字"),
        ("gb2312", "中文汉字"),
        ("big5", "中文繁體字"),
        ("sjis", "ｱ日本語ひらがなカタカナ"),
        ("cp932", "日本語①～"),
        ("ujis", "日本語ひらがな"),
        ("eucjpms", "日本語①"),
        ("euckr", "한국어 텍스트"),
        ("utf8mb3", "Café ☕"),
        ("ascii", "plain"),
    ] {
        let charset = rtis::schema::charset(cs).unwrap().unwrap();
        // HEX: the result must not be converted back to the connection's charset
        let hex: String = c
            .exec_first(format!("SELECT HEX(CONVERT(? USING {cs}))"), (text,))
            .await
            .unwrap()
            .unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let ours = rtis::value::decode_text(charset, bytes.clone());
        if ours.as_deref() != Ok(text) {
            wrong.push(format!("{cs} {text:?} as {bytes:02X?}: rtis {ours:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
