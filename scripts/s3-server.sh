#!/bin/bash
# A throwaway single-node Ceph radosgw on loopback, for tests and benchmarks.
#
#   scripts/s3-server.sh start DIR PORT   # S3 on http://127.0.0.1:PORT; writes DIR/env
#   scripts/s3-server.sh stop DIR         # stops every daemon started in DIR, by PID
#
# After `start`, `source DIR/env` exports LEVERE_TEST_S3_ENDPOINT, LEVERE_TEST_S3_ACCESS_KEY and
# LEVERE_TEST_S3_SECRET_KEY. DIR/pids/*.pid hold the PID of each daemon; DIR/log has their logs.
#
# Design notes
# - One monitor, one OSD and one radosgw. No ceph-mgr: S3 does not need it and it costs ~300 MB.
# - The OSD keeps objects in memory (memstore), so nothing survives `stop` and nothing touches disk
#   beyond the monitor's small database.
# - The memstore holds 2 GiB unless LEVERE_S3_MEMSTORE_BYTES says otherwise (the sync benchmark
#   stores a 4 GiB object).
# - No cephx inside the cluster: it only listens on 127.0.0.1 and lives as long as a test run.
# - Ports are derived from PORT, never Ceph's defaults (3300/6789 for the monitor, 6800-7300 for
#   the OSD), so a second instance, or a real Ceph on the same host, does not collide:
#     PORT       radosgw (S3)
#     PORT+1     monitor (msgr2)
#     PORT+2..   OSD and client messengers (a range of 30 ports)
# - Daemons run in the foreground (-f) under setsid with their output in log files, so `start`
#   returns without holding the caller's terminal or pipes, and $! is the daemon's own PID.
# - Runs as root without systemd; the daemons stay root (no --setuser), which is fine here.
set -Eeuo pipefail

usage() {
  echo "usage: $0 start DIR PORT | stop DIR" >&2
  exit 2
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Running, and not merely a zombie waiting for an init that may never reap it (CI containers).
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ "$state" != Z* ]]
}

# Wait until a command succeeds, failing early if one of our daemons has died meanwhile.
wait_for() {
  local what=$1 limit=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    check_alive
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "s3-server: $what not ready after ${limit}s" >&2
      return 1
    fi
    sleep 0.3
  done
}

