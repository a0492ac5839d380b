//! The verifier of the fault tests: a ledger of what a workload committed (recorded only after
//! the server confirmed the COMMIT, or — when the connection died during COMMIT — after a marker
//! row written in the same transaction proves it committed), checked against the consumer's
//! JSON lines and the table:
//!
//! * lost: expected records not seen (must be 0);
//! * duplicated: the same source position (key, file, pos, row, op) seen twice (must be 0);
//! * order: per key, source positions strictly increase, every tombstone follows a delete, and
//!   a key stays in one partition;
//! * mismatched: per key, the seen records (duplicates removed) are exactly the expected ones,
//!   in commit order, with the expected values;
//! * final state: the fold of the records per key equals `SELECT` of the table.
//!
//! [`Workload`] writes random single- and multi-row transactions (inserts, updates, deletes)
//! from a seed (`RTIS_SEED` replays a run), survives the server being killed, and keeps the
//! ledger.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// One expected change of one key. Values are subsets of the record's `after` image.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// A row read by the snapshot (`op: r`).
    Snapshot(Value),
    Create(Value),
    Update(Value),
    /// A delete record, followed by a tombstone.
    Delete,
}

impl Expected {
    fn records(&self) -> usize {
        match self {
            Expected::Delete => 2,
            _ => 1,
        }
    }
}

/// What committed, per key in commit order.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub seed: u64,
    pub transactions: usize,
    per_key: BTreeMap<String, Vec<Expected>>,
}

impl Ledger {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            ..Default::default()
        }
    }

    /// Records one committed transaction's changes (call only once the commit is confirmed).
    pub fn commit(&mut self, changes: impl IntoIterator<Item = (String, Expected)>) {
        self.transactions += 1;
        for (k, e) in changes {
            self.per_key.entry(k).or_default().push(e);
        }
    }

    /// Adds one expected change of `key` outside any transaction count (for callers that keep
    /// their own per-key ledger).
    pub fn push(&mut self, key: String, e: Expected) {
        self.per_key.entry(key).or_default().push(e);
    }

    /// Records the consumer should see (a delete counts twice: delete + tombstone).
    pub fn expected_records(&self) -> usize {
        self.per_key
            .values()
            .flat_map(|v| v.iter().map(Expected::records))
            .sum()
    }
}

/// The verifier's findings.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub transactions: usize,
    pub expected: usize,
    pub seen: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub order: Vec<String>,
    pub mismatched: Vec<String>,
    pub state: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.order.is_empty()
            && self.mismatched.is_empty()
            && self.state.is_empty()
            && self.seen == self.expected
    }

    /// The one-line summary the README quotes.
    pub fn summary(&self, test: &str, iterations: usize) -> String {
        let transactions = match self.transactions {
            0 => "n/a".to_string(),
            n => n.to_string(),
        };
        format!(
            "fault summary: {test}: iterations={iterations} transactions={transactions} events={} seen={} lost={} duplicated={} order_errors={} state_errors={} seed={}",
            self.expected,
            self.seen,
            self.lost,
            self.duplicated,
            self.order.len(),
            self.state.len(),
            self.seed
        )
    }

    /// Panics with the details (first few of each kind) unless everything checks out.
    pub fn assert_ok(&self, test: &str) {
        if self.ok() {
            return;
        }
        let few = |v: &[String]| v.iter().take(8).cloned().collect::<Vec<_>>().join("\n  ");
        panic!(
            "{test} failed (replay with RTIS_SEED={}): expected {} records, seen {}, lost {}, duplicated {}\n\
             order ({}):\n  {}\nmismatched ({}):\n  {}\nfinal state ({}):\n  {}",
            self.seed,
            self.expected,
            self.seen,
            self.lost,
            self.duplicated,
            self.order.len(),
            few(&self.order),
            self.mismatched.len(),
            few(&self.mismatched),
            self.state.len(),
            few(&self.state)
        );
    }
}

