//! The streaming producer against a real MariaDB binlog and a real broker: SQL in, records out.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use mysql_async::prelude::*;
use serde_json::{json, Value};

/// One case: statements run as root, then the records expected for the case's ids, in order
/// per key: (op, id, before ⊇, after ⊇).
struct Case {
    name: &'static str,
    sql: &'static str,
    expect: Vec<(&'static str, &'static str, Value, Value)>,
}

fn subset(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| subset(v, gv))),
        (w, g) => w == g,
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "single insert",
            sql: "INSERT INTO product (id, name, category, price) VALUES (1, 'Widget', 'tools', 9.99)",
            expect: vec![("c", "1", Value::Null, json!({"id": "1", "name": "Widget", "category": "tools", "price": "9.99"}))],
        },
        Case {
            name: "multi-row insert",
            sql: "INSERT INTO product (id, name, price) VALUES (2, 'a', 1.00), (3, 'b', 2.00), (4, 'c', 3.00)",
            expect: vec![
                ("c", "2", Value::Null, json!({"name": "a", "category": null, "price": "1.00"})),
                ("c", "3", Value::Null, json!({"name": "b"})),
                ("c", "4", Value::Null, json!({"name": "c"})),
            ],
        },
        Case {
            name: "update carries before and after",
            sql: "INSERT INTO product (id, name, price) VALUES (10, 'old', 5.00); UPDATE product SET name = 'new', price = 6.50 WHERE id = 10",
            expect: vec![
                ("c", "10", Value::Null, json!({"name": "old"})),
                ("u", "10", json!({"name": "old", "price": "5.00"}), json!({"name": "new", "price": "6.50"})),
            ],
        },
        Case {
            name: "delete is followed by a tombstone",
            sql: "INSERT INTO product (id, name, price) VALUES (20, 'gone', 1.00); DELETE FROM product WHERE id = 20",
            expect: vec![
                ("c", "20", Value::Null, json!({"name": "gone"})),
                ("d", "20", json!({"name": "gone"}), Value::Null),
                ("tombstone", "20", Value::Null, Value::Null),
            ],
        },
        Case {
            name: "multi-statement transaction",
            sql: "START TRANSACTION; INSERT INTO product (id, name, price) VALUES (30, 't1', 1.00); UPDATE product SET price = 2.00 WHERE id = 30; INSERT INTO product (id, name, price) VALUES (31, 't2', 1.00); COMMIT",
            expect: vec![
                ("c", "30", Value::Null, json!({"price": "1.00"})),
                ("u", "30", json!({"price": "1.00"}), json!({"price": "2.00"})),
                ("c", "31", Value::Null, json!({"name": "t2"})),
            ],
        },
        Case {
            name: "rolled-back transaction emits nothing",
            sql: "START TRANSACTION; INSERT INTO product (id, name, price) VALUES (40, 'never', 1.00); ROLLBACK",
            expect: vec![],
        },
        Case {
            name: "unicode names and NULL category",
            sql: "INSERT INTO product (id, name, category, price) VALUES (50, 'Café ☕ 日本語 😀', NULL, 1.00)",
            expect: vec![("c", "50", Value::Null, json!({"name": "Café ☕ 日本語 😀", "category": null}))],
        },
        Case {
            name: "price extremes",
            sql: "INSERT INTO product (id, name, price) VALUES (60, 'max', 99999999.99), (61, 'neg', -0.01), (62, 'zero', 0.00)",
            expect: vec![
                ("c", "60", Value::Null, json!({"price": "99999999.99"})),
                ("c", "61", Value::Null, json!({"price": "-0.01"})),
                ("c", "62", Value::Null, json!({"price": "0.00"})),
            ],
        },
        Case {
            name: "id 2^64-1",
            sql: "INSERT INTO product (id, name, price) VALUES (18446744073709551615, 'max id', 1.00)",
            expect: vec![("c", "18446744073709551615", Value::Null, json!({"id": "18446744073709551615"}))],
        },
        Case {
            name: "TIMESTAMP(6) microseconds, written from a non-UTC session",
            sql: "SET time_zone = '+05:30'; INSERT INTO product (id, name, price, last_updated) VALUES (70, 'tz', 1.00, '2024-01-01 05:30:00.123456')",
            expect: vec![("c", "70", Value::Null, json!({"last_updated": "2024-01-01T00:00:00.123456Z"}))],
        },
        Case {
            name: "primary key change is a delete plus a create",
            sql: "INSERT INTO product (id, name, price) VALUES (80, 'moves', 1.00); UPDATE product SET id = 81 WHERE id = 80",
            expect: vec![
                ("c", "80", Value::Null, json!({"id": "80"})),
                ("d", "80", json!({"id": "80"}), Value::Null),
                ("tombstone", "80", Value::Null, Value::Null),
                ("c", "81", Value::Null, json!({"id": "81", "name": "moves"})),
            ],
        },
        Case {
            name: "other tables are skipped",
            sql: "CREATE TABLE other (id INT PRIMARY KEY, v INT); INSERT INTO other VALUES (1, 1); INSERT INTO product (id, name, price) VALUES (90, 'after other', 1.00)",
            expect: vec![("c", "90", Value::Null, json!({"name": "after other"}))],
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_in_records_out() {
    cases_through(&MariaDb::start()).await;
}

/// The same cases with `log_bin_compress`: MariaDB writes the statements and row images as
/// compressed events (types 165–171), which must decode to the very same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_in_records_out_through_compressed_binlog_events() {
    let db = MariaDb::start_with(&["--log-bin-compress=ON", "--log-bin-compress-min-len=10"]);
    let shop = cases_through(&db).await;
    // the premise: the binlog really holds compressed events of both kinds
    let mut c = db.conn(&shop).await;
    let mut kinds = std::collections::BTreeSet::new();
    let files: Vec<(String, u64)> = c.query("SHOW BINARY LOGS").await.unwrap();
    for (file, _) in files {
        let events: Vec<mysql_async::Row> = c
            .query(format!("SHOW BINLOG EVENTS IN '{file}'"))
            .await
            .unwrap();
        for e in events {
            let kind: String = e.get("Event_type").unwrap();
            if kind.to_ascii_lowercase().contains("compressed") {
                kinds.insert(kind);
            }
        }
    }
    for want in [
        "Query_compressed",
        "Write_rows_compressed_v1",
        "Update_rows_compressed_v1",
        "Delete_rows_compressed_v1",
    ] {
        assert!(
            kinds.contains(want),
            "the binlog holds {want} events: {kinds:?}"
        );
    }
}

