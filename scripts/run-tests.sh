#!/bin/bash
# Start PostgreSQL and a Ceph S3 server on free loopback ports, run the whole suite once on SQLite
# and once on PostgreSQL, and stop both servers by PID whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
T=$(mktemp -d)
chmod 755 "$T"  # the postgres user must reach its data folder inside
cleanup() {
  scripts/s3-server.sh stop "$T/s3" >/dev/null 2>&1 || true
  scripts/pg-server.sh stop "$T/pg" >/dev/null 2>&1 || true
  rm -rf "$T"
}
trap cleanup EXIT

port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
scripts/pg-server.sh start "$T/pg" "$(port)"
# the S3 server needs a block of ports after its own: pick a quiet range
scripts/s3-server.sh start "$T/s3" "${LEVERE_TEST_S3_PORT:-47680}"
# shellcheck disable=SC1091
source "$T/s3/env"
# shellcheck disable=SC1091
PG_ENV=$(cat "$T/pg/env")

echo "== tests on SQLite"
$PY -m pytest -q -p no:cacheprovider "$@"
echo "== tests on PostgreSQL"
(eval "$PG_ENV"; $PY -m pytest -q -p no:cacheprovider "$@")