fn op_of(l: &Value) -> &str {
    l["op"].as_str().unwrap_or_default()
}

/// `(file sequence, pos, row)` of a change line.
fn position(l: &Value) -> (u64, u64, u64) {
    let file = l["source"]["file"].as_str().unwrap_or_default();
    let seq = file
        .rsplit('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (
        seq,
        l["source"]["pos"].as_u64().unwrap_or(0),
        l["source"]["row"].as_u64().unwrap_or(0),
    )
}

/// Decimal strings compare by value ("1.5" == "1.5000"), so a scale change does not matter.
fn same_value(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| same_value(v, gv))),
        (Value::String(w), Value::String(g)) if w != g => {
            let norm = |s: &str| -> Option<String> {
                if s.is_empty()
                    || !s
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
                {
                    return None;
                }
                Some(if s.contains('.') {
                    s.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    s.to_string()
                })
            };
            norm(w).is_some() && norm(w) == norm(g)
        }
        (w, g) => w == g,
    }
}

fn matches(e: &Expected, l: &Value) -> bool {
    match (e, op_of(l)) {
        (Expected::Create(v), "c") | (Expected::Update(v), "u") | (Expected::Snapshot(v), "r") => {
            same_value(v, &l["after"])
        }
        (Expected::Delete, "d") => true,
        _ => false,
    }
}

/// Checks the consumer's lines (sorted by partition, offset, as `read_lines` returns them)
/// against the ledger and the table (`table_state`).
pub fn verify(ledger: &Ledger, lines: &[Value], table: &BTreeMap<String, Value>) -> Report {
    let mut r = Report {
        seed: ledger.seed,
        transactions: ledger.transactions,
        expected: ledger.expected_records(),
        seen: lines.len(),
        ..Default::default()
    };
    // per key, in offset order; duplicates (same identity) removed and counted
    let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    let mut partition_of: HashMap<String, i64> = HashMap::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut last_change: HashMap<String, String> = HashMap::new();
    for l in lines {
        let key = l["key"]["id"].as_str().unwrap_or_default().to_string();
        let p = l["partition"].as_i64().unwrap_or(-1);
        if let Some(q) = partition_of.insert(key.clone(), p) {
            if q != p {
                r.order
                    .push(format!("key {key} in partitions {q} and {p}: {l}"));
            }
        }
        let id = if op_of(l) == "tombstone" {
            // a tombstone is identified by the change it follows
            format!("t|{}", last_change.get(&key).cloned().unwrap_or_default())
        } else {
            let (f, pos, row) = position(l);
            let id = format!("{key}|{f}|{pos}|{row}|{}", op_of(l));
            last_change.insert(key.clone(), id.clone());
            id
        };
        let n = ids.entry(id.clone()).or_default();
        *n += 1;
        if *n > 1 {
            r.duplicated += 1;
            if r.mismatched.len() < 50 {
                r.mismatched.push(format!("duplicate of {id}: {l}"));
            }
            continue;
        }
        by_key.entry(key).or_default().push(l);
    }
    // order per key
    for (key, recs) in &by_key {
        let mut prev: Option<(u64, u64, u64)> = None;
        let mut prev_op = "";
        for l in recs {
            let op = op_of(l);
            if op == "tombstone" {
                if prev_op != "d" {
                    r.order.push(format!(
                        "key {key}: tombstone after {prev_op:?}, not a delete"
                    ));
                }
            } else {
                let p = position(l);
                if prev.is_some_and(|q| p <= q) {
                    r.order.push(format!(
                        "key {key}: position {p:?} after {prev:?} (offset {})",
                        l["offset"]
                    ));
                }
                prev = Some(p);
            }
            prev_op = op;
        }
    }
    // seen == expected per key (greedy in-order matching; unmatched expected are lost)
    let empty = Vec::new();
    for (key, exp) in &ledger.per_key {
        let seen: Vec<&&Value> = by_key
            .get(key)
            .unwrap_or(&empty)
            .iter()
            .filter(|l| op_of(l) != "tombstone")
            .collect();
        let tombstones = by_key
            .get(key)
            .unwrap_or(&empty)
            .iter()
            .filter(|l| op_of(l) == "tombstone")
            .count();
        let deletes = exp.iter().filter(|e| **e == Expected::Delete).count();
        if tombstones < deletes {
            r.lost += deletes - tombstones;
            r.mismatched.push(format!(
                "key {key}: {tombstones} tombstones for {deletes} deletes"
            ));
        } else if tombstones > deletes {
            r.mismatched.push(format!(
                "key {key}: {tombstones} tombstones for {deletes} deletes"
            ));
        }
        let mut i = 0;
        for e in exp {
            match seen[i..].iter().position(|l| matches(e, l)) {
                Some(j) => {
                    for extra in &seen[i..i + j] {
                        r.mismatched
                            .push(format!("key {key}: unexpected {extra} before {e:?}"));
                    }
                    i += j + 1;
                }
                None => {
                    r.lost += 1;
                    r.mismatched.push(format!("key {key}: lost {e:?}"));
                }
            }
        }
        for extra in &seen[i..] {
            r.mismatched.push(format!("key {key}: unexpected {extra}"));
        }
    }
    for (key, recs) in &by_key {
        if !ledger.per_key.contains_key(key) {
            r.mismatched.push(format!(
                "key {key}: {} records, none committed: {}",
                recs.len(),
                recs[0]
            ));
        }
    }
    // final state
    let folded = super::fold(lines);
    for (k, want) in table {
        match folded.get(k) {
            None => r
                .state
                .push(format!("key {k}: in the table, not in the records")),
            Some(got) if !same_value(want, got) || !same_value(got, want) => r
                .state
                .push(format!("key {k}: table {want} but records fold to {got}")),
            Some(_) => {}
        }
    }
    for k in folded.keys().filter(|k| !table.contains_key(*k)) {
        r.state
            .push(format!("key {k}: in the records, not in the table"));
    }
    r
}

