//! Operability against the real services: the metrics endpoints (scraped during a run), the
//! `status` and `reset` commands of the binary, and the config file.
mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use mysql_async::prelude::*;

/// One plain HTTP GET; returns (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the sample `name` (with labels, exactly as printed) in an OpenMetrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

fn producer_bin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rtis-producer"))
        .args(args)
        .env("RUST_LOG", "off")
        .env_remove("RTIS_STATE")
        .output()
        .unwrap()
}

fn status_json(state: &Path) -> serde_json::Value {
    let out = producer_bin(&["status", "--json", "--state", state.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_during_a_run() {
    let db = MariaDb::start();
    let broker = Broker::start();
    let shop = db.create_shop().await;
    let topic = unique("metrics");
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cfg = producer_config(&db, &shop, &broker, &topic, &dir.path().join("rtis.sqlite"));
    cfg.metrics_addr = Some(addr.clone());
    // four rows for the initial snapshot
    db.exec(
        &shop,
        "INSERT INTO product (id, name, price) VALUES (101, 's1', 1), (102, 's2', 2), (103, 's3', 3), (104, 's4', 4)",
    )
    .await;
    let producer = InProcess::start_streaming(cfg).await;

    let (status, body) = http_get(&addr, "/nope");
    assert!(status.contains("404"), "{status} {body}");
    let mut c = db.conn(&shop).await;
    for i in 0..30 {
        c.query_drop(format!(
            "INSERT INTO product (id, name, category, price) VALUES ({}, 'm{i}', 'c', 1.50)",
            i + 1
        ))
        .await
        .unwrap();
    }
    c.query_drop("UPDATE product SET price = price + 1 WHERE id <= 10")
        .await
        .unwrap();
    c.query_drop("DELETE FROM product WHERE id <= 5")
        .await
        .unwrap();
    // every record acknowledged, then the heartbeat says the source has nothing newer
    let text = eventually(Duration::from_secs(60), "metrics after the writes", || {
        let addr = addr.clone();
        async move {
            let (status, text) = http_get(&addr, "/metrics");
            assert!(status.contains("200"), "{status}");
            let done = sample(&text, "rtis_events_total{table=\"product\",op=\"c\"}") == Some(30.0)
                && sample(&text, "rtis_events_total{table=\"product\",op=\"u\"}") == Some(10.0)
                && sample(&text, "rtis_events_total{table=\"product\",op=\"d\"}") == Some(5.0)
                && sample(
                    &text,
                    "rtis_events_total{table=\"product\",op=\"tombstone\"}",
                ) == Some(5.0)
                && sample(&text, "rtis_events_total{table=\"product\",op=\"r\"}") == Some(4.0)
                && sample(&text, "rtis_lag_milliseconds{table=\"product\"}") == Some(0.0);
            done.then_some(text)
        }
    })
    .await;
    assert_eq!(
        sample(&text, "rtis_records_in_flight{table=\"product\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rtis_reconnects_total{table=\"product\"}"),
        Some(0.0),
        "{text}"
    );
    let age = sample(&text, "rtis_checkpoint_age_seconds{table=\"product\"}").unwrap();
    assert!((0.0..60.0).contains(&age), "checkpoint age {age}");
    assert!(
        sample(&text, "rtis_checkpoint_binlog_pos{table=\"product\"}").unwrap() > 0.0,
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text: {text}");
    for gauge in ["rtis_snapshot_rows_done", "rtis_snapshot_rows_total"] {
        assert_eq!(
            sample(&text, &format!("{gauge}{{table=\"product\"}}")),
            Some(4.0),
            "{gauge}: {text}"
        );
    }

    // the broker stops acknowledging: the change waits in flight and the lag grows (it counts
    // from the commit time of the last acknowledged transaction, one-second resolution)
    broker.pause(true);
    c.query_drop("UPDATE product SET price = price + 1 WHERE id = 30")
        .await
        .unwrap();
    let paused = eventually(
        Duration::from_secs(8),
        "lag while the broker is paused",
        || {
            let addr = addr.clone();
            async move {
                let (_, text) = http_get(&addr, "/metrics");
                let lag = sample(&text, "rtis_lag_milliseconds{table=\"product\"}")?;
                let in_flight = sample(&text, "rtis_records_in_flight{table=\"product\"}")?;
                (lag >= 2000.0 && in_flight >= 1.0).then_some((lag, in_flight))
            }
        },
    )
    .await;
    broker.pause(false);
    eprintln!("paused broker: lag {} ms, {} in flight", paused.0, paused.1);
    eventually(
        Duration::from_secs(30),
        "lag back to 0 after the resume",
        || {
            let addr = addr.clone();
            async move {
                let (_, text) = http_get(&addr, "/metrics");
                (sample(&text, "rtis_lag_milliseconds{table=\"product\"}") == Some(0.0)
                    && sample(&text, "rtis_records_in_flight{table=\"product\"}") == Some(0.0)
                    && sample(&text, "rtis_events_total{table=\"product\",op=\"u\"}") == Some(11.0))
                .then_some(())
            }
        },
    )
    .await;

    // the consumer's endpoint
    let out = tempfile::tempdir().unwrap();
    let caddr = format!("127.0.0.1:{}", free_port());
    let mut ccfg = consumer_config(&broker.bootstrap(), &topic, &unique("g"), out.path());
    ccfg.metrics_addr = Some(caddr.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let consumer = tokio::spawn(rtis::consumer::run(ccfg, async move {
        let _ = rx.await;
    }));
    let total: f64 = record_count(&broker.bootstrap(), &topic).await as f64;
    assert_eq!(total, 55.0, "4 r + 30 c + 11 u + 5 d + 5 tombstones");
    let ctext = eventually(Duration::from_secs(60), "consumer metrics", || {
        let caddr = caddr.clone();
        async move {
            let (_, text) = http_get(&caddr, "/metrics");
            let written: f64 = (0..3)
                .filter_map(|p| {
                    sample(
                        &text,
                        &format!("rtis_consumer_records_written_total{{partition=\"{p}\"}}"),
                    )
                })
                .sum();
            let lag_zero = (0..3).all(|p| {
                sample(
                    &text,
                    &format!("rtis_consumer_lag_records{{partition=\"{p}\"}}"),
                ) == Some(0.0)
            });
            (written == total && lag_zero).then_some(text)
        }
    })
    .await;
    assert!(
        ctext.contains("rtis_consumer_dead_letters_total"),
        "{ctext}"
    );
    let _ = tx.send(());
    consumer.await.unwrap().unwrap();
    producer.stop().await.unwrap();

    // a taken port is a clear configuration error
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = listener.local_addr().unwrap().to_string();
    let mut cfg = producer_config(
        &db,
        &shop,
        &broker,
        &topic,
        &dir.path().join("other.sqlite"),
    );
    cfg.metrics_addr = Some(taken.clone());
    let err = rtis::pipeline::run(cfg, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--metrics-addr") && err.contains(&taken),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_reset_on_a_real_state_file() {
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    let topic = unique("status");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rtis.sqlite");
    let st = state.to_str().unwrap();

    let missing = producer_bin(&["status", "--state", "/nonexistent/rtis.sqlite"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no such file"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    let mut c = db.conn(&shop).await;
    c.query_drop("INSERT INTO product (id, name, price) VALUES (1, 'a', 1), (2, 'b', 2)")
        .await
        .unwrap();
    let producer =
        InProcess::start_streaming(producer_config(&db, &shop, broker, &topic, &state)).await;
    // three transactions, one GTID each
    let mut gtids = Vec::new();
    for (id, name) in [(3, "g1"), (4, "g2"), (5, "g3")] {
        c.query_drop(format!(
            "INSERT INTO product (id, name, price) VALUES ({id}, '{name}', 3)"
        ))
        .await
        .unwrap();
        let g: String = c.query_first("SELECT @@last_gtid").await.unwrap().unwrap();
        gtids.push(g);
    }
    records_at_least(&broker.bootstrap(), &topic, 5, Duration::from_secs(60)).await;

    // status while the producer runs (the file is locked by it)
    let running = eventually(
        Duration::from_secs(30),
        "status after the writes",
        || async {
            let j = status_json(&state);
            (j["gtid"].as_str() == Some(gtids[2].as_str())).then_some(j)
        },
    )
    .await;
    assert_eq!(running["producer_running"], true, "{running}");
    assert_eq!(running["phase"], "streaming", "{running}");
    assert!(
        running["binlog_file"].as_str().unwrap().contains("bin."),
        "{running}"
    );
    assert!(running["binlog_pos"].as_u64().unwrap() > 4, "{running}");
    assert!(running["written_at"].as_str().is_some(), "{running}");
    let text = producer_bin(&["status", "--state", st]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("producer:         running")
            && text.contains(&format!("gtid:             {}", gtids[2])),
        "{text}"
    );

    // reset is refused while it runs
    let refused = producer_bin(&["reset", "--state", st, "--snapshot"]);
    assert_eq!(refused.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("reset refused"), "{msg}");
    // and needs exactly one target
    let two = producer_bin(&[
        "reset",
        "--state",
        st,
        "--snapshot",
        "--to-position",
        "f.000001:4",
    ]);
    assert_eq!(two.status.code(), Some(2));
    producer.stop().await.unwrap();
    assert_eq!(status_json(&state)["producer_running"], false);

    // --to-gtid: resume after the first GTID; a fresh topic then holds exactly what followed
    let out = Command::new(env!("CARGO_BIN_EXE_rtis-producer"))
        .args(["reset", "--state", st, "--to-gtid", &gtids[0]])
        .env("RTIS_MYSQL_URL", db.url("rtis", &shop))
        .env("RTIS_MYSQL_PASSWORD", "rtis-pw")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = status_json(&state);
    assert_eq!(after["gtid"], gtids[0].as_str(), "{after}");
    let fresh = unique("status_fresh");
    let producer = InProcess::start(producer_config(&db, &shop, broker, &fresh, &state));
    let lines = drain_topic(&broker.bootstrap(), &fresh, 2, Duration::from_secs(60)).await;
    let mut names: Vec<&str> = lines
        .iter()
        .map(|l| l["after"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["g2", "g3"],
        "exactly the transactions after the GTID"
    );
    producer.stop().await.unwrap();

    // --snapshot: the next start takes a new snapshot of all 5 rows
    let out = producer_bin(&["reset", "--state", st, "--snapshot"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status_json(&state)["phase"], "none");
    let snap = unique("status_snap");
    let producer = InProcess::start(producer_config(&db, &shop, broker, &snap, &state));
    let lines = drain_topic(&broker.bootstrap(), &snap, 5, Duration::from_secs(60)).await;
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|l| l["op"] == "r"), "{lines:?}");
    producer.stop().await.unwrap();

    // --to-position: written as given
    let pos = format!("{}:4", after["binlog_file"].as_str().unwrap());
    let out = producer_bin(&["reset", "--state", st, "--to-position", &pos]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = status_json(&state);
    assert_eq!(
        format!("{}:{}", j["binlog_file"].as_str().unwrap(), j["binlog_pos"]),
        pos
    );
    let bad = producer_bin(&["reset", "--state", st, "--to-position", "nocolon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("FILE:POS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_drives_the_binary() {
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    let topic = unique("cfgfile");
    let dir = tempfile::tempdir().unwrap();
    let mut c = db.conn(&shop).await;
    c.query_drop(
        "INSERT INTO product (id, name, price) VALUES (1, 'x', 1), (2, 'y', 2), (3, 'z', 3)",
    )
    .await
    .unwrap();
    let file = dir.path().join("rtis.toml");
    std::fs::write(
        &file,
        format!(
            "mysql-url = \"{}\"\nbrokers = \"{}\"\ntopic = \"{topic}_from_file\"\npartitions = 3\n\
             state = \"{}\"\nsnapshot = \"snapshot-only\"\nserver_id = 4242\nkafka-option = [\"linger.ms=1\"]\n",
            db.url("rtis", &shop),
            broker.bootstrap(),
            dir.path().join("rtis.sqlite").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rtis-producer"))
        .args(["--config", file.to_str().unwrap()])
        .env("RTIS_MYSQL_PASSWORD", "rtis-pw")
        // an env var beats the file
        .env("RTIS_TOPIC", &topic)
        .env("RUST_LOG", "warn")
        .env_remove("RTIS_STATE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = drain_topic(&broker.bootstrap(), &topic, 3, Duration::from_secs(60)).await;
    assert_eq!(lines.len(), 3);
    assert_eq!(
        rtis::kafka::partition_count(&broker.bootstrap(), &[], &format!("{topic}_from_file"))
            .unwrap(),
        None,
        "the file's topic was overridden by RTIS_TOPIC"
    );

    // an unknown key: exit 2, the file and the key named, nothing started
    std::fs::write(&file, "mysql-url = \"mysql://a@b/c\"\nbroker = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rtis-producer"))
        .env("RTIS_CONFIG", &file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rtis.toml") && err.contains("unknown key `broker`"),
        "{err}"
    );
}

/// Folds change lines into the final `after` per key (any key shape; deletes remove the key).
fn fold_any(lines: &[serde_json::Value]) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut state = std::collections::BTreeMap::new();
    for l in lines {
        let key = l["key"].to_string();
        match l["op"].as_str().unwrap() {
            "c" | "u" | "r" => {
                state.insert(key, l["after"].clone());
            }
            _ => {
                state.remove(&key);
            }
        }
    }
    state
}

/// Every record of a topic once: no (source position, op) twice (a key change is a delete and
/// a create at one position).
fn assert_no_duplicates(lines: &[serde_json::Value]) {
    let mut seen = std::collections::HashSet::new();
    for l in lines.iter().filter(|l| l["op"] != "tombstone") {
        let pos = (
            l["source"]["file"].to_string(),
            l["source"]["pos"].as_i64(),
            l["source"]["row"].as_i64(),
            l["op"].to_string(),
        );
        assert!(seen.insert(pos.clone()), "duplicate record at {pos:?}: {l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_tables_each_to_its_own_topic_with_composite_keys() {
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    db.exec(
        &shop,
        "CREATE TABLE order_line (
           order_id INT UNSIGNED NOT NULL, line_no SMALLINT NOT NULL, sku VARCHAR(20) NOT NULL,
           qty INT NOT NULL,
           last_updated TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
           PRIMARY KEY (order_id, line_no));",
    )
    .await;
    db.exec(
        &shop,
        &format!("GRANT SELECT ON {shop}.order_line TO 'rtis'@'%'"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let suffix = unique("mt");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cfg = producer_config(&db, &shop, broker, "", &dir.path().join("rtis.sqlite"));
    cfg.table = "product, order_line".into();
    cfg.topic = format!("{{table}}_{suffix}");
    cfg.snapshot = rtis::config::SnapshotMode::Never; // composite keys stream; the snapshot pages by one integer key
    cfg.metrics_addr = Some(addr.clone());
    let (product_topic, line_topic) = (format!("product_{suffix}"), format!("order_line_{suffix}"));
    let states = [
        dir.path().join("rtis.product.sqlite"),
        dir.path().join("rtis.order_line.sqlite"),
    ];
    let start = |cfg: rtis::config::ProducerConfig| async {
        let p = InProcess::start(cfg);
        for s in &states {
            streaming(s).await;
        }
        p
    };
    let producer = start(cfg.clone()).await;
    let mut c = db.conn(&shop).await;
    for sql in [
        "INSERT INTO product (id, name, price) VALUES (1, 'a', 1), (2, 'b', 2)",
        "INSERT INTO order_line (order_id, line_no, sku, qty) VALUES (10, 1, 'x', 1), (10, 2, 'y', 2), (11, 1, 'z', 3)",
        "UPDATE order_line SET qty = qty + 5 WHERE order_id = 10",
        "DELETE FROM order_line WHERE order_id = 11",
        // one transaction over both tables
        "START TRANSACTION; UPDATE product SET price = 9 WHERE id = 1; \
         INSERT INTO order_line (order_id, line_no, sku, qty) VALUES (12, 1, 'w', 1); COMMIT",
        "UPDATE order_line SET line_no = 3 WHERE order_id = 10 AND line_no = 2",
    ] {
        c.query_drop(sql).await.unwrap();
    }
    // product: 2 c + 1 u; order_line: 3 c + 2 u + d + tombstone + c + (key change: d + tombstone + c)
    let lines = drain_topic(
        &broker.bootstrap(),
        &product_topic,
        3,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(fold(&lines), table_state(&db, &shop).await);
    let order = drain_topic(
        &broker.bootstrap(),
        &line_topic,
        11,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(order.len(), 11, "{order:#?}");
    let keys: std::collections::BTreeSet<String> =
        order.iter().map(|l| l["key"].to_string()).collect();
    assert!(
        keys.contains(r#"{"line_no":3,"order_id":10}"#)
            || keys.contains(r#"{"order_id":10,"line_no":3}"#),
        "composite keys as Avro records of the key columns: {keys:?}"
    );
    let rows: Vec<(u32, i16, String, i32)> = c
        .query("SELECT order_id, line_no, sku, qty FROM order_line")
        .await
        .unwrap();
    let folded = fold_any(&order);
    assert_eq!(folded.len(), rows.len(), "{folded:#?}");
    for (o, l, sku, qty) in &rows {
        let after = folded
            .values()
            .find(|a| a["order_id"] == *o && a["line_no"] == *l)
            .unwrap_or_else(|| panic!("({o},{l}) missing in {folded:#?}"));
        assert_eq!(
            (
                after["sku"].as_str().unwrap(),
                after["qty"].as_i64().unwrap()
            ),
            (sku.as_str(), *qty as i64)
        );
    }
    let (_, text) = http_get(&addr, "/metrics");
    assert_eq!(
        sample(&text, "rtis_events_total{table=\"order_line\",op=\"c\"}"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rtis_events_total{table=\"product\",op=\"u\"}"),
        Some(1.0),
        "{text}"
    );
    producer.stop().await.unwrap();

    // while stopped: more changes; after the restart each table resumes from its own checkpoint
    c.query_drop("UPDATE product SET price = 3 WHERE id = 2")
        .await
        .unwrap();
    c.query_drop("UPDATE order_line SET qty = 0 WHERE order_id = 12")
        .await
        .unwrap();
    let producer = start(cfg.clone()).await;
    let lines = drain_topic(
        &broker.bootstrap(),
        &product_topic,
        4,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(lines.len(), 4);
    assert_no_duplicates(&lines);
    assert_eq!(fold(&lines), table_state(&db, &shop).await);
    let order = drain_topic(
        &broker.bootstrap(),
        &line_topic,
        12,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(order.len(), 12);
    assert_no_duplicates(&order);
    producer.stop().await.unwrap();

    // one bad table stops them all, and the error names it
    let mut bad = cfg.clone();
    bad.table = "product,nope".into();
    bad.state = dir.path().join("bad-{table}.sqlite");
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        rtis::pipeline::run(bad, std::future::pending()),
    )
    .await
    .unwrap()
    .unwrap_err();
    let msg = rtis::error::chain(&err);
    assert!(msg.contains("nope"), "{msg}");
}
