#!/usr/bin/env bash
# Where a proxy's CPU goes, per request: the same setup as bench/proxy.sh (peers + a wharf server
# whose task is the same nginx backend, and the floors of bench/proxy/floors.sh), one worker count,
# one concurrency, then for wharf, nginx, haproxy and the floors under `wrk -t1 -cC`:
#   - CPU time, context switches and syscalls per request (perf stat with software events and
#     syscall tracepoints, attached to the proxy's processes only);
#   - for wharf, a call-graph profile (perf record -e cpu-clock --call-graph dwarf), its top
#     functions by self time and, if inferno is installed (cargo install inferno), a flamegraph.
# Usage: bench/proxy/profile.sh [OUT_DIR]   env: W=1 C=50 D=5 WHARF=... PEERS=... BASE_PORT=9101
# Needs perf (apt-get install -y linux-perf); hardware counters are not needed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$repo/bench/proxy/profile-out}
W=${W:-1} C=${C:-50} D=${D:-5} base=${BASE_PORT:-9101}
peers=${PEERS:-$repo/../shared/bench/peers.sh}
[[ -f $peers ]] || { echo "peers script not found: $peers (shared/bench beside the repository)" >&2; exit 2; }
for t in nginx haproxy wrk curl perf; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y nginx haproxy wrk curl linux-perf" >&2; exit 2; }
done
if [[ -z ${WHARF:-} ]]; then
  (cd "$repo" && cargo build --release -q)
  WHARF=${CARGO_TARGET_DIR:-$repo/target}/release/wharf
fi
floor_bin=$(dirname "$WHARF")/examples/tcp_floor
if [[ ! -x $floor_bin ]]; then
  (cd "$repo" && cargo build --release -q -p wharf-proxy --example tcp_floor)
  floor_bin=${CARGO_TARGET_DIR:-$repo/target}/release/examples/tcp_floor