/// Random transactions against `product`, with a ledger of what committed.
///
/// Each transaction also inserts its number into `rtis_txlog` (a table the producer does not
/// capture): when the connection dies during COMMIT, that row tells whether it committed.
pub struct Workload {
    url: String,
    rng: StdRng,
    conn: Option<mysql_async::Conn>,
    present: BTreeMap<u64, bool>,
    version: u64,
    next_txid: u64,
    pub ids: u64,
    pub ledger: Ledger,
    /// Transactions whose COMMIT outcome was unknown and had to be looked up.
    pub uncertain: usize,
    /// Transactions that failed before COMMIT (rolled back by the server).
    pub aborted: usize,
}

async fn connect(url: &str, timeout: Duration) -> mysql_async::Conn {
    let opts = mysql_async::Opts::from_url(url).unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        match mysql_async::Conn::new(opts.clone()).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("workload: connect to {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

impl Workload {
    /// `url`: a root URL of the shop database (`MariaDb::root_url`).
    pub async fn new(url: String, seed: u64) -> Self {
        let mut c = connect(&url, Duration::from_secs(30)).await;
        c.query_drop("CREATE TABLE IF NOT EXISTS rtis_txlog (id BIGINT PRIMARY KEY)")
            .await
            .unwrap();
        Self {
            url,
            rng: StdRng::seed_from_u64(seed),
            conn: Some(c),
            present: BTreeMap::new(),
            version: 0,
            next_txid: 0,
            ids: 150,
            ledger: Ledger::new(seed),
            uncertain: 0,
            aborted: 0,
        }
    }

    /// Rows `ids` exist already (inserted before, e.g. for a snapshot): the workload updates
    /// and deletes them instead of inserting.
    pub fn preload(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            self.present.insert(id, true);
            self.ids = self.ids.max(id);
        }
    }

    /// A connection, reconnecting (for up to 90 s) after the server went away.
    pub async fn conn(&mut self) -> &mut mysql_async::Conn {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.url, Duration::from_secs(90)).await);
        }
        self.conn.as_mut().unwrap()
    }

    /// Runs a statement outside the ledger (DDL, FLUSH BINARY LOGS), retrying after a reconnect.
    pub async fn exec(&mut self, sql: &str) {
        for _ in 0..3 {
            match self.conn().await.query_drop(sql).await {
                Ok(()) => return,
                Err(_) => self.conn = None,
            }
        }
        panic!("workload: {sql} failed three times");
    }

    /// One random transaction; returns whether it committed.
    pub async fn step(&mut self) -> bool {
        let n = if self.rng.random_bool(0.2) {
            self.rng.random_range(2..6)
        } else {
            1
        };
        let mut touched = self.present.clone();
        let mut stmts: Vec<(String, mysql_async::Params)> = Vec::new();
        let mut changes = Vec::new();
        for _ in 0..n {
            let id = self.rng.random_range(1..=self.ids);
            self.version += 1;
            let v = self.version;
            let name = format!("k{id}-v{v}");
            let price = format!("{}.{:02}", v % 100_000, v % 100);
            let category: Option<String> =
                self.rng.random_bool(0.7).then(|| format!("cat{}", v % 7));
            let image =
                json!({"id": id.to_string(), "name": name, "price": price, "category": category});
            if !touched.get(&id).copied().unwrap_or(false) {
                stmts.push((
                    "INSERT INTO product (id, name, category, price) VALUES (?, ?, ?, ?)".into(),
                    (id, name, category, price).into(),
                ));
                changes.push((id.to_string(), Expected::Create(image)));
                touched.insert(id, true);
            } else if self.rng.random_bool(0.75) {
                stmts.push((
                    "UPDATE product SET name = ?, category = ?, price = ? WHERE id = ?".into(),
                    (name, category, price, id).into(),
                ));
                changes.push((id.to_string(), Expected::Update(image)));
            } else {
                stmts.push(("DELETE FROM product WHERE id = ?".into(), (id,).into()));
                changes.push((id.to_string(), Expected::Delete));
                touched.insert(id, false);
            }
        }
        self.next_txid += 1;
        let txid = self.next_txid;
        let committed = self.run_txn(&stmts, txid).await;
        if committed {
            self.ledger.commit(changes);
            self.present = touched;
        }
        committed
    }

    /// Runs the statements and the marker insert in one transaction. Returns whether it committed:
    /// an error before COMMIT means the server rolled it back; an error during COMMIT is looked up.
    async fn run_txn(&mut self, stmts: &[(String, mysql_async::Params)], txid: u64) -> bool {
        let before_commit: Result<(), mysql_async::Error> = async {
            let c = self.conn().await;
            c.query_drop("START TRANSACTION").await?;
            for (sql, params) in stmts {
                c.exec_drop(sql.as_str(), params.clone()).await?;
            }
            c.exec_drop("INSERT INTO rtis_txlog (id) VALUES (?)", (txid,))
                .await?;
            Ok(())
        }
        .await;
        if before_commit.is_err() {
            self.conn = None;
            self.aborted += 1;
            return false;
        }
        match self.conn().await.query_drop("COMMIT").await {
            Ok(()) => true,
            Err(_) => {
                // outcome unknown: ask the (restarted) server
                self.conn = None;
                self.uncertain += 1;
                let n: Option<u64> = self
                    .conn()
                    .await
                    .exec_first("SELECT COUNT(*) FROM rtis_txlog WHERE id = ?", (txid,))
                    .await
                    .expect("looking up an uncertain commit");
                n == Some(1)
            }
        }
    }

    /// Runs transactions until `stop` is set, with short random pauses.
    pub async fn run_until(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            self.step().await;
            if self.rng.random_bool(0.3) {
                let ms = self.rng.random_range(1..20);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }
}
