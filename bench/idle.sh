#!/usr/bin/env bash
# What an idle server costs, measured from outside, on the release binary:
# for each N, a fresh server (its own data directory, loopback ports below
# 32768) runs an app of N idle demo web tasks (`wharf demo`: quiet, answers
# /health; default health checks, every 5 s), waits until every task is
# healthy, lets it settle, then samples the server's own CPU time
# (utime + stime of /proc/PID/stat, children not included) over a window.
# Prints per N: % of one core, context switches/s of the server's threads
# (how often it wakes), TIME_WAIT sockets to or from the server's and its
# tasks' ports at the end of the window (`ss -tan state time-wait`: a new
# connection per health check leaves one each), and the server's RSS.
# Usage: bench/idle.sh [--tasks "0 100 1000"] [--window SECONDS] [--port BASE] [--json]
#   --tasks   task counts to measure, one fresh server each (default "0 100 1000")
#   --window  sampling window in seconds (default 60)
#   --port    first of the 5 loopback ports the server listens on (default 21700)
#   --json    one JSON object per N instead of a markdown table
#   --perf DIR  also `perf record -g` the server over each window into DIR/idle-N.perf data
#               (samples then say where its CPU goes: `perf report -i DIR/idle-N.perf`)
#   WHARF=PATH  measure that binary instead of building this checkout
# Bounded: each N waits at most 120 s + N × 0.5 s for health, and each
# server gets 120 s to stop its tasks before everything left is killed.
set -euo pipefail
cd "$(dirname "$0")/.."
tasks="0 100 1000" window=60 base=21700 json=
while (( $# )); do
  case $1 in
    --tasks) tasks=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --port) base=$2; shift 2 ;;
    --json) json=1; shift ;;
    --perf) perf_dir=$(realpath "$2"); shift 2 ;;
    *) echo "usage: $0 [--tasks \"0 100 1000\"] [--window SECONDS] [--port BASE] [--json] [--perf DIR]" >&2; exit 2 ;;
  esac
done
(( base >= 1024 && base + 4 < 32768 )) || { echo "--port: 1024..32763" >&2; exit 2; }
if [[ -n ${WHARF:-} ]]; then # another build to compare, e.g. a copy of the binary before a change
  wharf=$(realpath "$WHARF")
else
  cargo build --release -q -p wharf
  wharf=${CARGO_TARGET_DIR:-$PWD/target}/release/wharf
