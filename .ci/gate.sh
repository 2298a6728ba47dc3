#!/usr/bin/env bash
# headbench gates itself: a small vico-mini cell against the committed baseline.
# Quality metrics are deterministic on CPU (tight tolerances); throughput is loose.
# Refresh the baseline after an intended change with:  bash .ci/gate.sh --update-baseline
set -euo pipefail
cd "$(dirname "$0")/.."
work=.ci/cache
mkdir -p "$work"
export BENCH_HOME="${BENCH_HOME:-$PWD/$work/bench-home}"
rm -f "$work/gate.db"*
.venv/bin/bench run --driver lstm --renderer rig --postproc none --limit 2 \
    --metrics psnr,ssim,expfd,anglefd,transfd --store "$work/gate.db" --quiet
if [ "${1:-}" = "--update-baseline" ]; then
    exec .venv/bin/bench gate --store "$work/gate.db" --baseline reports/baseline.json --update-baseline
fi
exec .venv/bin/bench gate --store "$work/gate.db" --baseline reports/baseline.json \
    --throughput-ratio 0.2 --junit "$work/gate-junit.xml" --markdown "$work/gate.md"