fi
mkdir -p "$out"
work=$(mktemp -d /tmp/wharf-profile.XXXXXX)
# A root server runs tasks as nobody, who must pass through to the data directory.
chmod 755 "$work"
# The backend tasks write their nginx config and temp files under $work/tasks.
mkdir -p "$work/tasks" && chmod 1777 "$work/tasks"
server=
cleanup() {
  if [[ -n $server ]]; then
    kill -TERM "$server" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server" 2>/dev/null || true
  fi
  BACKEND_PORT=$base NGINX_PORT=$((base + 1)) HAPROXY_PORT=$((base + 2)) bash "$peers" stop "$work/peers" || true
  bash "$repo/bench/proxy/floors.sh" stop "$work/floors" || true
  rm -rf "$work"
}
trap cleanup EXIT
wait_200() { for _ in $(seq 300); do [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1") == 200 ]] && return 0; sleep 0.1; done; return 1; }

WORKERS=$W BACKEND_PORT=$base NGINX_PORT=$((base + 1)) HAPROXY_PORT=$((base + 2)) bash "$peers" start "$work/peers" >/dev/null
bash "$repo/bench/proxy/floors.sh" start "$work/floors" "$W" "$base" $((base + 3)) $((base + 4)) "$floor_bin"
nginx_bin=$(command -v nginx)
mkdir -p "$work/app"
cp "$repo/bench/proxy/backend.conf.in" "$work/app/"
sed -e "s#@NGINX@#$nginx_bin#" -e "s#@TASKS@#$work/tasks#" "$repo/bench/proxy/wharf.toml.in" >"$work/app/wharf.toml"
wport=$((base + 10))
"$WHARF" server --data "$work/data" --http "127.0.0.1:$wport" --api 127.0.0.1:0 --admin 127.0.0.1:0 --proxy-threads "$W" 2>"$work/server.log" &
server=$!
for _ in $(seq 100); do [[ -f $work/data/api.url ]] && break; sleep 0.1; done
"$WHARF" --data "$work/data" deploy "$work/app" >/dev/null
wait_200 "http://127.0.0.1:$wport/"

nginx_master=$(cat "$work/peers/nginx.pid")
nginx_workers=$(pgrep -P "$nginx_master" | paste -sd,)
haproxy_pid=$(cat "$work/peers/haproxy.pid")

sc=(read write readv writev recvfrom sendto recvmsg sendmsg epoll_wait epoll_pwait epoll_ctl futex sched_yield accept4 mmap munmap madvise brk)
events=cpu-clock,context-switches,raw_syscalls:sys_enter
for s in "${sc[@]}"; do events+=",syscalls:sys_enter_$s"; done

# measure NAME URL PIDS → one line: per-request figures
measure() {
  local name=$1 url=$2 pids=$3 rps file=${1//[^a-zA-Z0-9]/_}
  wrk -t1 -c"$C" -d1s "$url" >/dev/null 2>&1
  wrk -t1 -c"$C" -d$((D + 2))s --latency "$url" >"$out/wrk-$file.txt" 2>&1 &
  local wrk_pid=$!
  sleep 1
  perf stat -x, -e "$events" -p "$pids" -- sleep "$D" 2>"$out/stat-$file.csv"
  wait "$wrk_pid"
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out/wrk-$file.txt")
  awk -F, -v n="$name" -v rps="$rps" -v d="$D" '
    { v[$3] = $1 }
    END {
      req = rps * d
      printf "| %s | %.0f | %.1f | %.2f | %.2f |", n, rps, v["cpu-clock"] * 1000 / req, v["context-switches"] / req, v["raw_syscalls:sys_enter"] / req
      for (k in v) if (k ~ /^syscalls:sys_enter_/ && v[k] / req >= 0.01) { s = k; sub(/^syscalls:sys_enter_/, "", s); printf " %s %.2f", s, v[k] / req }
      print " |"
    }' "$out/stat-$file.csv"
}

{
  echo "W=$W c=$C, ${D}s windows, $(date -u +%Y-%m-%dT%H:%M:%SZ), wharf $WHARF"
  echo
  echo "| proxy | rps | CPU us/request | ctx switches/request | syscalls/request | main syscalls/request |"
  echo "|---|---|---|---|---|---|"
  measure wharf "http://127.0.0.1:$wport/" "$server"
  measure nginx "http://127.0.0.1:$((base + 1))/" "$nginx_workers"
  measure haproxy "http://127.0.0.1:$((base + 2))/" "$haproxy_pid"
  measure "floor: haproxy tcp" "http://127.0.0.1:$((base + 3))/" "$(cat "$work/floors/hatcp.pid")"
  measure "floor: tokio tcp" "http://127.0.0.1:$((base + 4))/" "$(cat "$work/floors/tcp_floor.pid")"
} | tee "$out/summary.md"

# Call-graph profile of wharf's proxy.
wrk -t1 -c"$C" -d$((D + 2))s "http://127.0.0.1:$wport/" >/dev/null 2>&1 &
wrk_pid=$!
sleep 1
perf record -q -e cpu-clock -F 1999 --call-graph dwarf,32768 -p "$server" -o "$out/perf.data" -- sleep "$D" 2>/dev/null
wait "$wrk_pid"
perf report -i "$out/perf.data" --no-children --stdio --sort sym 2>/dev/null | awk '/^ +[0-9]/ && n++ < 40' >"$out/top-self.txt"
perf report -i "$out/perf.data" --no-children --stdio --sort dso 2>/dev/null | awk '/^ +[0-9]/ && n++ < 10' >"$out/top-dso.txt"
perf script -i "$out/perf.data" 2>/dev/null >"$out/perf.script"
if command -v inferno-collapse-perf >/dev/null; then
  inferno-collapse-perf <"$out/perf.script" >"$out/folded.txt"
  inferno-flamegraph <"$out/folded.txt" >"$out/flamegraph.svg"
fi
echo; echo "top self time (wharf):"; head -25 "$out/top-self.txt"
echo; echo "by object:"; cat "$out/top-dso.txt"
echo; echo "files in $out"
