#!/bin/bash
# A throwaway PostgreSQL 15 on loopback, for tests and benchmarks.
#
#   scripts/pg-server.sh start DIR PORT   # writes DIR/env with LEVERE_TEST_DATABASE_URL
#   scripts/pg-server.sh stop DIR         # stops it by the PID in its data folder
#
# initdb refuses to run as root, so when run as root the cluster belongs to the postgres user.
# fsync is off: the cluster lives as long as one test run.
set -euo pipefail

BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$BIN" ] || { echo "pg-server: PostgreSQL is not installed (scripts/install-test-deps.sh)" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    D=$(realpath -m "$2"); PORT=$3
    mkdir -p "$D"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$D"
    as_pg "$BIN/initdb" -D "$D/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$D/initdb.log"
    as_pg "$BIN/pg_ctl" -D "$D/data" -l "$D/pg.log" -w -t 60 \
      -o "-p $PORT -k $D -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
      start >/dev/null
    echo "export LEVERE_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:$PORT" >"$D/env"
    echo "pg-server: PostgreSQL on 127.0.0.1:$PORT after ${SECONDS}s"
    ;;
  stop)
    D=$(realpath -m "$2")
    if [ -f "$D/data/postmaster.pid" ]; then
      as_pg "$BIN/pg_ctl" -D "$D/data" -m fast -w stop >/dev/null || kill "$(head -n 1 "$D/data/postmaster.pid")"
    fi
    ;;
  *)
    echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
