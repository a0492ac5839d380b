//! The private MariaDB from the harness is a real binlog source.
mod common;

use common::MariaDb;
use mysql_async::prelude::*;

#[tokio::test]
async fn private_mariadb_has_row_binlog_with_full_metadata_and_survives_kill9() {
    let mut db = MariaDb::start();
    let shop = db.create_shop().await;
    let mut c = db.conn(&shop).await;
    let vars: Vec<(String, String)> = c
        .query("SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin','binlog_format','binlog_row_image','binlog_row_metadata')")
        .await
        .unwrap();
    let get = |k: &str| {
        vars.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("log_bin"), "ON");
    assert_eq!(get("binlog_format"), "ROW");
    assert_eq!(get("binlog_row_image"), "FULL");
    assert_eq!(get("binlog_row_metadata"), "FULL");

    let before: (String, u64) = c
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .map(|r: mysql_async::Row| (r.get(0).unwrap(), r.get(1).unwrap()))
        .unwrap();
    c.query_drop("INSERT INTO product (id, name, price) VALUES (1, 'a', 1.00)")
        .await
        .unwrap();
    let after: (String, u64) = c
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .map(|r: mysql_async::Row| (r.get(0).unwrap(), r.get(1).unwrap()))
        .unwrap();
    assert_eq!(before.0, after.0);
    assert!(
        after.1 > before.1,
        "a write must move the binlog position: {before:?} -> {after:?}"
    );
    drop(c);

    db.kill9();
    db.restart();
    let mut c = db.conn(&shop).await;
    let n: u64 = c
        .query_first("SELECT COUNT(*) FROM product")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1, "committed row survives kill -9");
    let files: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await.unwrap();
    assert!(files.len() >= 2, "restart opens a new binlog file");
}
