#!/usr/bin/env bash
# Proxy benchmark: wharf's proxy against nginx and haproxy, in front of the same kind of backend.
#
# For each worker count W (default 1 and 2), all on loopback:
#   - the peers from ../shared/bench/peers.sh with WORKERS=W: a 1-worker nginx backend answering
#     `return 200 "ok\n"`, nginx (upstream keepalive) and haproxy (http-reuse always) in front of it;
#   - one `wharf server --proxy-threads W` per wharf variant, each running the same 1-worker nginx
#     backend as a wharf task (wharf only proxies to tasks it manages), routed at "/";
# then `wrk -t1 -cC --latency` at each concurrency C (default 50 and 200), targets interleaved
# within each round (direct, direct-task, wharf..., nginx, haproxy, direct, ...), >= 3 rounds,
# a short warmup before every measured run. Two "floor" rows bound what any proxy can reach on the
# machine: haproxy in `mode tcp` and `tcp_floor` (crates/proxy/examples: tokio, one task copying
# bytes both ways), each with W workers and one upstream connection per client, no HTTP at all
# (bench/proxy/floors.sh). "direct" is the peers' backend, "direct (task)" the wharf task's
# backend: both are measured to show they are equivalent, and every proxy's rps/direct is against
# its own backend.
#
# Prints one markdown table (medians over the rounds) on stdout; every run's raw figures go to the
# log file (default bench/proxy/last-run.log, see --log).
#
# Usage: bench/proxy.sh [options]
#   --workers "1 2"        worker counts (peers.sh WORKERS, wharf --proxy-threads)
#   --conns "50 200"       wrk connection counts
#   --rounds N             rounds per concurrency (default 3, at least 3 for the record)
#   --duration S           seconds per measured wrk run (default 5)
#   --warmup S             seconds of warmup per target before each run (default 1)
#   --variant NAME=FLAGS   a wharf row: extra `wharf server` flags (repeatable; replaces defaults);
#                          FLAGS starting with @PATH run that wharf binary for the row instead, so two
#                          builds compare in one interleaved run: --variant "before=@/tmp/old/wharf"
#   --log FILE             raw per-run lines (default bench/proxy/last-run.log)
#   --install              as root: apt-get install -y nginx haproxy wrk when they are missing
# Env: WHARF=path/to/wharf (default: `cargo build --release`, then $CARGO_TARGET_DIR or target/),
#      PEERS=path/to/peers.sh (default ../shared/bench/peers.sh beside the repository),
#      BASE_PORT (default 9001; the script uses BASE_PORT .. BASE_PORT+19).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)

# The wharf rows. One entry per row: "NAME=extra wharf server flags". Users run wharf with access
# log and metrics on (the first row); the second shows what they cost.
variants=("wharf=" "wharf (log+metrics off)=--no-access-log --no-metrics")

workers="1 2" conns="50 200" rounds=3 duration=5 warmup=1 install=0
log=$repo/bench/proxy/last-run.log
user_variants=()
while (($#)); do
  case $1 in
    --workers) workers=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --variant) user_variants+=("$2"); shift 2 ;;
    --log) log=$2; shift 2 ;;
    --install) install=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
