#!/usr/bin/env python3
"""Reads rtis's change records with confluent-kafka's stock AvroDeserializer.

The producer writes the Confluent wire format when started with
`--format confluent --schema-registry-url URL`; nothing else is needed on the reading side:

    pip install "confluent-kafka[avro,schemaregistry]"
    python3 examples/confluent_consumer.py --bootstrap 127.0.0.1:9092 \
        --registry http://127.0.0.1:8081 --topic product_updates

Each record is printed as one JSON line shaped like rtis-consumer's output: partition, offset,
key, then the change envelope (op c/u/d/r, before, after, source, ts_ms), or op "tombstone" for
the null record that follows a delete. Decimals print as strings, timestamps as ISO-8601 with
microseconds (`Z` for TIMESTAMP columns), bytes as base64.

A team on the old polling pipeline that already reads Avro through a Schema Registry keeps its
consumer as it is and only swaps the producer.
"""

import argparse
import base64
import datetime
import decimal
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def plain(v):
    """Python values from fastavro, as JSON values rendered like rtis-consumer renders them."""
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, datetime.datetime):
        text = v.strftime("%Y-%m-%dT%H:%M:%S.%f")
        return text + "Z" if v.tzinfo is not None else text
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(v).decode("ascii")
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--registry", default="http://127.0.0.1:8081", help="Schema Registry URL")
    ap.add_argument("--topic", default="product_updates")
    ap.add_argument("--group", default="rtis-python-example")
    ap.add_argument("--max-records", type=int, default=0,
                    help="exit after this many records (default: run until interrupted)")
    ap.add_argument("--timeout", type=float, default=0,
                    help="with --max-records: fail after this many seconds")
    args = ap.parse_args()

    deserialize = AvroDeserializer(SchemaRegistryClient({"url": args.registry}))
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        # only records of committed producer transactions
        "isolation.level": "read_committed",
    })
    consumer.subscribe([args.topic])
    deadline = time.monotonic() + args.timeout if args.timeout else None
    seen = 0
    try:
        while not args.max_records or seen < args.max_records:
            if deadline and time.monotonic() > deadline:
                print(f"timed out after {seen} of {args.max_records} records", file=sys.stderr)
                return 1
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            key = deserialize(msg.key(), SerializationContext(msg.topic(), MessageField.KEY))
            line = {"partition": msg.partition(), "offset": msg.offset(), "key": key}
            if msg.value() is None:
                line["op"] = "tombstone"
            else:
                line.update(deserialize(msg.value(),
                                        SerializationContext(msg.topic(), MessageField.VALUE)))
            print(json.dumps(plain(line)), flush=True)
            seen += 1
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
