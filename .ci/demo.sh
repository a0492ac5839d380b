#!/usr/bin/env bash
# The README's demo: a private MariaDB and Apache Kafka broker (one KRaft node) under state/demo,
# the sample table, rtis-producer and rtis-consumer, a few inserts/updates/deletes, and the JSON
# files they produce.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
KAFKA_LIB="$(bash .ci/install.sh | tail -n 1)"
cargo build --quiet --bins
BIN=target/debug
DEMO="$PWD/state/demo"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
# stops the clients first (the producer ends its Kafka session), then the broker and MariaDB
cleanup() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "${pids[i]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT
rm -rf "$DEMO"; mkdir -p "$DEMO/out" "$DEMO/kafka"
DB_PORT=$(free_port); KAFKA_PORT=$(free_port); CONTROLLER_PORT=$(free_port)

echo "== private MariaDB on 127.0.0.1:$DB_PORT (ROW binlog, FULL row metadata)"
mariadb-install-db --no-defaults --datadir="$DEMO/db" --auth-root-authentication-method=normal --skip-test-db --user=root >"$DEMO/install.log" 2>&1
/usr/sbin/mariadbd --no-defaults --datadir="$DEMO/db" --port="$DB_PORT" --bind-address=127.0.0.1 --socket="$DEMO/db.sock" \
  --pid-file="$DEMO/db.pid" --log-bin="$DEMO/db/mariadb-bin" --server-id=1 --binlog-format=ROW --binlog-row-image=FULL \
  --binlog-row-metadata=FULL --user=root >"$DEMO/mariadbd.log" 2>&1 &
pids+=($!)

echo "== private Apache Kafka on 127.0.0.1:$KAFKA_PORT (one KRaft node: broker and controller)"
# one node: the internal topics (consumer offsets, transaction state) at replication factor 1
cat >"$DEMO/kafka/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DEMO/kafka/data
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.cleaner.dedupe.buffer.size=16777216
num.network.threads=2
num.io.threads=4
PROPS
# WARN and up, plus the ready line
cat >"$DEMO/kafka/log4j2.properties" <<'LOG4J'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.ready.name = kafka.server.KafkaRaftServer
logger.ready.level = INFO
LOG4J
# a fresh cluster id: 16 random bytes, base64url (the `=` form: it may start with '-')
CLUSTER_ID=$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="))')
"$JAVA" -cp "$KAFKA_LIB/*" kafka.tools.StorageTool format --ignore-formatted --cluster-id="$CLUSTER_ID" \
  -c "$DEMO/kafka/server.properties" >"$DEMO/kafka/format.log" 2>&1 || { cat "$DEMO/kafka/format.log"; exit 1; }
"$JAVA" -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$DEMO/kafka/log4j2.properties" -cp "$KAFKA_LIB/*" \
  kafka.Kafka "$DEMO/kafka/server.properties" >"$DEMO/kafka/server.log" 2>&1 &
KAFKA_PID=$!
pids+=("$KAFKA_PID")
# ready: the node logged its ready line and answers a metadata request (v4, all topics) listing a broker
kafka_ready() {
  grep -q "Kafka Server started" "$DEMO/kafka/server.log" || return 1
  python3 - "$KAFKA_PORT" <<'PY'
import socket, struct, sys
client = b"rtis-demo"
body = struct.pack(">hhih", 3, 4, 1, len(client)) + client + struct.pack(">ib", -1, 0)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.settimeout(2)
s.sendall(struct.pack(">i", len(body)) + body)
head = b""
while len(head) < 16:
    chunk = s.recv(16 - len(head))
    if not chunk:
        sys.exit(1)
    head += chunk
_size, correlation, _throttle, brokers = struct.unpack(">iiii", head)
sys.exit(0 if correlation == 1 and brokers >= 1 else 1)
PY
}
for _ in $(seq 600); do
  kill -0 "$KAFKA_PID" 2>/dev/null || { echo "Kafka exited while starting; its log:"; tail -n 40 "$DEMO/kafka/server.log"; exit 1; }
  kafka_ready 2>/dev/null && break
  sleep 0.1
done
kafka_ready 2>/dev/null || { echo "Kafka did not start within 60 s; its log:"; tail -n 40 "$DEMO/kafka/server.log"; exit 1; }
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
