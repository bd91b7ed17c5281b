#!/bin/bash
# `make bench`: every benchmark, each printing its figures beside a baseline measured in the same run.
# Results are recorded in docs/benchmarks.md. A benchmark below its goal makes this exit non-zero.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
rc=0
# levere is installed in place (pip -e), so nothing compiled its modules as a package install
# would, and with PYTHONDONTWRITEBYTECODE set every command would compile them again (~45 ms
# of each `levere deliver`)
$PY -m compileall -q src
# every benchmark keeps its scratch folder, and all are removed once all have run: none then runs
# in the minutes after another removed tens of thousands of files (see bench/harness.py,
# settle_disk)
export LEVERE_BENCH_KEEP_SCRATCH=1
trap 'rm -rf .bench' EXIT
echo "== deliveries (bench/bench_deliver.py)"
$PY bench/bench_deliver.py "$@" || rc=1
if [ -f bench/bench_sync.py ]; then
  echo "== sync to long-term storage (bench/bench_sync.py)"
  $PY bench/bench_sync.py || rc=1
fi
exit $rc
