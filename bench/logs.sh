#!/usr/bin/env bash
# Log stream figures, on the release binary and a fresh data directory:
#   ingest : 2 worker tasks write `seq 1 N` as fast as they can; lines/s taken
#            into the stream (from the records' ingest times), lines lost
#            (every number of every task must be there once, or be counted by
#            an explicit drop record), server RSS.
#   follow : a task prints its clock (time.time_ns()) every 2 ms while
#            `wharf logs -f --json` runs; latency = time printed by the CLI
#            reader − time written by the task. p50/p99 while idle and while
#            the spam load runs.
#            The reader is started (python's own start takes 100–200 ms here)
#            before the CLI: otherwise the first lines wait in the fifo for it
#            and are counted as the follow path's latency.
# Usage: bench/logs.sh [N]   (lines per spam task, default 2000000)
#   WHARF=PATH  measure that binary instead of building this checkout
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000000}
if [[ -n ${WHARF:-} ]]; then # another build to compare, e.g. a copy of the binary before a change
  wharf=$(realpath "$WHARF")
else
  cargo build --release -q
  wharf=${CARGO_TARGET_DIR:-$PWD/target}/release/wharf
fi
work=$(mktemp -d)
# A root server runs tasks as nobody, who must pass through to the data directory.
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || continue
    # The server ends a closed follow connection at its next keep-alive (15 s).
    for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && { echo "pid $p ignored SIGTERM for 30 s: killed" >&2; kill -9 "$p" 2>/dev/null || true; }
  done
  [[ -n ${KEEP:-} ]] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
w() { "$wharf" --data "$work/data" "$@"; }

"$wharf" server --data "$work/data" --http 127.0.0.1:0 --api 127.0.0.1:0 2>"$work/server.log" &
server=$!; pids+=("$server")
for _ in $(seq 300); do [[ -f $work/data/api.url ]] && break; sleep 0.1; done

mkdir -p "$work/clock" "$work/spam"
cat >"$work/clock/wharf.toml" <<'EOF'
app = "clock"
[service.clock]
command = ["python3", "-u", "-c", "import time\nwhile True:\n    print(time.time_ns(), flush=True)\n    time.sleep(0.002)"]
EOF
cat >"$work/spam/wharf.toml" <<EOF
app = "spam"
[service.spam]
command = ["sh", "-c", "seq 1 $n; exec sleep 3600"]
replicas = 2
EOF

w deploy "$work/clock" >/dev/null 2>&1
# The follower: the CLI's JSON lines, stamped on arrival by a reader on a fifo.
# The reader opens the fifo itself, once its imports are done, and the CLI's
# open of the fifo waits for that: the CLI starts only when the reader is ready.
mkfifo "$work/follow"
python3 -u -c '
import sys, time, json
for line in open(sys.argv[1]):
    now = time.time_ns()
    try:
        print(int(json.loads(line)["message"]), now, flush=True)
    except Exception:
        print("#", line.strip(), flush=True)
' "$work/follow" >"$work/latency" &
pids+=("$!")
"$wharf" --data "$work/data" logs -f --json -n 0 clock >"$work/follow" &
follower=$!; pids=("$follower" "${pids[@]}") # stopped first: an open follow keeps the server up
sleep 6 # idle samples

t_deploy=$(date +%s%N)
w deploy "$work/spam" >/dev/null 2>&1
tasks=$(w ps --json | python3 -c 'import sys, json; print(" ".join(t["id"] for t in json.load(sys.stdin) if t["service"] == "spam"))')
# Done when each spam task's last line is N (bounded: 10 min).
for _ in $(seq 6000); do
  done=0
  for t in $tasks; do
    last=$(w logs --json -n 1 --task "$t" --source stdout | python3 -c 'import sys, json; print(json.loads(sys.stdin.read() or "{}").get("message", ""))')
    [[ $last == "$n" ]] && done=$((done + 1))
  done
  (( done == 2 )) && break
  sleep 0.1
done
read -r rss hwm < <(awk '/VmRSS/ {r=$2} /VmHWM/ {h=$2} END {print r, h}' "/proc/$server/status")

t_end=$(date +%s%N)
kill "$follower"

# Every spam record, read back from the server in 200 ms pages (bounded answers).
python3 - "$n" "$work/data" "$work/latency" "$t_deploy" "$t_end" "$rss" "$hwm" <<'EOF'
import sys, json, urllib.request
n, data, lat, t_deploy, t_end, rss, hwm = sys.argv[1:]
n, t_deploy, t_end = int(n), int(t_deploy), int(t_end)
api, token = open(f"{data}/api.url").read().strip(), open(f"{data}/token").read().strip()
def get(q):
    req = urllib.request.Request(f"{api}/v1/logs?{q}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as resp:
        for line in resp:
            if line.strip():
                yield json.loads(line)
seen, times = {}, []
for ms in range(t_deploy // 10**6, t_end // 10**6 + 200, 200):
    for r in get(f"service=spam&source=stdout&since={ms}&until={ms + 200}&n=100000000"):
        seen.setdefault(r["task"], set()).add(int(r["message"]))
        times.append(r["time"])
count = len(times)
lost = sum(n - len(s) for s in seen.values()) + n * (2 - len(seen))
dropped = sum(1 for r in get("source=event&n=100000") if r.get("fields", {}).get("kind") == "logs.dropped")
t0, t1 = min(times), max(times)
rate = count / ((t1 - t0) / 1e9)
idle, load, skipped = [], [], 0
for line in open(lat):
    if line.startswith("#"):
        skipped += "records skipped" in line
        continue
    sent, got = map(int, line.split())
    ms = (got - sent) / 1e6
    (load if t0 <= sent <= t1 else idle if sent < t_deploy else []).append(ms)
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] if v else float("nan")
print(f"| lines written | ingested | lines/s ingested | lost | drop records | RSS (HWM) |")
print(f"|---|---|---|---|---|---|")
print(f"| {2 * n:,} | {count:,} | {rate:,.0f} | {lost} | {dropped} | {int(rss) // 1024} MiB ({int(hwm) // 1024} MiB) |")
print()
print(f"| follow latency | samples | p50 | p99 | max |   (follower lag notices: {skipped})")
print(f"|---|---|---|---|---|")
for name, v in (("idle", idle), ("under spam load", load)):
    print(f"| {name} | {len(v)} | {pct(v, .5):.1f} ms | {pct(v, .99):.1f} ms | {max(v, default=float('nan')):.1f} ms |")
EOF
