#!/usr/bin/env bash
# Installs what rtis's tests and demo need, reusing what is already there:
#  - mariadbd/mariadb-install-db from Debian's mariadb-server (never touches a running server),
#  - the Kafka-API broker tansu 0.6.0 (built once per machine into ~/.cache/rtis).
set -euo pipefail
TANSU_VERSION=0.6.0
CACHE="${RTIS_CACHE:-$HOME/.cache/rtis}"
TANSU_ROOT="$CACHE/tansu-$TANSU_VERSION"
export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  echo "install: mariadb-server (Debian package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the package from starting a system server
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq mariadb-server mariadb-client >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
for tool in cc make perl pkg-config; do
  command -v "$tool" >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq build-essential pkg-config >/dev/null; break; }
done
[ -e /usr/include/openssl/ssl.h ] || { apt-get update -qq; apt-get install -y -qq libssl-dev >/dev/null; }

if [ ! -x "$TANSU_ROOT/bin/tansu" ]; then
  echo "install: tansu $TANSU_VERSION with sqlite storage into $TANSU_ROOT (one-time build, ~10 min)" >&2
  mkdir -p "$CACHE"
  CARGO_TARGET_DIR="$CACHE/tansu-build" cargo install tansu --version "$TANSU_VERSION" --locked \
    --features dynostore,libsql --root "$TANSU_ROOT"
  rm -rf "$CACHE/tansu-build"
fi
echo "$TANSU_ROOT/bin/tansu"
