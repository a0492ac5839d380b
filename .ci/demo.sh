#!/usr/bin/env bash
# The README's demo: a private MariaDB and Kafka-API broker under state/demo, the sample table,
# rtis-producer and rtis-consumer, a few inserts/updates/deletes, and the JSON files they produce.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
TANSU="$(bash .ci/install.sh | tail -n 1)"
cargo build --quiet --bins
BIN=target/debug
DEMO="$PWD/state/demo"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; sleep 1; for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
rm -rf "$DEMO"; mkdir -p "$DEMO/out"
DB_PORT=$(free_port); KAFKA_PORT=$(free_port)

echo "== private MariaDB on 127.0.0.1:$DB_PORT (ROW binlog, FULL row metadata)"
mariadb-install-db --no-defaults --datadir="$DEMO/db" --auth-root-authentication-method=normal --skip-test-db --user=root >"$DEMO/install.log" 2>&1
/usr/sbin/mariadbd --no-defaults --datadir="$DEMO/db" --port="$DB_PORT" --bind-address=127.0.0.1 --socket="$DEMO/db.sock" \
  --pid-file="$DEMO/db.pid" --log-bin="$DEMO/db/mariadb-bin" --server-id=1 --binlog-format=ROW --binlog-row-image=FULL \
  --binlog-row-metadata=FULL --user=root >"$DEMO/mariadbd.log" 2>&1 &
pids+=($!)
echo "== private Kafka-API broker (tansu) on 127.0.0.1:$KAFKA_PORT"
(cd "$DEMO" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine sqlite://tansu.db) >"$DEMO/tansu.log" 2>&1 &
pids+=($!)
# tansu 0.6.0 lacks an index on its header table (fetches slow down quadratically): add it
python3 - "$DEMO/tansu.db" <<'PY'
import sqlite3, sys, time
for _ in range(300):
    try:
        c = sqlite3.connect(sys.argv[1], timeout=5)
        c.execute("CREATE INDEX IF NOT EXISTS rtis_header_topition_offset ON header (topition, offset_id)")
        c.commit(); break
    except sqlite3.OperationalError:
        time.sleep(0.1)
PY
sql() { mariadb -h127.0.0.1 -P"$DB_PORT" -uroot "$@"; }
for _ in $(seq 100); do sql -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
sql -e 'CREATE DATABASE shop'
sql shop < sql/01-schema.sql
sql shop < sql/02-sample-data.sql   # existing rows: the producer's snapshot backfills them (op r)
sql shop < sql/03-grants.sql

echo "== rtis-producer and rtis-consumer"
export RTIS_MYSQL_URL="mysql://rtis@127.0.0.1:$DB_PORT/shop" RTIS_MYSQL_PASSWORD=change-me \
  RTIS_BROKERS="127.0.0.1:$KAFKA_PORT" RTIS_TOPIC=product_updates
METRICS_PORT=$(free_port)
$BIN/rtis-producer --partitions 3 --state "$DEMO/rtis.sqlite" --metrics-addr "127.0.0.1:$METRICS_PORT" 2>"$DEMO/producer.log" &
pids+=($!)
for _ in $(seq 300); do grep -q "streaming binlog" "$DEMO/producer.log" && break; sleep 0.2; done
grep -q "streaming binlog" "$DEMO/producer.log" || { cat "$DEMO/producer.log"; exit 1; }
$BIN/rtis-consumer --group demo --out-dir "$DEMO/out" 2>"$DEMO/consumer.log" &
pids+=($!)

echo "== changes after the snapshot: an update, a price change + insert in one transaction, a delete"
sql shop -e "UPDATE product SET category = 'coffee' WHERE id = 2"
sql shop -e "START TRANSACTION; UPDATE product SET price = 329.00 WHERE id = 1; INSERT INTO product (id, name, category, price) VALUES (6, 'Milk jug', 'kitchen', 14.50); COMMIT"
sql shop -e "DELETE FROM product WHERE id = 5"
want=10   # 5 snapshot rows + 1 insert + 2 updates + 1 delete + 1 tombstone
for _ in $(seq 300); do
  n=$( (cat "$DEMO"/out/product_updates-[0-9]*.jsonl 2>/dev/null || true) | wc -l)
  [ "$n" -ge "$want" ] && break; sleep 0.2
done
echo "== JSON lines (one file per partition) in $DEMO/out"
for f in "$DEMO"/out/product_updates-*.jsonl; do
  case "$f" in *.dead.jsonl) continue;; esac
  echo "--- $(basename "$f")"; cat "$f"
done
echo "== $n records (expected $want)"
[ "$n" -ge "$want" ]
sleep 3   # a source heartbeat (2 s) tells the producer it is caught up
echo "== rtis-producer status --state $DEMO/rtis.sqlite (read while the producer runs)"
$BIN/rtis-producer status --state "$DEMO/rtis.sqlite"
echo "== metrics: curl -s 127.0.0.1:$METRICS_PORT/metrics | grep -v '^#'"
python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode(), end="")' \
  "http://127.0.0.1:$METRICS_PORT/metrics" | grep -v '^#'
