#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export RTIS_TANSU="${RTIS_TANSU:-$(bash .ci/install.sh | tail -n 1)}"
# integration tests start their own MariaDB and broker; two at a time fit 2 cores
cargo test --all-targets -- --test-threads=2
