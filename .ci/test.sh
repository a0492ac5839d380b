#!/usr/bin/env bash
# The README's test command: installs what is missing (MariaDB, Apache Kafka's jars), then runs
# all tests. Each test binary starts its own MariaDB servers and Apache Kafka brokers.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash .ci/install.sh >/dev/null
# two test threads fit 2 cores
cargo test --all-targets -- --test-threads=2
# a short deterministic fuzz run of every target over its committed corpus (see .ci/fuzz.sh)
bash .ci/fuzz.sh