check_alive() {
  local f name
  for f in "$D"/pids/*.pid; do
    [ -e "$f" ] || continue
    if ! alive "$(cat "$f")"; then
      name=$(basename "$f" .pid)
      echo "s3-server: $name exited during start-up; last lines of its log:" >&2
      tail -n 20 "$D/log/$name.out" "$D"/log/*"$name"*.log >&2 2>/dev/null || true
      return 1
    fi
  done
}

# Start one daemon in the foreground, detached from our session, and record its PID.
spawn() {
  local name=$1
  shift
  setsid "$@" -f </dev/null >"$D/log/$name.out" 2>&1 &
  echo $! >"$D/pids/$name.pid"
}

# The process name each pid file must belong to, so a stale pid file whose number has been
# reused by some unrelated process never gets that process killed.
declare -A COMM=([mon]=ceph-mon [osd]=ceph-osd [radosgw]=radosgw)

stop_dir() {
  local f pid name waited=0
  local -a pids=()
  [ -d "$D/pids" ] || return 0
  for name in radosgw osd mon; do
    f="$D/pids/$name.pid"
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    if [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = "${COMM[$name]}" ]; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$f"
  done
  # All at once, with a short grace before SIGKILL: the cluster's data lives in memory and is
  # thrown away, so there is nothing to flush, while a graceful stop of radosgw and the OSD
  # takes 6-7 s of waiting on each other.
  for pid in "${pids[@]}"; do
    while alive "$pid"; do
      if [ "$waited" -eq 10 ]; then
        kill -KILL "${pids[@]}" 2>/dev/null || true
      elif [ "$waited" -ge 300 ]; then
        echo "s3-server: pid $pid still there 30 s after SIGKILL; giving up" >&2
        return 1
      fi
      sleep 0.1
      waited=$((waited + 1))
    done
  done
}

start_dir() {
  local port=$1 t0 fsid mon_port osd_uuid osd_id access secret endpoint
  t0=$(now)
  mon_port=$((port + 1))
  endpoint="http://127.0.0.1:$port"

  for f in "$D"/pids/*.pid; do
    if [ -e "$f" ] && alive "$(cat "$f")"; then
      echo "s3-server: already running in $D (stop it first)" >&2
      exit 1
    fi
  done
  if curl -s -o /dev/null --max-time 2 "$endpoint/"; then
    echo "s3-server: something already answers on $endpoint" >&2
    exit 1
  fi

  # Only ever wipe a folder this script made (or an empty one): DIR is user input.
  if [ -d "$D" ] && [ -n "$(ls -A "$D")" ] && [ ! -e "$D/ceph.conf" ]; then
    echo "s3-server: $D is not empty and not an earlier s3-server folder; refusing to wipe it" >&2
    exit 1
  fi
  rm -rf "$D"
  mkdir -p "$D"/{mon/ceph-a,osd,rgw,log,run,pids}
  trap 'echo "s3-server: start-up failed; stopping what was started" >&2; stop_dir' ERR

  fsid=$(uuidgen)
  cat >"$D/ceph.conf" <<CONF
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$mon_port
public_network = 127.0.0.0/8
ms_bind_ipv6 = false
ms_bind_msgr1 = false
ms_bind_port_min = $((port + 2))
ms_bind_port_max = $((port + 31))
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_pool_default_pg_autoscale_mode = off
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0
run_dir = $D/run
admin_socket = $D/run/\$name.asok
log_file = $D/log/\$name.log
keyring = $D/keyring

[mon]
mon_data = $D/mon/ceph-\$id
mon_allow_pool_delete = true
# Every map change (OSD boot, each of radosgw's pools) otherwise waits a full second for the
# next Paxos round; with one monitor there is nobody to batch with.
paxos_propose_interval = 0.05
paxos_min_wait = 0.01

[osd]
osd_data = $D/osd
osd_objectstore = memstore
memstore_device_bytes = ${LEVERE_S3_MEMSTORE_BYTES:-2147483648}

[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:$port tcp_nodelay=1
# deleted objects' data goes back to the memstore within seconds, not the default two hours
rgw_gc_obj_min_wait = 0
rgw_gc_processor_period = 5
rgw_data = $D/rgw
rgw_dns_name = localhost
# Without this radosgw retries its monitor handshake for 300 s and then exits.
ms_mon_client_mode = crc
# Deleted objects are freed by garbage collection; the default waits two hours, and the OSD
# holds everything in memory, so a long test run would otherwise keep every deleted byte.
rgw_gc_obj_min_wait = 30
rgw_gc_processor_period = 30
CONF
  export CEPH_CONF="$D/ceph.conf"
  # An empty keyring keeps the tools from looking in /etc/ceph and warning.
  : >"$D/keyring"

  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$D/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$D/monmap" >"$D/log/mon-mkfs.out" 2>&1
  spawn mon ceph-mon -i a
  wait_for "monitor" 60 ceph --connect-timeout 5 -s
  echo "s3-server: monitor ready after $(elapsed "$t0")s"

  osd_uuid=$(uuidgen)
  osd_id=$(ceph --connect-timeout 5 osd new "$osd_uuid")
  ceph-osd -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >"$D/log/osd-mkfs.out" 2>&1
  spawn osd ceph-osd -i "$osd_id"
  wait_for "OSD" 120 bash -c 'ceph --connect-timeout 5 osd stat | grep -q "1 up"'
  echo "s3-server: OSD up after $(elapsed "$t0")s"

  spawn radosgw radosgw -n client.rgw.a
  access=$(uuidgen | tr -d - | tr a-f A-F | cut -c1-20)
  secret=$(uuidgen | tr -d -)$(uuidgen | tr -d - | cut -c1-8)
  radosgw-admin user create --uid=levere-test --display-name="levere tests" \
    --access-key="$access" --secret-key="$secret" >"$D/log/user-create.out" 2>&1
  wait_for "radosgw" 180 curl -s -o /dev/null --max-time 2 "$endpoint/"

  cat >"$D/env" <<ENV
export LEVERE_TEST_S3_ENDPOINT=$endpoint
export LEVERE_TEST_S3_ACCESS_KEY=$access
export LEVERE_TEST_S3_SECRET_KEY=$secret
ENV
  trap - ERR
  echo "s3-server: S3 ready on $endpoint after $(elapsed "$t0")s (source $D/env)"
}

[ $# -ge 2 ] || usage
cmd=$1
D=$(realpath -m "$2")
case "$cmd" in
  start)
    [ $# -eq 3 ] || usage
    [[ "$3" =~ ^[0-9]+$ ]] && [ "$3" -ge 1024 ] && [ "$3" -le 65000 ] || {
      echo "s3-server: PORT must be a number between 1024 and 65000" >&2
      exit 2
    }
    start_dir "$3"
    ;;
  stop)
    [ $# -eq 2 ] || usage
    t0=$(now)
    stop_dir
    echo "s3-server: stopped in $(elapsed "$t0")s"
    ;;
  *) usage ;;
esac