/// Runs [`cases`] through a producer on `db`; returns the database.
async fn cases_through(db: &MariaDb) -> String {
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    let topic = unique("product_updates");
    let state = tempfile::tempdir().unwrap();
    // the server's own zone is not UTC either
    db.exec("", "SET GLOBAL time_zone = '+02:00'").await;
    let producer = InProcess::start_streaming(producer_config(
        db,
        &shop,
        broker,
        &topic,
        &state.path().join("rtis.sqlite"),
    ))
    .await;

    let cases = cases();
    let mut expected = 0;
    for c in &cases {
        db.exec(&shop, c.sql).await;
        expected += c.expect.len();
    }
    let lines = drain_topic(
        &broker.bootstrap(),
        &topic,
        expected as i64,
        Duration::from_secs(60),
    )
    .await;
    producer.stop().await.expect("producer stops cleanly");

    // every record of every case, in order per key, nothing else
    let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for l in &lines {
        by_key
            .entry(l["key"]["id"].as_str().unwrap().to_string())
            .or_default()
            .push(l);
    }
    for c in &cases {
        let mut per_key: BTreeMap<&str, Vec<&(&str, &str, Value, Value)>> = BTreeMap::new();
        for e in &c.expect {
            per_key.entry(e.1).or_default().push(e);
        }
        for (key, exp) in per_key {
            let got = by_key.remove(key).unwrap_or_default();
            assert_eq!(
                got.len(),
                exp.len(),
                "case {:?} key {key}: expected {} records, got {got:#?}",
                c.name,
                exp.len()
            );
            let partition = &got[0]["partition"];
            for (g, (op, _, before, after)) in got.iter().zip(exp) {
                assert_eq!(g["op"], *op, "case {:?}: {g}", c.name);
                assert_eq!(
                    &g["partition"], partition,
                    "case {:?}: one key, one partition",
                    c.name
                );
                if *op != "tombstone" {
                    assert!(
                        subset(before, &g["before"]),
                        "case {:?}: before {before} ⊄ {}",
                        c.name,
                        g["before"]
                    );
                    assert!(
                        subset(after, &g["after"]),
                        "case {:?}: after {after} ⊄ {}",
                        c.name,
                        g["after"]
                    );
                    assert_eq!(g["source"]["snapshot"], false);
                    assert_eq!(g["source"]["table"], "product");
                    assert!(
                        g["source"]["gtid"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("0-")),
                        "MariaDB GTID recorded: {g}"
                    );
                }
            }
        }
    }
    assert!(by_key.is_empty(), "unexpected records: {by_key:#?}");
    let partitions: std::collections::HashSet<_> =
        lines.iter().map(|l| l["partition"].as_i64()).collect();
    assert!(partitions.len() > 1, "keys spread over partitions");
    // the fold of the records equals the table
    assert_eq!(fold(&lines), table_state(db, &shop).await);
    shop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_text_and_schema_changes_while_streaming() {
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    db.exec(
        &shop,
        "ALTER TABLE product MODIFY name VARCHAR(255) CHARACTER SET latin1 NOT NULL",
    )
    .await;
    let topic = unique("latin1");
    let state = tempfile::tempdir().unwrap();
    let producer = InProcess::start_streaming(producer_config(
        &db,
        &shop,
        broker,
        &topic,
        &state.path().join("rtis.sqlite"),
    ))
    .await;
    // the client sends utf8mb4; the server stores cp1252 bytes (é = E9, € = 80) in the latin1 column
    db.exec(
        &shop,
        "INSERT INTO product (id, name, price) VALUES (1, 'Café €5 Œuvre', 1.00)",
    )
    .await;
    // the table gains a column while streaming: older records keep their schema, newer ones the new
    db.exec(&shop, "ALTER TABLE product ADD COLUMN stock INT NULL")
        .await;
    db.exec(&shop, "INSERT INTO product (id, name, price, stock) VALUES (2, 'après', 2.00, 7); UPDATE product SET price = 3.00 WHERE id = 1").await;
    let lines = drain_topic(&broker.bootstrap(), &topic, 3, Duration::from_secs(60)).await;
    producer.stop().await.unwrap();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let by_id = |id: &str, op: &str| {
        lines
            .iter()
            .find(|l| l["key"]["id"] == id && l["op"] == op)
            .unwrap()
            .clone()
    };
    let c1 = by_id("1", "c");
    assert_eq!(c1["after"]["name"], "Café €5 Œuvre");
    assert!(
        c1["after"].get("stock").is_none(),
        "written before the ALTER: old shape {c1}"
    );
    let c2 = by_id("2", "c");
    assert_eq!(c2["after"]["name"], "après");
    assert_eq!(c2["after"]["stock"], 7);
    let u1 = by_id("1", "u");
    assert_eq!(u1["before"]["stock"], Value::Null);
    assert_eq!(u1["after"]["price"], "3.00");
    assert!(u1["after"].as_object().unwrap().contains_key("stock"));
}

/// Changes the binlog holds without row events for the captured table stop the producer naming
/// the statement and position, never a silent skip: statement-format DML, TRUNCATE, and a
/// two-phase XA transaction (its outcome comes later). XA ... ONE PHASE is an ordinary commit, and
/// a two-phase XA transaction on another table only moves the position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_without_row_events_stop_naming_the_statement() {
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    db.exec(&shop, "CREATE TABLE other (id INT PRIMARY KEY)")
        .await;
    let state = tempfile::tempdir().unwrap();
    let start = |n: &str| {
        let mut cfg = producer_config(
            &db,
            &shop,
            broker,
            &unique("norows"),
            &state.path().join(format!("{n}.sqlite")),
        );
        cfg.snapshot = rtis::config::SnapshotMode::Never;
        cfg
    };

    let cfg = start("xa");
    let topic = cfg.topic.clone();
    let p = InProcess::start_streaming(cfg).await;
    db.exec(
        &shop,
        "XA START 'o'; INSERT INTO other VALUES (1); XA END 'o'; XA PREPARE 'o'; XA COMMIT 'o';
         XA START 'one'; INSERT INTO product (id, name, price) VALUES (1, 'one phase', 1.00); XA END 'one'; XA COMMIT 'one' ONE PHASE;
         INSERT INTO product (id, name, price) VALUES (2, 'plain', 1.00)",
    )
    .await;
    let lines = drain_topic(&broker.bootstrap(), &topic, 2, Duration::from_secs(60)).await;
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["key"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{lines:#?}");
    assert!(ids.contains(&"1") && ids.contains(&"2"), "{lines:#?}");
    db.exec(
        &shop,
        "XA START 'two'; INSERT INTO product (id, name, price) VALUES (3, 'prepared', 1.00); XA END 'two'; XA PREPARE 'two'; XA ROLLBACK 'two'",
    )
    .await;
    let err = p.failure().await;
    assert!(
        err.contains("two-phase XA transaction") && err.contains("`product`"),
        "{err}"
    );
    assert!(err.contains("mariadb-bin.0"), "names the position: {err}");
    assert_eq!(
        record_count(&broker.bootstrap(), &topic).await,
        2,
        "the prepared row is not emitted"
    );

    let p = InProcess::start_streaming(start("stmt")).await;
    db.exec(
        &shop,
        "SET SESSION binlog_format = 'STATEMENT'; INSERT INTO product (id, name, price) VALUES (4, 'as a statement', 1.00)",
    )
    .await;
    let err = p.failure().await;
    assert!(
        err.contains("logged as a statement")
            && err.contains("INSERT INTO product (id, name, price) VALUES (4"),
        "{err}"
    );

    let p = InProcess::start_streaming(start("truncate")).await;
    db.exec(&shop, "TRUNCATE TABLE product").await;
    let err = p.failure().await;
    assert!(err.contains("`TRUNCATE TABLE product` empties"), "{err}");
}
