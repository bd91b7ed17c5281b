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
PGT=$(mktemp -d)
chmod 755 "$PGT"  # the postgres user must reach its data folder inside
trap 'rm -rf .bench; scripts/pg-server.sh stop "$PGT/pg" >/dev/null 2>&1; rm -rf "$PGT"' EXIT
echo "== deliveries (bench/bench_deliver.py)"
$PY bench/bench_deliver.py "$@" || rc=1
if [ -f bench/bench_sync.py ]; then
  echo "== sync to long-term storage (bench/bench_sync.py)"
  $PY bench/bench_sync.py || rc=1
fi
echo "== Crypt4GH encryption against the stock crypt4gh tool (bench/bench_crypt4gh.py)"
$PY bench/bench_crypt4gh.py || rc=1
echo "== standard analysis of a gzipped FASTQ against sequali (bench/bench_qc.py)"
$PY bench/bench_qc.py || rc=1
echo "== the secure zone: an encrypting upload against nginx, and release against file count (bench/bench_zone.py)"
$PY bench/bench_zone.py || rc=1
echo "== approving an application at the maximum size (bench/bench_provision.py)"
# on PostgreSQL too: a throwaway server, unless one is named already (LEVERE_TEST_DATABASE_URL)
if [ -z "${LEVERE_TEST_DATABASE_URL:-}" ]; then
  pg_port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if scripts/pg-server.sh start "$PGT/pg" "$pg_port" >/dev/null 2>&1; then
    # shellcheck disable=SC1091
    source "$PGT/pg/env"
  else
    echo "  (PostgreSQL is not installed: SQLite only)"
  fi
fi
$PY bench/bench_provision.py || rc=1
echo "== the portal's heaviest pages (bench/bench_portal.py)"
$PY bench/bench_portal.py || rc=1
exit $rc
