#!/usr/bin/env bash
# Installs what rtis's tests, demo and benchmark need, reusing what is already there:
#  - mariadbd/mariadb-install-db/mariadb-binlog from Debian's mariadb-server (never starts a system server),
#  - a C toolchain, pkg-config and OpenSSL headers (rdkafka and its bundled librdkafka),
#  - Java 17+ and Maven (Debian's packages) when missing,
#  - Apache Kafka (the broker's jars from Maven Central, .ci/kafka/pom.xml) into a per-machine
#    cache, once: ~/.cache/rtis/kafka-<version>/lib (RTIS_CACHE moves the cache).
#  - Apicurio Registry (a Confluent-compatible Schema Registry, runnable archive from Maven
#    Central; runs on the Temurin 25 JDK) into ~/.cache/rtis/apicurio-<version>,
#  - Python's confluent-kafka with its Avro deserializer (examples/, the stock-client test).
# Prints the Kafka lib directory as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${RTIS_CACHE:-$HOME/.cache/rtis}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' .ci/kafka/pom.xml)"
KAFKA_LIB="$CACHE/kafka-$KAFKA_VERSION/lib"

apt_updated=
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  apt-get install -y -qq "$@" >/dev/null
}

if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  echo "install: mariadb-server (Debian package)" >&2
  # policy-rc.d keeps the package from starting a system server
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt_install mariadb-server mariadb-client
  rm -f /usr/sbin/policy-rc.d
fi
for tool in cc make perl pkg-config; do
  command -v "$tool" >/dev/null 2>&1 || { apt_install build-essential pkg-config; break; }
done
[ -e /usr/include/openssl/ssl.h ] || apt_install libssl-dev
command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null 2>&1 || apt_install maven

if [ ! -f "$KAFKA_LIB/.complete" ]; then
  echo "install: Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIB (one-time, ~10 s)" >&2
  rm -rf "$KAFKA_LIB"; mkdir -p "$KAFKA_LIB"
  mvn -q -B -f .ci/kafka/pom.xml \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -Dstyle.color=never -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIB" >&2
  ls "$KAFKA_LIB"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null
  touch "$KAFKA_LIB/.complete"
fi
APICURIO_VERSION=3.3.3
APICURIO_DIR="$CACHE/apicurio-$APICURIO_VERSION"
if [ ! -f "$APICURIO_DIR/.complete" ]; then
  echo "install: Apicurio Registry $APICURIO_VERSION from Maven Central into $APICURIO_DIR (one-time)" >&2
  rm -rf "$APICURIO_DIR"; mkdir -p "$APICURIO_DIR"
  mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:get -Dstyle.color=never \
    -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" -Dtransitive=false >&2
  tar -xzf "$HOME/.m2/repository/io/apicurio/apicurio-registry-app/$APICURIO_VERSION/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" -C "$APICURIO_DIR"
  ls "$APICURIO_DIR/quarkus-run.jar" >/dev/null
  touch "$APICURIO_DIR/.complete"
fi
ls /usr/lib/jvm/temurin-25-jdk-amd64/bin/java >/dev/null 2>&1 \
  || echo "install: warning: no Temurin 25 JDK at /usr/lib/jvm/temurin-25-jdk-amd64 (Apicurio needs Java 21+; set RTIS_REGISTRY_JAVA)" >&2
CONFLUENT_KAFKA_VERSION=2.16.1
if ! python3 -c "import confluent_kafka, fastavro, sys; sys.exit(confluent_kafka.__version__ != '$CONFLUENT_KAFKA_VERSION')" 2>/dev/null; then
  echo "install: Python confluent-kafka[avro,schemaregistry]==$CONFLUENT_KAFKA_VERSION (PyPI)" >&2
  python3 -m pip install -q --root-user-action=ignore "confluent-kafka[avro,schemaregistry]==$CONFLUENT_KAFKA_VERSION" >&2
fi
echo "$KAFKA_LIB"
