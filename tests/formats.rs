//! `--format confluent` against a real Schema Registry (Apicurio, Confluent API, BACKWARD
//! compatibility) and Apache Kafka: records read by rtis-consumer and by the stock Python
//! `AvroDeserializer` (examples/confluent_consumer.py), an `ALTER TABLE` the registry accepts
//! and one it refuses; and `--format json`, whose values read as the Avro format's do.
mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::registry::SchemaRegistry;
use common::*;
use serde_json::Value;

/// Reads `topic` through rtis-consumer (with the registry, when given) into sorted lines.
async fn consume(bootstrap: &str, topic: &str, registry: Option<&str>, total: i64) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = consumer_config(bootstrap, topic, &unique("drain"), dir.path());
    cfg.registry.schema_registry_url = registry.map(str::to_string);
    consume_lines(cfg, total, Duration::from_secs(60)).await
}

/// Producer settings writing `--format confluent` through `registry`.
fn confluent_config(
    db: &MariaDb,
    shop: &str,
    broker: &Broker,
    topic: &str,
    state: &std::path::Path,
    registry: &str,
) -> rtis::config::ProducerConfig {
    let mut cfg = producer_config(db, shop, broker, topic, state);
    cfg.format = rtis::config::Format::Confluent;
    cfg.registry.schema_registry_url = Some(registry.to_string());
    cfg
}

/// Runs the Python example (the stock `AvroDeserializer`) until it printed `total` records.
async fn python_example(bootstrap: &str, registry: &str, topic: &str, total: i64) -> Vec<Value> {
    let (bootstrap, registry, topic) = (
        bootstrap.to_string(),
        registry.to_string(),
        topic.to_string(),
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/confluent_consumer.py"
            ))
            .args(["--bootstrap", &bootstrap, "--registry", &registry])
            .args(["--topic", &topic, "--group", &unique("py")])
            .args(["--max-records", &total.to_string(), "--timeout", "60"])
            .output()
            .expect("python3 (install confluent-kafka with .ci/install.sh)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the Python example failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let mut lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    lines.sort_by_key(|l| (l["partition"].as_i64(), l["offset"].as_i64()));
    lines
}

/// The five columns [`table_state`] has, of each folded row.
fn five_columns(state: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    state
        .into_iter()
        .map(|(k, v)| {
            let keep = ["id", "name", "category", "price", "last_updated"];
            let row: serde_json::Map<String, Value> = keep
                .iter()
                .map(|c| (c.to_string(), v[*c].clone()))
                .collect();
            (k, Value::Object(row))
        })
        .collect()
}

