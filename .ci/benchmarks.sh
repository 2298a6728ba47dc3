#!/usr/bin/env bash
# Throughput benchmarks guarded by pytest-benchmark: each run is saved under .benchmarks/,
# and from the second run on it fails when a benchmark's median is >50% slower than the
# previous saved run on this machine. Timings only compare on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
args=(-m "benchmark and not slow" --benchmark-enable --benchmark-autosave)
if compgen -G ".benchmarks/*/*.json" >/dev/null; then
    args+=(--benchmark-compare --benchmark-compare-fail=median:50%)
else
    echo "no saved benchmark run yet: this run becomes the reference"
fi
exec "$python" -m pytest "${args[@]}" "$@"
