#!/bin/bash
# `make bench`: every benchmark, each printing its figures beside a baseline measured in the same run.
# Results are recorded in docs/benchmarks.md. A benchmark below its goal makes this exit non-zero.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
rc=0
echo "== deliveries (bench/bench_deliver.py)"
$PY bench/bench_deliver.py "$@" || rc=1
if [ -f bench/bench_sync.py ]; then
  echo "== sync to long-term storage (bench/bench_sync.py)"
  $PY bench/bench_sync.py || rc=1
fi
exit $rc