fn ops(lines: &[Value]) -> Vec<String> {
    let mut ops: Vec<String> = lines
        .iter()
        .map(|l| l["op"].as_str().unwrap().to_string())
        .collect();
    ops.sort();
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_records_are_read_by_the_stock_python_deserializer_and_a_refused_alter_stops_the_producer(
) {
    let registry = tokio::task::spawn_blocking(SchemaRegistry::shared)
        .await
        .unwrap();
    let db = MariaDb::start();
    let shop = db.create_shop().await;
    let broker = Broker::shared();
    let topic = unique("confluent");
    let dir = tempfile::tempdir().unwrap();
    // read by the snapshot (op r)
    db.exec(
        &shop,
        "INSERT INTO product (id, name, category, price) VALUES (1, 'Lamp', 'home', 19.99), (2, 'Desk', NULL, 120.00)",
    )
    .await;
    let cfg = confluent_config(
        &db,
        &shop,
        broker,
        &topic,
        &dir.path().join("s.sqlite"),
        &registry.url,
    );
    let producer = InProcess::start_streaming(cfg).await;
    // read from the binlog (c, u, d + tombstone)
    db.exec(
        &shop,
        "INSERT INTO product (id, name, category, price) VALUES (3, 'Mug', 'kitchen', 4.50);
         UPDATE product SET price = 21.50 WHERE id = 1;
         DELETE FROM product WHERE id = 2",
    )
    .await;
    // a change the registry accepts under BACKWARD: a nullable column (Avro default null)
    db.exec(&shop, "ALTER TABLE product ADD COLUMN stock INT NULL")
        .await;
    db.exec(
        &shop,
        "INSERT INTO product (id, name, category, price, stock) VALUES (4, 'Chair', 'office', 45.00, 7)",
    )
    .await;
    let total = 7;
    assert_eq!(
        records_at_least(&broker.bootstrap(), &topic, total, Duration::from_secs(60)).await,
        total
    );
    let value_subject = format!("{topic}-value");
    assert_eq!(registry.versions(&value_subject), vec![1, 2]);
    assert_eq!(registry.versions(&format!("{topic}-key")), vec![1]);

    let py = python_example(&broker.bootstrap(), &registry.url, &topic, total).await;
    assert_eq!(ops(&py), ["c", "c", "d", "r", "r", "tombstone", "u"]);
    let want = table_state(&db, &shop).await;
    assert_eq!(five_columns(fold(&py)), want, "Python's view = the table");
    let chair = py.iter().find(|l| l["key"]["id"] == "4").unwrap();
    assert_eq!(chair["after"]["stock"], 7, "{chair}");
    assert_eq!(chair["after"]["price"], "45.00");
    let lamp_r = py
        .iter()
        .find(|l| l["key"]["id"] == "1" && l["op"] == "r")
        .unwrap();
    assert_eq!(lamp_r["source"]["snapshot"], true);
    assert!(
        lamp_r["after"].get("stock").is_none(),
        "written before the ALTER: {lamp_r}"
    );

    // rtis-consumer reads the same records, line for line the same as the stock deserializer
    let ours = consume(&broker.bootstrap(), &topic, Some(&registry.url), total).await;
    assert_eq!(ours, py);

    // a change the registry refuses: a NOT NULL column (no Avro default: the binlog does not
    // carry column defaults)
    db.exec(
        &shop,
        "ALTER TABLE product ADD COLUMN sku VARCHAR(20) NOT NULL DEFAULT 'none'",
    )
    .await;
    db.exec(&shop, "UPDATE product SET price = 50.00 WHERE id = 4")
        .await;
    let err = producer.failure().await;
    for part in [
        value_subject.as_str(),
        "refused the writer schema",
        "error_code 409",
        "column sku added",
        "Nothing of the new shape was sent",
        "binlog at ",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    assert_eq!(registry.versions(&value_subject), vec![1, 2]);
    assert_eq!(record_count(&broker.bootstrap(), &topic).await, total);
    assert_eq!(
        five_columns(fold(&ours)),
        want,
        "what was sent is the table before it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confluent_record_without_a_registry_url_stops_the_consumer_naming_the_setting() {
    let registry = tokio::task::spawn_blocking(SchemaRegistry::shared)
        .await
        .unwrap();
    let db = MariaDb::start();
    let shop = db.create_shop().await;
    let broker = Broker::shared();
    let topic = unique("confluent_nourl");
    let dir = tempfile::tempdir().unwrap();
    db.exec(
        &shop,
        "INSERT INTO product (id, name, price) VALUES (1, 'Lamp', 19.99)",
    )
    .await;
    let mut cfg = confluent_config(
        &db,
        &shop,
        broker,
        &topic,
        &dir.path().join("s.sqlite"),
        &registry.url,
    );
    cfg.snapshot = rtis::config::SnapshotMode::SnapshotOnly;
    InProcess::start(cfg).handle.await.unwrap().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ccfg = consumer_config(&broker.bootstrap(), &topic, &unique("g"), out.path());
    let res = tokio::time::timeout(
        Duration::from_secs(60),
        rtis::consumer::run(ccfg, std::future::pending()),
    )
    .await
    .expect("the consumer stops by itself");
    let err = res.unwrap_err().to_string();
    assert!(err.contains("--schema-registry-url"), "{err}");
    assert!(err.contains("schema id"), "{err}");
    assert!(
        read_lines(out.path()).is_empty(),
        "nothing written, nothing dead-lettered"
    );

    // a URL that is not the registry's Confluent API (Apicurio's root) stops it too, instead
    // of dead-lettering every record
    let root = registry
        .url
        .trim_end_matches("/apis/ccompat/v7")
        .to_string();
    let mut ccfg = consumer_config(&broker.bootstrap(), &topic, &unique("g"), out.path());
    ccfg.registry.schema_registry_url = Some(root);
    let res = tokio::time::timeout(
        Duration::from_secs(60),
        rtis::consumer::run(ccfg, std::future::pending()),
    )
    .await
    .expect("the consumer stops by itself");
    let err = res.unwrap_err().to_string();
    assert!(err.contains("check --schema-registry-url"), "{err}");
    assert!(
        read_lines(out.path()).is_empty(),
        "nothing written, nothing dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_over_tls_is_trusted_through_its_ca_file_and_refused_without_it() {
    let registry = tokio::task::spawn_blocking(SchemaRegistry::start_tls)
        .await
        .unwrap();
    let https = registry.tls_url.clone().unwrap();
    let db = MariaDb::start();
    let shop = db.create_shop().await;
    let broker = Broker::shared();
    let dir = tempfile::tempdir().unwrap();
    db.exec(
        &shop,
        "INSERT INTO product (id, name, price) VALUES (1, 'Lamp', 19.99)",
    )
    .await;
    // without the CA (the system's roots): a definite error at start, nothing written
    let topic = unique("confluent_tls_refused");
    let cfg = confluent_config(
        &db,
        &shop,
        broker,
        &topic,
        &dir.path().join("a.sqlite"),
        &https,
    );
    let err = InProcess::start(cfg).failure().await;
    assert!(err.contains("--schema-registry-url"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // with it: the snapshot row is registered and written, and read back over TLS too
    let topic = unique("confluent_tls");
    let mut cfg = confluent_config(
        &db,
        &shop,
        broker,
        &topic,
        &dir.path().join("b.sqlite"),
        &https,
    );
    cfg.registry.schema_registry_ca = Some(registry.ca());
    cfg.snapshot = rtis::config::SnapshotMode::SnapshotOnly;
    InProcess::start(cfg).handle.await.unwrap().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut ccfg = consumer_config(&broker.bootstrap(), &topic, &unique("g"), out.path());
    ccfg.registry.schema_registry_url = Some(https);
    ccfg.registry.schema_registry_ca = Some(registry.ca());
    let lines = consume_lines(ccfg, 1, Duration::from_secs(60)).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["after"]["name"], "Lamp");
    assert_eq!(registry.versions(&format!("{topic}-value")), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswering_registry_holds_the_new_shape_back_and_is_retried_until_it_answers() {
    // a registry of its own: this test freezes it
    let registry = tokio::task::spawn_blocking(SchemaRegistry::start)
        .await
        .unwrap();
    let db = MariaDb::start();
    let shop = db.create_shop().await;
    let broker = Broker::shared();
    let topic = unique("confluent_outage");
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cfg = confluent_config(
        &db,
        &shop,
        broker,
        &topic,
        &dir.path().join("s.sqlite"),
        &registry.url,
    );
    cfg.metrics_addr = Some(addr.clone());
    let producer = InProcess::start_streaming(cfg).await;
    db.exec(
        &shop,
        "INSERT INTO product (id, name, price) VALUES (1, 'Lamp', 19.99)",
    )
    .await;
    let bs = broker.bootstrap();
    records_at_least(&bs, &topic, 1, Duration::from_secs(60)).await;

    registry.pause(true);
    // a new shape needs a new registration, which cannot happen now
    db.exec(&shop, "ALTER TABLE product ADD COLUMN stock INT NULL")
        .await;
    db.exec(
        &shop,
        "INSERT INTO product (id, name, price, stock) VALUES (2, 'Desk', 120.00, 5)",
    )
    .await;
    let reconnects = "rtis_reconnects_total{table=\"product\"}";
    eventually(
        Duration::from_secs(90),
        "a session failed on the registry and is retried",
        || async { (metric(&addr, reconnects).unwrap_or(0.0) >= 1.0).then_some(()) },
    )
    .await;
    assert!(
        !producer.handle.is_finished(),
        "an outage does not stop the producer"
    );
    assert_eq!(
        record_count(&bs, &topic).await,
        1,
        "nothing sent without its schema"
    );

    registry.pause(false);
    let lines = consume(&bs, &topic, Some(&registry.url), 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let desk = lines.iter().find(|l| l["key"]["id"] == "2").unwrap();
    assert_eq!(desk["after"]["stock"], 5, "{desk}");
    assert_eq!(registry.versions(&format!("{topic}-value")), vec![1, 2]);
    producer.stop().await.unwrap();
}

/// The committed records of `topic` as raw (key, value) bytes.
async fn raw_records(
    bootstrap: &str,
    topic: &str,
    total: usize,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let (bs, t) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message;
        let n = rtis::kafka::partition_count(&bs, &[], &t).unwrap().unwrap();
        let c: BaseConsumer = rtis::config::kafka_client_config(&bs, &[])
            .unwrap()
            .set("group.id", unique("raw"))
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..n {
            tpl.add_partition_offset(&t, p, rdkafka::Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        while out.len() < total {
            assert!(
                std::time::Instant::now() < deadline,
                "read {} of {total}",
                out.len()
            );
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                out.push((m.key().unwrap().to_vec(), m.payload().map(<[u8]>::to_vec)));
            }
        }
        out
    })
    .await
    .unwrap()
}

/// A consumer line without what differs between two connectors of the same changes (where the
/// record landed, when it was read, the connector's name, when its snapshot ran).
fn change_of(line: &Value) -> String {
    let mut l = line.clone();
    let o = l.as_object_mut().unwrap();
    for k in ["partition", "offset", "ts_ms"] {
        o.remove(k);
    }
    if let Some(src) = o.get_mut("source").and_then(Value::as_object_mut) {
        src.remove("connector");
        if src["snapshot"] == true {
            src.remove("ts_ms");
        }
    }
    l.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_records_read_exactly_as_the_avro_records_of_the_same_changes() {
    let db = MariaDb::start();
    let shop = db.create_shop().await;
    let broker = Broker::shared();
    let dir = tempfile::tempdir().unwrap();
    db.exec(
        &shop,
        "INSERT INTO product (id, name, category, price, last_updated) VALUES
           (1, 'Café ☕', 'home', -0.01, '2026-01-02 03:04:05.678901'),
           (18446744073709551615, 'max key', NULL, 99999999.99, '1970-01-01 00:00:01')",
    )
    .await;
    let (avro_topic, json_topic) = (unique("as_avro"), unique("as_json"));
    let mut producers = Vec::new();
    for (topic, format) in [
        (&avro_topic, rtis::config::Format::Avro),
        (&json_topic, rtis::config::Format::Json),
    ] {
        let state = dir.path().join(format!("{topic}.sqlite"));
        let mut cfg = producer_config(&db, &shop, broker, topic, &state);
        cfg.format = format;
        producers.push(InProcess::start_streaming(cfg).await);
    }
    db.exec(
        &shop,
        "INSERT INTO product (id, name, category, price) VALUES (3, 'Mug', 'kitchen', 4.50);
         UPDATE product SET price = 21.50, name = 'Lamp' WHERE id = 1;
         UPDATE product SET id = 4 WHERE id = 3;
         DELETE FROM product WHERE id = 18446744073709551615",
    )
    .await;
    // 2 r, c, u, key change (d + tombstone + c), d + tombstone
    let total = 9;
    let bs = broker.bootstrap();
    let avro = consume(&bs, &avro_topic, None, total).await;
    let json = consume(&bs, &json_topic, None, total).await;
    assert_eq!(avro.len() as i64, total);
    let mut a: Vec<String> = avro.iter().map(change_of).collect();
    let mut j: Vec<String> = json.iter().map(change_of).collect();
    a.sort();
    j.sort();
    assert_eq!(j, a, "the same changes, rendered alike");
    assert_eq!(five_columns(fold(&json)), table_state(&db, &shop).await);

    // on the wire: plain JSON objects, no header, no schema
    let raw = raw_records(&bs, &json_topic, total as usize).await;
    let (_, value) = raw
        .iter()
        .find(|(k, _)| k.as_slice() == br#"{"id":"4"}"#)
        .expect("the key of id 4, as JSON");
    let value: Value = serde_json::from_slice(value.as_ref().unwrap()).unwrap();
    assert_eq!(value["op"], "c");
    assert_eq!(value["after"]["name"], "Mug");
    assert_eq!(value["after"]["price"], "4.50");
    assert_eq!(value["before"], Value::Null);
    assert!(raw
        .iter()
        .all(|(k, v)| k[0] == b'{' && v.as_ref().is_none_or(|v| v[0] == b'{')));
    for p in producers {
        p.stop().await.unwrap();
    }
}
