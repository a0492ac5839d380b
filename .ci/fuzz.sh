#!/usr/bin/env bash
# A short fuzz run of every target in fuzz/ (part of the README's test command). Deterministic:
# a fixed seed and a fixed number of runs per target (RTIS_FUZZ_RUNS, default 100000), over the
# committed corpus and the regression inputs of earlier findings, so CI gives the same answer
# every time. Needs the nightly toolchain (libFuzzer's instrumentation); installs cargo-fuzz.
# A longer run: RTIS_FUZZ_SECS=600 bash .ci/fuzz.sh (time-bound, random seed).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export PATH="$HOME/.cargo/bin:$PATH"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly toolchain (cargo fuzz needs it)" >&2
  rustup toolchain install nightly --profile minimal >&2
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked -q
cargo +nightly fuzz build -O -a  # -a: debug assertions, so integer overflows are findings
for target in $(cargo +nightly fuzz list); do
  work="$(mktemp -d)"
  if [ -n "${RTIS_FUZZ_SECS:-}" ]; then
    limit=(-max_total_time="$RTIS_FUZZ_SECS")
  else
    limit=(-runs="${RTIS_FUZZ_RUNS:-100000}" -seed=1)
  fi
  echo "fuzz: $target ${limit[*]}" >&2
  # new inputs go to the scratch dir: the committed corpus stays as it is
  cargo +nightly fuzz run -O -a "$target" "$work" "corpus/$target" "regressions/$target" -- \
    "${limit[@]}" -malloc_limit_mb=256 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 \
    | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|ERROR|SUMMARY|panicked|Test unit written' >&2
  rm -rf "$work"
done
echo "fuzz: every target ran without a finding" >&2
