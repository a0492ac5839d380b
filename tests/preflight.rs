//! Bad input: each failure is a clear error naming the setting, expected and found; nothing is
//! written to the checkpoint.
mod common;

use std::time::Duration;

use common::*;

async fn run_err(cfg: rtis::config::ProducerConfig) -> String {
    let state = cfg.state.clone();
    let res = tokio::time::timeout(
        Duration::from_secs(60),
        rtis::pipeline::run(cfg, std::future::pending()),
    )
    .await
    .expect("preflight must fail fast, not hang");
    let err = res.expect_err("preflight must fail");
    assert!(
        !state.exists(),
        "nothing may be written to the checkpoint on a failed preflight: {err}"
    );
    rtis::error::chain(&err)
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "expected {p:?} in: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_gets_an_actionable_error() {
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pf");
    let base = || producer_config(&db, &shop, broker, &topic, &dir.path().join("rtis.sqlite"));

    // wrong password
    let mut c = base();
    c.mysql_password = Some("wrong".into());
    assert_has(&run_err(c).await, &["access denied", "rtis", "password"]);

    // wrong port
    let mut c = base();
    c.mysql_url = format!("mysql://rtis@127.0.0.1:{}/{shop}", free_port());
    assert_has(&run_err(c).await, &["check --mysql-url host and port"]);

    // unknown host
    let mut c = base();
    c.mysql_url = format!("mysql://rtis@no-such-host.invalid:3306/{shop}");
    assert_has(
        &run_err(c).await,
        &[
            "no-such-host.invalid:3306",
            "check --mysql-url host and port",
        ],
    );

    // malformed URL
    let mut c = base();
    c.mysql_url = "postgres://nope".into();
    assert_has(&run_err(c).await, &["--mysql-url", "expected mysql://"]);

    // missing table
    let mut c = base();
    c.table = "nope".into();
    assert_has(
        &run_err(c).await,
        &["--table", "nope", "found no such table"],
    );

    // table without a primary key
    db.exec(&shop, "CREATE TABLE nokey (id INT, last_updated TIMESTAMP(6)); GRANT SELECT ON nokey TO 'rtis'@'%'").await;
    let mut c = base();
    c.table = "nokey".into();
    assert_has(&run_err(c).await, &["expected a PRIMARY KEY", "found none"]);

    // missing timestamp column
    let mut c = base();
    c.timestamp_column = "changed_at".into();
    assert_has(
        &run_err(c).await,
        &["--timestamp-column", "changed_at", "last_updated"],
    );

    // server settings, changed at runtime (global, dynamic)
    for (var, bad, expected) in [
        (
            "binlog_format",
            "STATEMENT",
            "binlog_format: expected ROW, found STATEMENT",
        ),
        (
            "binlog_format",
            "MIXED",
            "binlog_format: expected ROW, found MIXED",
        ),
        (
            "binlog_row_image",
            "MINIMAL",
            "binlog_row_image: expected FULL, found MINIMAL",
        ),
        (
            "binlog_row_metadata",
            "MINIMAL",
            "binlog_row_metadata: expected FULL, found MINIMAL",
        ),
    ] {
        db.exec("", &format!("SET GLOBAL {var} = '{bad}'")).await;
        let msg = run_err(base()).await;
        db.exec("", &format!("SET GLOBAL {var} = DEFAULT")).await;
        db.exec("", "SET GLOBAL binlog_format = 'ROW'; SET GLOBAL binlog_row_image = 'FULL'; SET GLOBAL binlog_row_metadata = 'FULL'").await;
        assert_has(&msg, &[expected]);
    }

    // missing grants
    db.exec(&shop, &format!("CREATE USER 'weak'@'%' IDENTIFIED BY 'rtis-pw'; GRANT SELECT ON {shop}.product TO 'weak'@'%'")).await;
    let mut c = base();
    c.mysql_url = db.url("weak", &shop);
    assert_has(&run_err(c).await, &["grants: expected REPLICATION SLAVE"]);
    db.exec(&shop, "GRANT REPLICATION SLAVE ON *.* TO 'weak'@'%'")
        .await;
    let mut c = base();
    c.mysql_url = db.url("weak", &shop);
    assert_has(&run_err(c).await, &["REPLICATION CLIENT"]);

    // unreachable broker
    let mut c = base();
    c.brokers = format!("127.0.0.1:{}", free_port());
    assert_has(&run_err(c).await, &["--brokers", "cannot reach"]);

    // missing topic, no --partitions
    let mut c = base();
    c.partitions = None;
    assert_has(
        &run_err(c).await,
        &["--topic", "found none", "--partitions"],
    );

    // malformed flag values
    let mut c = base();
    c.kafka_options = vec!["acks".into()];
    assert_has(&run_err(c).await, &["--kafka-option", "KEY=VALUE"]);
    let mut c = base();
    c.partitions = Some(0);
    assert_has(&run_err(c).await, &["--partitions", "found 0"]);

    // password never in errors
    let mut c = base();
    c.mysql_password = Some("s3cret-pw".into());
    let msg = run_err(c).await;
    assert!(!msg.contains("s3cret-pw"), "password leaked: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_off_is_refused() {
    let db = MariaDb::start_with(&["--skip-log-bin"]);
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = producer_config(
        &db,
        &shop,
        broker,
        &unique("pf"),
        &dir.path().join("rtis.sqlite"),
    );
    assert_has(&run_err(cfg).await, &["log_bin: expected ON, found OFF"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_file_is_locked_and_its_directory_must_be_writable() {
    let db = MariaDb::start();
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rtis.sqlite");
    let topic = unique("lock");
    let first = InProcess::start(producer_config(&db, &shop, broker, &topic, &state));
    eventually(
        Duration::from_secs(60),
        "first producer's checkpoint",
        || async { state.exists().then_some(()) },
    )
    .await;
    let second = rtis::pipeline::run(
        producer_config(&db, &shop, broker, &topic, &state),
        std::future::pending(),
    );
    let err = tokio::time::timeout(Duration::from_secs(60), second)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("locked by another running rtis-producer"),
        "{err}"
    );
    first.stop().await.unwrap();

    let cfg = producer_config(
        &db,
        &shop,
        broker,
        &topic,
        std::path::Path::new("/proc/rtis-not-writable/rtis.sqlite"),
    );
    let err = rtis::pipeline::run(cfg, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot create the directory")
            && err.to_string().contains("--state"),
        "{err}"
    );
}

/// The binary exits 2 with one error line, and a password (from the env var or inside the
/// URL) appears nowhere in its output, with every log level on, in text and in JSON logs.
#[test]
fn the_binary_exits_non_zero_with_the_message() {
    for (url, format) in [
        ("mysql://rtis@127.0.0.1:1/shop", "text"),
        ("mysql://rtis:hunter2-in-url@127.0.0.1:1/shop", "json"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rtis-producer"))
            .env("RTIS_MYSQL_URL", url)
            .env("RTIS_MYSQL_PASSWORD", "hunter2-secret")
            .env("RTIS_LOG_FORMAT", format)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        let all = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
        assert!(
            err.contains("rtis-producer: error:") && err.contains("--mysql-url"),
            "{err}"
        );
        assert!(!all.contains("hunter2"), "password leaked: {all}");
        if format == "json" {
            let logs: Vec<serde_json::Value> = all
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            let event = |level: &str, text: &str| {
                logs.iter()
                    .any(|l| l["level"] == level && l["fields"].to_string().contains(text))
            };
            assert!(
                event("INFO", "rtis-producer starting") && event("ERROR", "--mysql-url"),
                "--log-format json: the start and the stopping error as JSON events: {all}"
            );
        }
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_rtis-producer"))
        .arg("--help")
        .env("RTIS_MYSQL_PASSWORD", "hunter2-secret")
        .env("RTIS_MYSQL_URL", "mysql://rtis:hunter2-in-url@db:3306/shop")
        .env("RTIS_KAFKA_OPTIONS", "sasl.password=hunter2-sasl")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--mysql-url"), "{help}");
    assert!(
        !help.contains("hunter2"),
        "a secret leaked into --help: {help}"
    );
}

/// TLS to the source: a user that `REQUIRE SSL` is refused in plain text and served with
/// `?require_ssl=true` (self-signed certificate: `&verify_ca=false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_source_is_turned_on_by_the_url() {
    let certs = tempfile::tempdir().unwrap();
    let (key, cert) = (certs.path().join("key.pem"), certs.path().join("cert.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let (k, c) = (
        format!("--ssl-key={}", key.display()),
        format!("--ssl-cert={}", cert.display()),
    );
    let db = MariaDb::start_with(&[&k, &c]);
    let broker = Broker::shared();
    let shop = db.create_shop().await;
    db.exec(&shop, "ALTER USER 'rtis'@'%' REQUIRE SSL").await;
    db.exec(
        &shop,
        "INSERT INTO product (id, name, price) VALUES (1, 'tls', 1)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("tls");
    let mut cfg = producer_config(&db, &shop, broker, &topic, &dir.path().join("plain.sqlite"));
    cfg.snapshot = rtis::config::SnapshotMode::SnapshotOnly;
    let err = rtis::pipeline::run(cfg.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(
        rtis::error::chain(&err).contains("Access denied"),
        "{}",
        rtis::error::chain(&err)
    );
    cfg.mysql_url = format!("{}?require_ssl=true&verify_ca=false", db.url("rtis", &shop));
    cfg.state = dir.path().join("tls.sqlite");
    rtis::pipeline::run(cfg, std::future::pending())
        .await
        .unwrap_or_else(|e| panic!("over TLS: {}", rtis::error::chain(&e)));
    let lines = drain_topic(&broker.bootstrap(), &topic, 1, Duration::from_secs(60)).await;
    assert_eq!(lines[0]["after"]["name"], "tls");
}
