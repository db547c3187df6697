#!/usr/bin/env bash
# Startup figures for the foundation, on the release binary:
#   up     : `wharf up examples/convergence` → first 200 through the proxy
#   restart: `kill -9` of a server running the example → restarted → first 200 again
# Usage: bench/startup.sh [ROUNDS]   (default 5; prints each round and the median)
#   WHARF=PATH  measure that binary instead of building this checkout
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
if [[ -n ${WHARF:-} ]]; then # another build to compare, e.g. a copy of the binary before a change
  wharf=$(realpath "$WHARF")
else
  cargo build --release -q -p wharf
  wharf=${CARGO_TARGET_DIR:-$PWD/target}/release/wharf
fi
work=$(mktemp -d)
# A root server runs tasks as nobody, who must pass through to the data directory.
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  # Tasks of a server killed with -9 belong to no one: stop them by their driver id.
  for id_file in "$work"/*/data/tasks/driver-id "$work"/*/app/.wharf/tasks/driver-id; do
    [[ -f $id_file ]] || continue
    id=$(cat "$id_file")
    for e in /proc/[0-9]*/environ; do
      if { tr "\0" "\n" <"$e" | grep -qx "WHARF_DRIVER=$id"; } 2>/dev/null; then
        p=${e#/proc/}; kill -9 "${p%/environ}" 2>/dev/null || true
      fi
    done
  done
  rm -rf "$work"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
wait_200() { # URL → waits (max 30 s) until it answers 200
  local end=$(( $(now_ms) + 30000 ))
  until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1") == 200 ]]; do
    (( $(now_ms) < end )) || { echo "no 200 from $1 within 30 s" >&2; return 1; }
    sleep 0.01
  done
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

up=() restart=()
for i in $(seq "$rounds"); do
  d=$work/$i; mkdir -p "$d"; cp -r examples/convergence "$d/app"
  port=$(( 19000 + i ))
  t0=$(now_ms)
  "$wharf" up "$d/app" --http 127.0.0.1:$port -q 2>"$d/up.log" &
  pid=$!; pids+=("$pid")
  wait_200 "http://127.0.0.1:$port/api/health"
  up+=( $(( $(now_ms) - t0 )) )
  kill -INT "$pid"; wait "$pid" || true

  "$wharf" server --data "$d/data" --http 127.0.0.1:$port --api 127.0.0.1:0 2>"$d/server.log" &
  pid=$!; pids+=("$pid")
  until [[ -f $d/data/api.url ]]; do sleep 0.05; done
  "$wharf" --data "$d/data" deploy "$d/app" >/dev/null 2>&1
  wait_200 "http://127.0.0.1:$port/api/health"
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  t0=$(now_ms)
  "$wharf" server --data "$d/data" --http 127.0.0.1:$port --api 127.0.0.1:0 2>>"$d/server.log" &
  pid=$!; pids+=("$pid")
  wait_200 "http://127.0.0.1:$port/api/health"
  restart+=( $(( $(now_ms) - t0 )) )
  kill -TERM "$pid"; wait "$pid" || true
  echo "round $i: up → first 200 ${up[-1]} ms; kill -9 → restart → first 200 ${restart[-1]} ms"
done
echo "median over $rounds rounds: up → first 200 $(printf '%s\n' "${up[@]}" | median) ms;" \
     "restart → first 200 $(printf '%s\n' "${restart[@]}" | median) ms"