((${#user_variants[@]})) && variants=("${user_variants[@]}")
for v in "${variants[@]}"; do
  [[ $v == *=* ]] || { echo "--variant wants NAME=FLAGS, got '$v'" >&2; exit 2; }
done
((rounds >= 1 && duration >= 1)) || { echo "--rounds and --duration must be >= 1" >&2; exit 2; }

# --- prerequisites ------------------------------------------------------------------------------
peers=${PEERS:-$repo/../shared/bench/peers.sh}
[[ -f $peers ]] || {
  echo "peers script not found: $peers" >&2
  echo "  it lives in shared/bench/peers.sh beside the repository (\$repo/../shared); set PEERS=... otherwise" >&2
  exit 2
}
missing=()
for t in nginx haproxy wrk curl; do command -v "$t" >/dev/null || missing+=("$t"); done
if ((${#missing[@]})); then
  if ((install)) && [[ $(id -u) == 0 ]]; then
    apt-get update -qq && apt-get install -y nginx haproxy wrk curl
  else
    echo "missing: ${missing[*]}; install them with:" >&2
    echo "  apt-get install -y nginx haproxy wrk curl     (or run this script as root with --install)" >&2
    exit 2
  fi
fi
nginx_bin=$(command -v nginx)

if [[ -z ${WHARF:-} ]]; then
  (cd "$repo" && cargo build --release -q)
  WHARF=${CARGO_TARGET_DIR:-$repo/target}/release/wharf
fi
[[ -x $WHARF ]] || { echo "wharf binary not found or not executable: $WHARF" >&2; exit 2; }
# The tokio floor, beside the wharf binary (built from the same tree).
floor_bin=$(dirname "$WHARF")/examples/tcp_floor
if [[ ! -x $floor_bin ]]; then
  (cd "$repo" && cargo build --release -q -p wharf-proxy --example tcp_floor)
  floor_bin=${CARGO_TARGET_DIR:-$repo/target}/release/examples/tcp_floor
fi

base=${BASE_PORT:-9001}
backend_port=$base nginx_port=$((base + 1)) haproxy_port=$((base + 2))
hatcp_port=$((base + 3)) floor_port=$((base + 4))
for p in $(seq "$base" $((base + 19))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is in use on 127.0.0.1; stop what uses it or set BASE_PORT" >&2; exit 2
  fi
done

# --- lifecycle ----------------------------------------------------------------------------------
work=$(mktemp -d /tmp/wharf-bench-proxy.XXXXXX)
# A root server runs tasks as nobody, who must pass through to the data directory.
chmod 755 "$work"
# The backend tasks write their nginx config and temp files under $work/tasks.
mkdir -p "$work/tasks" && chmod 1777 "$work/tasks"
server_pids=()
peers_dir=
stop_all() {
  # SIGTERM makes a wharf server stop its tasks (our backend nginx) before it exits.
  local p
  for p in "${server_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${server_pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  server_pids=()
  bash "$repo/bench/proxy/floors.sh" stop "$work/floors"
  if [[ -n $peers_dir ]]; then
    WORKERS=1 BACKEND_PORT=$backend_port NGINX_PORT=$nginx_port HAPROXY_PORT=$haproxy_port \
      bash "$peers" stop "$peers_dir" || true
    peers_dir=
  fi
}
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$(dirname "$log")"
: >"$log"
note() { echo "$*" >&2; echo "# $*" >>"$log"; }

wait_200() { # URL → waits up to 30 s for a 200
  local i
  for i in $(seq 300); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1") == 200 ]] && return 0
    sleep 0.1
  done
  echo "no 200 from $1 within 30 s" >&2; return 1
}

# The app that runs the backend as a wharf task. Its env tells the task where to put nginx's files.
make_app() { # DIR
  mkdir -p "$1"
  cp "$repo/bench/proxy/backend.conf.in" "$1/"
  sed -e "s#@NGINX@#$nginx_bin#" -e "s#@TASKS@#$work/tasks#" "$repo/bench/proxy/wharf.toml.in" >"$1/wharf.toml"
}

# start_wharf W INDEX FLAGS → sets wharf_port and task_port
start_wharf() {
  local w=$1 i=$2 flags=$3 data=$work/w$1-$2/data app=$work/w$1-$2/app bin=$WHARF
  if [[ $flags == @* ]]; then
    bin=${flags%% *} flags=${flags#"$bin"} bin=${bin#@}
    [[ -x $bin ]] || { echo "wharf binary not found or not executable: $bin" >&2; return 1; }
  fi
  wharf_port=$((base + 10 + i))
  make_app "$app"
  # shellcheck disable=SC2086 # FLAGS are split on purpose: they are extra server flags.
  "$bin" server --data "$data" --http "127.0.0.1:$wharf_port" --api 127.0.0.1:0 --admin 127.0.0.1:0 \
    --proxy-threads "$w" $flags 2>"$work/w$w-$i/server.log" &
  server_pids+=($!)
  local _
  for _ in $(seq 100); do [[ -f $data/api.url ]] && break; sleep 0.1; done
  [[ -f $data/api.url ]] || { cat "$work/w$w-$i/server.log" >&2; echo "wharf server did not start" >&2; return 1; }
  "$bin" --data "$data" deploy "$app" >"$work/w$w-$i/deploy.log" 2>&1 ||
    { cat "$work/w$w-$i/deploy.log" >&2; return 1; }
  wait_200 "http://127.0.0.1:$wharf_port/"
  task_port=$("$bin" --data "$data" ps --json | grep -o '"port": *[0-9]*' | head -1 | grep -o '[0-9]*$')
  [[ -n $task_port ]] || { echo "cannot find the wharf task's port (wharf ps --json)" >&2; return 1; }
  wait_200 "http://127.0.0.1:$task_port/"
}

# start_floors W: haproxy in TCP mode and the tokio floor, W workers each, in front of the peers'
# backend.
start_floors() {
  bash "$repo/bench/proxy/floors.sh" start "$work/floors" "$1" "$backend_port" "$hatcp_port" "$floor_port" "$floor_bin"
}

# --- measuring ----------------------------------------------------------------------------------
# to_ms VALUE_WITH_UNIT → milliseconds (wrk prints us, ms, s, or m for minutes)
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'
}

# run_wrk URL CONNS SECONDS → prints "rps p50_ms p99_ms errors"
run_wrk() {
  local out rps p50 p99 err
  out=$(wrk -t1 -c"$2" -d"$3"s --latency "$1" 2>&1) || { echo "wrk failed: $out" >&2; return 1; }
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  [[ -n $rps && -n $p50 && -n $p99 ]] || { echo "cannot parse wrk output: $out" >&2; return 1; }
  # Non-2xx answers and socket errors make a run invalid: count them.
  err=$(awk '/Non-2xx or 3xx responses:/ {e += $NF}
             /Socket errors:/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) e += $i}
             END {print e + 0}' <<<"$out")
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $err"
}

median() { sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

results=$work/results # lines: W C TARGET_INDEX ROUND RPS P50 P99 ERR
: >"$results"
names=() urls=() kinds=() # kind: direct | direct-task | wharf | peer; kept per W (same shape each time)

note "wharf proxy benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores: workers [$workers] conns [$conns]" \
  "rounds $rounds, ${duration}s runs, ${warmup}s warmup, wharf $WHARF ($("$WHARF" --version 2>/dev/null || echo '?'))"
for w in $workers; do
  peers_dir=$work/peers-w$w
  WORKERS=$w BACKEND_PORT=$backend_port NGINX_PORT=$nginx_port HAPROXY_PORT=$haproxy_port \
    bash "$peers" start "$peers_dir" >>"$log"
  names=("direct" "direct (task)") urls=("http://127.0.0.1:$backend_port/" "") kinds=(direct direct-task)
  for i in "${!variants[@]}"; do
    v=${variants[$i]}
    start_wharf "$w" "$i" "${v#*=}"
    [[ -n ${urls[1]} ]] || urls[1]="http://127.0.0.1:$task_port/"
    names+=("${v%%=*}") urls+=("http://127.0.0.1:$wharf_port/") kinds+=(wharf)
    note "W=$w ${v%%=*}: server pid ${server_pids[-1]} flags '${v#*=}' proxy :$wharf_port task :$task_port"
  done
  start_floors "$w"
  names+=("floor: haproxy tcp" "floor: tokio tcp") kinds+=(floor floor)
  urls+=("http://127.0.0.1:$hatcp_port/" "http://127.0.0.1:$floor_port/")
  names+=(nginx haproxy) urls+=("http://127.0.0.1:$nginx_port/" "http://127.0.0.1:$haproxy_port/") kinds+=(peer peer)
  for u in "${urls[@]}"; do wait_200 "$u"; done
  for c in $conns; do
    for r in $(seq "$rounds"); do
      for t in "${!names[@]}"; do
        wrk -t1 -c"$c" -d"$warmup"s "${urls[$t]}" >/dev/null 2>&1 || true
        fig=$(run_wrk "${urls[$t]}" "$c" "$duration")
        echo "$w $c $t $r $fig" >>"$results"
        read -r rps p50 p99 err <<<"$fig"
        printf 'W=%s c=%s round=%s %-24s rps=%s p50=%sms p99=%sms errors=%s\n' \
          "$w" "$c" "$r" "${names[$t]}" "$rps" "$p50" "$p99" "$err" | tee -a "$log" >&2
      done
    done
  done
  stop_all
done

# --- the table ----------------------------------------------------------------------------------
fmt() { awk -v x="$1" -v d="$2" 'BEGIN {printf "%.*f", d, x}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
nginx_t=$((${#names[@]} - 2)) haproxy_t=$((${#names[@]} - 1)) floor_t=$((${#names[@]} - 3)) # the last: floors, nginx, haproxy
echo
echo "| W | c | target | rps | rps min–max | p50 ms | p99 ms | rps / best peer | p99 / best peer | rps / tcp floor | rps / direct | target met |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for w in $workers; do
  for c in $conns; do
    med() { awk -v w="$w" -v c="$c" -v t="$1" -v k="$2" '$1 == w && $2 == c && $3 == t {print $k}' "$results" | median; }
    # The better of nginx and haproxy: the higher rps, the lower p99 (issue 20's bar).
    best_rps=$(printf '%s\n' "$(med "$nginx_t" 5)" "$(med "$haproxy_t" 5)" | sort -g | tail -1)
    best_p99=$(printf '%s\n' "$(med "$nginx_t" 7)" "$(med "$haproxy_t" 7)" | sort -g | head -1)
    f_rps=$(med "$floor_t" 5)
    d_rps=$(med 0 5) dt_rps=$(med 1 5)
    for t in "${!names[@]}"; do
      rps=$(med "$t" 5) p50=$(med "$t" 6) p99=$(med "$t" 7)
      errs=$(awk -v w="$w" -v c="$c" -v t="$t" '$1 == w && $2 == c && $3 == t {e += $8} END {print e + 0}' "$results")
      vs_floor=""
      case ${kinds[$t]} in
        direct|direct-task) vs_rps="" vs_p99="" vs_direct="" ;;
        wharf) vs_rps=$(ratio "$rps" "$best_rps") vs_p99=$(ratio "$p99" "$best_p99") vs_direct=$(ratio "$rps" "$dt_rps")
          vs_floor=$(ratio "$rps" "$f_rps") ;;
        peer|floor) vs_rps=$(ratio "$rps" "$best_rps") vs_p99=$(ratio "$p99" "$best_p99") vs_direct=$(ratio "$rps" "$d_rps")
          vs_floor=$(ratio "$rps" "$f_rps") ;;
      esac
      met=""
      if [[ ${kinds[$t]} == wharf ]]; then
        # Target (issue 20): rps >= 1.0x and p99 <= 1.0x the better peer's, and rps >= 0.9x the tokio floor's.
        met=$(awk -v r="$vs_rps" -v p="$vs_p99" -v f="$vs_floor" 'BEGIN {
          print ((r >= 1.0 && p <= 1.0 && f >= 0.9) ? "yes" : "no") }')
      fi
      name=${names[$t]}
      ((errs)) && name="$name ($errs errors)"
      if [[ ${kinds[$t]} == wharf ]]; then name="**$name**"; fi
      # The spread over the rounds: on a shared machine a change smaller than it is noise.
      range=$(awk -v w="$w" -v c="$c" -v t="$t" '$1 == w && $2 == c && $3 == t {
        if (n++ == 0 || $5 < lo) lo = $5; if (n == 1 || $5 > hi) hi = $5 } END {printf "%.0f–%.0f", lo, hi}' "$results")
      echo "| $w | $c | $name | $(fmt "$rps" 0) | $range | $(fmt "$p50" 2) | $(fmt "$p99" 2) | $vs_rps | $vs_p99 | $vs_floor | $vs_direct | $met |"
    done
  done
done
echo
echo "Medians (and min–max of rps) of $rounds interleaved rounds, wrk -t1 -d${duration}s --latency, ${warmup}s warmup per run;" \
  "rps/direct is against each proxy's own backend (\"direct\" for the peers, \"direct (task)\" for wharf)." \
  "Best peer: the higher rps and the lower p99 of nginx and haproxy; tcp floor: the tokio floor." "Raw runs: $log"
