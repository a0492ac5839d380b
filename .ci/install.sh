#!/usr/bin/env bash
# Installs what rtis's tests, demo and benchmark need, reusing what is already there:
#  - mariadbd/mariadb-install-db/mariadb-binlog from Debian's mariadb-server (never starts a system server),
#  - a C toolchain, pkg-config and OpenSSL headers (rdkafka and its bundled librdkafka),
#  - Java 17+ and Maven (Debian's packages) when missing,
#  - Apache Kafka (the broker's jars from Maven Central, .ci/kafka/pom.xml) into a per-machine
#    cache, once: ~/.cache/rtis/kafka-<version>/lib (RTIS_CACHE moves the cache).
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
echo "$KAFKA_LIB"
