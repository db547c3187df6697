#!/usr/bin/env bash
# The dashboard's overview with N tasks, timed from outside on the release
# binary: a fresh server (its own data directory, loopback ports below
# 32768) runs an app of N demo web tasks in services of 10, waits until
# every task is healthy, logs in to /ui with the API token, then GETs /ui
# R times one after another (curl, a new connection each) and prints the
# median, p90 and max of the time to the answer's last byte. For
# comparison, the same for GET /v1/status and GET /v1/top: the two views
# the overview reads, so the difference is the page's own rendering.
# Usage: bench/ui.sh [--tasks N] [--rounds R] [--port BASE]
#   --tasks   tasks in the app (default 100)
#   --rounds  requests per URL (default 200)
#   --port    first of the 5 loopback ports the server listens on (default 21800)
#   WHARF=PATH  measure that binary instead of building this checkout
# Bounded: health is waited for at most 120 s + N × 0.5 s; the server gets
# 120 s to stop its tasks before everything left is killed.
set -euo pipefail
cd "$(dirname "$0")/.."
n=100 rounds=200 base=21800
while (( $# )); do
  case $1 in
    --tasks) n=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --port) base=$2; shift 2 ;;
    *) echo "usage: $0 [--tasks N] [--rounds R] [--port BASE]" >&2; exit 2 ;;
  esac
done
(( base >= 1024 && base + 4 < 32768 )) || { echo "--port: 1024..32763" >&2; exit 2; }
(( n >= 1 && rounds >= 1 && rounds <= 10000 )) || { echo "--tasks >= 1, --rounds 1..10000" >&2; exit 2; }
if [[ -n ${WHARF:-} ]]; then
  wharf=$(realpath "$WHARF")
else
  cargo build --release -q -p wharf
  wharf=${CARGO_TARGET_DIR:-$PWD/target}/release/wharf
fi
work=$(mktemp -d)
chmod 755 "$work" # a root server runs tasks as nobody, who must pass through
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
  local id_file=$work/data/tasks/driver-id
  if [[ -f $id_file ]]; then # tasks of a killed server: stop them by their driver id
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

# The app: N demo web tasks, 10 per service.
mkdir -p "$work/app"
echo 'app = "bench"' >"$work/app/wharf.toml"
i=0 left=$n
while (( left > 0 )); do
  k=$(( left < 10 ? left : 10 )); i=$((i + 1)); left=$((left - k))
  cat >>"$work/app/wharf.toml" <<TOML
[service.s$i]
command = ["$wharf", "demo", "--name", "s$i"]
port = $((8000 + i))
replicas = $k
health = { path = "/health" }
TOML
done

"$wharf" server --data "$work/data" --http "127.0.0.1:$base" --api "127.0.0.1:$((base + 1))" \
  --admin "127.0.0.1:$((base + 2))" --internal "127.0.0.1:$((base + 3))" --dns "127.0.0.1:$((base + 4))" \
  2>"$work/server.log" &
server=$!
for _ in $(seq 300); do [[ -f $work/data/api.url ]] && break; sleep 0.1; done
[[ -f $work/data/api.url ]] || { echo "the server did not start: see $work/server.log" >&2; KEEP=1; exit 1; }
w deploy --detach "$work/app" >/dev/null 2>&1
limit=$(( $(date +%s) + 120 + n / 2 ))
while :; do
  healthy=$(w ps --json | python3 -c 'import sys, json; print(sum(1 for t in json.load(sys.stdin) if t.get("health") == "healthy"))')
  (( healthy >= n )) && break
  (( $(date +%s) < limit )) || { echo "only $healthy healthy tasks after $((120 + n / 2)) s" >&2; KEEP=1; exit 1; }
  sleep 1
done
sleep 5 # the deployment's last steps

api=$(cat "$work/data/api.url") token=$(cat "$work/data/token")
jar=$work/cookies
curl -sf -o /dev/null -c "$jar" --data-urlencode "token=$token" "$api/ui/login"
grep -q wharf_ui "$jar" || { echo "login failed" >&2; KEEP=1; exit 1; }
rows=$(curl -sf -b "$jar" "$api/ui" | grep -o 'data-service=' | wc -l)

# One URL, R times: the times to the last byte in ms, then the summary.
timed() { # LABEL CURL-ARGS...
  local label=$1; shift
  for _ in $(seq 5); do curl -sf -o /dev/null "$@"; done # warm up
  for _ in $(seq "$rounds"); do curl -sf -o /dev/null -w '%{time_total}\n' "$@"; done | python3 -c "
import sys
t = sorted(float(x) * 1000 for x in sys.stdin)
p = lambda q: t[min(len(t) - 1, int(q * len(t)))]
print(f'| $label | {len(t)} | {p(0.5):.2f} ms | {p(0.9):.2f} ms | {t[-1]:.2f} ms |')"
}
echo "$n tasks in $i services ($rows rows on the overview), $rounds requests each, one at a time"
echo
echo "| request | n | median | p90 | max |"
echo "|---|---|---|---|---|"
timed "GET /ui (overview page)" -b "$jar" "$api/ui"
timed "GET /v1/status" -H "Authorization: Bearer $token" "$api/v1/status"
timed "GET /v1/top" -H "Authorization: Bearer $token" "$api/v1/top"