fi
tck=$(getconf CLK_TCK)
work=$(mktemp -d)
# A root server runs tasks as nobody, who must pass through to the data directory.
chmod 755 "$work"
server=
stop_server() { # SIGTERM stops every task gracefully; bounded, then by force
  [[ -n $server ]] || return 0
  kill "$server" 2>/dev/null || true
  for _ in $(seq 1200); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$server" 2>/dev/null; then
    echo "server $server still up after 120 s: killed" >&2
    kill -9 "$server" 2>/dev/null || true
  fi
  wait "$server" 2>/dev/null || true
  # Tasks of a killed server belong to no one: stop them by their driver id.
  local id_file=$work/data/tasks/driver-id
  if [[ -f $id_file ]]; then
    local id; id=$(cat "$id_file")
    for e in /proc/[0-9]*/environ; do
      if { tr "\0" "\n" <"$e" | grep -qx "WHARF_DRIVER=$id"; } 2>/dev/null; then
        p=${e#/proc/}; kill -9 "${p%/environ}" 2>/dev/null || true
      fi
    done
  fi
  server=
}
cleanup() { stop_server; [[ -n ${KEEP:-} ]] && echo "kept $work" >&2 || rm -rf "$work"; }
trap cleanup EXIT
w() { "$wharf" --data "$work/data" "$@"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime (no field has spaces before: comm is "wharf")
ctx_switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'; }

# The app: N demo web tasks, at most 250 per service.
write_app() { # N DIR
  local dir=$2 i=0 left=$1
  mkdir -p "$dir"
  echo 'app = "idle"' >"$dir/wharf.toml"
  while (( left > 0 )); do
    local k=$(( left < 250 ? left : 250 ))
    i=$((i + 1)); left=$((left - k))
    cat >>"$dir/wharf.toml" <<EOF
[service.s$i]
command = ["$wharf", "demo", "--name", "s$i"]
port = $((8000 + i))
replicas = $k
health = { path = "/health" }
EOF
  done
}

[[ -n $json ]] || { echo "| tasks | window | server CPU (% of one core) | context switches/s | TIME_WAIT sockets | server RSS |"; echo "|---|---|---|---|---|---|"; }
for n in $tasks; do
  rm -rf "$work/data" "$work/app"
  "$wharf" server --data "$work/data" --http "127.0.0.1:$base" --api "127.0.0.1:$((base + 1))" \
    --admin "127.0.0.1:$((base + 2))" --internal "127.0.0.1:$((base + 3))" --dns "127.0.0.1:$((base + 4))" \
    2>"$work/server-$n.log" &
  server=$!
  for _ in $(seq 300); do [[ -f $work/data/api.url ]] && break; sleep 0.1; done
  [[ -f $work/data/api.url ]] || { echo "the server did not start: see $work/server-$n.log" >&2; KEEP=1; exit 1; }
  if (( n > 0 )); then # N = 0: no app at all
    write_app "$n" "$work/app"
    w deploy --detach "$work/app" >/dev/null 2>&1
  fi
  limit=$(( $(date +%s) + 120 + n / 2 ))
  while :; do
    healthy=$(w ps --json | python3 -c 'import sys, json; print(sum(1 for t in json.load(sys.stdin) if t.get("health") == "healthy"))')
    (( healthy >= n )) && break
    (( $(date +%s) < limit )) || { echo "N=$n: only $healthy healthy tasks after $((120 + n / 2)) s" >&2; KEEP=1; exit 1; }
    sleep 1
  done
  # Settle: the deploy's last steps, first snapshots, and the usage sampler's brisk
  # pace that our own `wharf ps` above asked for (it lasts 10 s after the last read).
  sleep 15
  c0=$(cpu_ticks "$server") x0=$(ctx_switches "$server") t0=$(date +%s%N)
  if [[ -n ${perf_dir:-} ]]; then
    perf record -q -F 499 ${PERF_CALLGRAPH:--g} -p "$server" -o "$perf_dir/idle-$n.perf" -- sleep "$window" 2>/dev/null
  else
    sleep "$window"
  fi
  c1=$(cpu_ticks "$server") x1=$(ctx_switches "$server") t1=$(date +%s%N)
  # TIME_WAIT sockets of this server: to or from its listeners or its tasks' ports.
  ports=$(w ps --json | python3 -c 'import sys, json; print(" ".join(str(t["port"]) for t in json.load(sys.stdin) if t.get("port")))')
  tw=$(ss -Htan state time-wait | python3 -c '
import sys
ports = {int(p) for p in sys.argv[1:]}
print(sum(1 for l in sys.stdin if ports & {int(a.rsplit(":", 1)[1]) for a in l.split()[2:4]}))' \
    $ports $(seq "$base" $((base + 4))))
  rss=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$server/status")
  read -r pct cps secs < <(python3 -c "
dt = ($t1 - $t0) / 1e9
print(f'{($c1 - $c0) / $tck / dt * 100:.2f} {($x1 - $x0) / dt:.0f} {dt:.1f}')")
  if [[ -n $json ]]; then
    echo "{\"tasks\": $n, \"window_s\": $secs, \"cpu_pct\": $pct, \"ctx_switches_per_s\": $cps, \"time_wait\": $tw, \"rss_mib\": $rss}"
  else
    echo "| $n | ${secs} s | $pct % | $cps | $tw | $rss MiB |"
  fi
  stop_server
done
