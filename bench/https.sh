#!/usr/bin/env bash
# HTTPS benchmark: wharf's TLS termination against nginx's, in front of the same backend.
#
# One throwaway CA and one ECDSA P-256 leaf for `localhost` (openssl), served by both. For each
# worker count W (default 1 and 2), all on loopback:
#   - `wharf server --https --proxy-threads W` running the bench backend (bench/proxy's 1-worker
#     nginx answering "ok") as a wharf task, routed at the host `localhost` with the certificate;
#   - nginx with W workers terminating TLS (TLS 1.2 and 1.3, http2, shared session cache,
#     tickets) and proxying with upstream keepalive to that same task: one backend for both;
# then, targets interleaved within each round (wharf..., nginx, wharf..., ...), >= 3 rounds, a
# short warmup before every measured run:
#   - keep-alive HTTPS/1.1:  `wrk -t1 -cC --latency` (rps, p99);
#   - HTTP/2:                `h2load -t1 -cC -m10` (rps);
#   - new handshakes, full:  `h2load --h1 -cC -n C` one connection per client, repeated for the
#                            run's duration (h2load keeps one session per client, so only a
#                            client's first connection is a full handshake: each run starts fresh);
#   - new handshakes, resumed: `h2load --h1 -cC -nN` with `Connection: close`: every request on a
#                            new connection, which resumes the client's session (TLS 1.3 ticket).
#                            A count, not a duration: h2load -D never ends with Connection: close.
# Each handshake is followed by one GET "/" through to the backend, for both servers.
#
# Prints one markdown table (medians over the rounds, ratio wharf / nginx per row) on stdout;
# every run's raw figures go to the log file (default bench/https/last-run.log, see --log).
#
# Usage: bench/https.sh [options]
#   --workers "1 2"        worker counts (nginx worker_processes, wharf --proxy-threads)
#   --conns N              client connections for every load (default 50)
#   --rounds N             rounds (default 3, at least 3 for the record)
#   --duration S           seconds per measured run (default 5)
#   --warmup S             seconds of warmup per target before each run (default 1)
#   --handshakes N         resumed handshakes per measured run (default 10000; warmup: N/10)
#   --variant NAME=FLAGS   a wharf row: extra `wharf server` flags (repeatable; replaces the
#                          default); FLAGS starting with @PATH run that wharf binary instead
#   --log FILE             raw per-run lines (default bench/https/last-run.log)
#   --install              as root: apt-get install -y nginx wrk nghttp2-client when missing
# Env: WHARF=path/to/wharf (default: `cargo build --release`, then $CARGO_TARGET_DIR or target/),
#      BASE_PORT (default 9101; the script uses BASE_PORT .. BASE_PORT+19).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)

variants=("wharf=")
workers="1 2" conns=50 rounds=3 duration=5 warmup=1 handshakes=10000 install=0
log=$repo/bench/https/last-run.log
user_variants=()
while (($#)); do
  case $1 in
    --workers) workers=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --handshakes) handshakes=$2; shift 2 ;;
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
((rounds >= 1 && rounds <= 100 && duration >= 1 && duration <= 600 && warmup >= 0 && warmup <= 60)) ||
  { echo "--rounds must be 1..100, --duration 1..600, --warmup 0..60" >&2; exit 2; }
((conns >= 1 && conns <= 4096 && handshakes >= conns && handshakes <= 10000000)) ||
  { echo "--conns must be 1..4096, --handshakes at least --conns and at most 10^7" >&2; exit 2; }

# --- prerequisites ------------------------------------------------------------------------------
missing=()
for t in nginx wrk h2load openssl curl; do command -v "$t" >/dev/null || missing+=("$t"); done
if ((${#missing[@]})); then
  if ((install)) && [[ $(id -u) == 0 ]]; then
    apt-get update -qq && apt-get install -y nginx wrk nghttp2-client openssl curl
  else
    echo "missing: ${missing[*]}; install them with:" >&2
    echo "  apt-get install -y nginx wrk nghttp2-client openssl curl   (or run this script as root with --install)" >&2
    exit 2
  fi
fi
nginx_bin=$(command -v nginx)

if [[ -z ${WHARF:-} ]]; then
  (cd "$repo" && cargo build --release -q)
  WHARF=${CARGO_TARGET_DIR:-$repo/target}/release/wharf
fi
[[ -x $WHARF ]] || { echo "wharf binary not found or not executable: $WHARF" >&2; exit 2; }

base=${BASE_PORT:-9101}
nginx_port=$base
for p in $(seq "$base" $((base + 19))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is in use on 127.0.0.1; stop what uses it or set BASE_PORT" >&2; exit 2
  fi
done

# --- lifecycle ----------------------------------------------------------------------------------
work=$(mktemp -d /tmp/wharf-bench-https.XXXXXX)
# A root server runs tasks as nobody, who must pass through to the data directory and read the
# certificate (wharf reads it itself; the mode only matters for the tasks' scratch directory).
chmod 755 "$work"
mkdir -p "$work/tasks" && chmod 1777 "$work/tasks"
server_pids=()
nginx_pidfile=
stop_all() {
  local p
  if [[ -n $nginx_pidfile && -f $nginx_pidfile ]]; then
    p=$(cat "$nginx_pidfile")
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  fi
  nginx_pidfile=
  # SIGTERM makes a wharf server stop its tasks (the backend nginx) before it exits.
  for p in "${server_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${server_pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  server_pids=()
}
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$(dirname "$log")"
: >"$log"
note() { echo "$*" >&2; echo "# $*" >>"$log"; }

# --- the certificate ----------------------------------------------------------------------------
# A throwaway CA and an ECDSA P-256 leaf for localhost (the name wrk and h2load send as SNI).
certs=$work/certs
mkdir -p "$certs"
(
  cd "$certs"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=wharf bench CA" -out ca.pem
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out leaf.key
  openssl req -new -key leaf.key -subj /CN=localhost -out leaf.csr
  printf '%s\n' "subjectAltName=DNS:localhost" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 \
    -extfile leaf.ext -out leaf.pem
  cat leaf.pem ca.pem >chain.pem
) >/dev/null 2>"$work/certs.log" || { cat "$work/certs.log" >&2; echo "cannot make the certificate" >&2; exit 1; }
chmod 644 "$certs"/*

wait_200() { # URL → waits up to 30 s for a 200 over HTTPS, trusting the bench CA
  local i
  for i in $(seq 300); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --cacert "$certs/ca.pem" --max-time 1 "$1") == 200 ]] && return 0
    sleep 0.1
  done
  echo "no 200 from $1 within 30 s" >&2; return 1
}

# The app: the proxy benchmark's backend task, routed at host localhost with the certificate.
make_app() { # DIR
  mkdir -p "$1"
  cp "$repo/bench/proxy/backend.conf.in" "$1/"
  sed -e "s#@NGINX@#$nginx_bin#" -e "s#@TASKS@#$work/tasks#" \
    -e "s#^\"/\" = \"be\"#\"localhost\" = { service = \"be\", tls = { cert = \"$certs/chain.pem\", key = \"$certs/leaf.key\" } }#" \
    "$repo/bench/proxy/wharf.toml.in" >"$1/wharf.toml"
  grep -q '^"localhost"' "$1/wharf.toml" || { echo "cannot set the route in $1/wharf.toml" >&2; return 1; }
}

# start_wharf W INDEX FLAGS → sets wharf_port and task_port
start_wharf() {
  local w=$1 i=$2 flags=$3 dir=$work/w$1-$2 bin=$WHARF
  local data=$dir/data app=$dir/app
  if [[ $flags == @* ]]; then
    bin=${flags%% *} flags=${flags#"$bin"} bin=${bin#@}
    [[ -x $bin ]] || { echo "wharf binary not found or not executable: $bin" >&2; return 1; }
  fi
  wharf_port=$((base + 10 + i))
  make_app "$app"
  # shellcheck disable=SC2086 # FLAGS are split on purpose: they are extra server flags.
  "$bin" server --data "$data" --http 127.0.0.1:0 --https "127.0.0.1:$wharf_port" --api 127.0.0.1:0 \
    --admin 127.0.0.1:0 --proxy-threads "$w" $flags 2>"$dir/server.log" &
  server_pids+=($!)
  local _
  for _ in $(seq 100); do [[ -f $data/api.url ]] && break; sleep 0.1; done
  [[ -f $data/api.url ]] || { cat "$dir/server.log" >&2; echo "wharf server did not start" >&2; return 1; }
  "$bin" --data "$data" deploy "$app" >"$dir/deploy.log" 2>&1 || { cat "$dir/deploy.log" >&2; return 1; }
  wait_200 "https://localhost:$wharf_port/"
  task_port=$("$bin" --data "$data" ps --json | grep -o '"port": *[0-9]*' | head -1 | grep -o '[0-9]*$')
  [[ -n $task_port ]] || { echo "cannot find the wharf task's port (wharf ps --json)" >&2; return 1; }
}

# start_nginx W BACKEND_PORT: nginx terminating TLS with the same certificate, proxying to the
# backend with keepalive (as shared/bench/peers.sh's nginx does over plain HTTP).
start_nginx() {
  local w=$1 be=$2 dir=$work/nginx-w$1
  mkdir -p "$dir/tmp"
  cat >"$dir/nginx.conf" <<CONF
worker_processes $w; pid $dir/nginx.pid; error_log $dir/nginx.err warn; daemon on;
events { worker_connections 8192; }
http { access_log off; client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fcgi; uwsgi_temp_path $dir/tmp/uwsgi; scgi_temp_path $dir/tmp/scgi;
  keepalive_requests 1000000;
  upstream be { server 127.0.0.1:$be; keepalive 256; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$nginx_port ssl http2 backlog=4096; server_name localhost;
    ssl_certificate $certs/chain.pem; ssl_certificate_key $certs/leaf.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_tickets on;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
  "$nginx_bin" -c "$dir/nginx.conf"
  nginx_pidfile=$dir/nginx.pid
  local _
  for _ in $(seq 50); do [[ -s $nginx_pidfile ]] && break; sleep 0.1; done
  wait_200 "https://localhost:$nginx_port/"
}

# --- measuring ----------------------------------------------------------------------------------
to_ms() { # VALUE_WITH_UNIT → milliseconds (wrk and h2load print us, ms, s, or m for minutes)
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'
}

# run_wrk URL → "rps p99_ms errors"
run_wrk() {
  local out rps p99 err
  out=$(timeout $((duration + 30)) wrk -t1 -c"$conns" -d"$duration"s --latency "$1" 2>&1) || { echo "wrk failed: $out" >&2; return 1; }
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  [[ -n $rps && -n $p99 ]] || { echo "cannot parse wrk output: $out" >&2; return 1; }
  err=$(awk '/Non-2xx or 3xx responses:/ {e += $NF}
             /Socket errors:/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) e += $i}
             END {print e + 0}' <<<"$out")
  echo "$rps $(to_ms "$p99") $err"
}

# h2load_parse OUTPUT → "succeeded failed+errored seconds"
h2load_parse() {
  awk '/^finished in/ {t = $3; sub(/,$/, "", t); u = t; sub(/^[0-9.]+/, "", u); s = t + 0
         if (u == "ms") s /= 1000; else if (u == "us") s /= 1000000; else if (u == "m") s *= 60}
       /^requests:/ {ok = $8; bad = $10 + $12}
       END {if (t == "") exit 1; printf "%s %s %.6f\n", ok, bad, s}' <<<"$1"
}

# run_h2 URL → "rps 0 errors": HTTP/2, C connections with 10 streams each, for the duration.
run_h2() {
  local out fig ok bad secs
  out=$(timeout $((duration + 30)) h2load -t1 -c"$conns" -m10 -D"$duration" "$1" 2>&1) || { echo "h2load failed: $out" >&2; return 1; }
  grep -q '^Application protocol: h2' <<<"$out" || { echo "h2load did not speak h2: $out" >&2; return 1; }
  fig=$(h2load_parse "$out") || { echo "cannot parse h2load output: $out" >&2; return 1; }
  read -r ok bad secs <<<"$fig"
  echo "$(awk -v n="$ok" -v s="$secs" 'BEGIN {printf "%.1f", n / s}') 0 $bad"
}

# run_resumed URL N → "handshakes/s 0 errors": N requests, each on a new connection (Connection:
# close); h2load resumes each client's session, so all but each client's first are resumed.
run_resumed() {
  local out fig ok bad secs
  out=$(timeout 300 h2load --h1 -t1 -c"$conns" -n"$2" -H 'Connection: close' "$1" 2>&1) ||
    { echo "h2load failed: $out" >&2; return 1; }
  fig=$(h2load_parse "$out") || { echo "cannot parse h2load output: $out" >&2; return 1; }
  read -r ok bad secs <<<"$fig"
  echo "$(awk -v n="$ok" -v s="$secs" 'BEGIN {printf "%.1f", n / s}') 0 $bad"
}

# run_full URL SECONDS → "handshakes/s 0 errors": fresh h2load processes, each opening C
# connections at once with one request each, so each connection is a full handshake; repeated
# until SECONDS have passed (bounded: at most 10000 runs). The rate is handshakes over the time
# h2load reports (connects to last response), without process start-up.
run_full() {
  local out fig ok bad secs n=0 fails=0 total=0 end i
  end=$((SECONDS + $2))
  for ((i = 0; i < 10000 && SECONDS < end; i++)); do
    out=$(timeout 60 h2load --h1 -t1 -c"$conns" -n"$conns" "$1" 2>&1) || { echo "h2load failed: $out" >&2; return 1; }
    fig=$(h2load_parse "$out") || { echo "cannot parse h2load output: $out" >&2; return 1; }
    read -r ok bad secs <<<"$fig"
    n=$((n + ok)) fails=$((fails + bad))
    total=$(awk -v a="$total" -v b="$secs" 'BEGIN {printf "%.6f", a + b}')
  done
  echo "$(awk -v n="$n" -v s="$total" 'BEGIN {if (s > 0) printf "%.1f", n / s; else print 0}') 0 $fails"
}

median() { sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

rows=(keepalive h2 full resumed)
declare -A row_name=([keepalive]="HTTPS/1.1 keep-alive (wrk)" [h2]="HTTP/2, 10 streams per connection (h2load)"
  [full]="new connections, full handshake (h2load)" [resumed]="new connections, resumed handshake (h2load)")
declare -A row_unit=([keepalive]="rps" [h2]="rps" [full]="handshakes/s" [resumed]="handshakes/s")

results=$work/results # lines: W ROW TARGET_INDEX ROUND VALUE P99 ERR
: >"$results"
names=() urls=()

note "wharf HTTPS benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores: workers [$workers] conns $conns" \
  "rounds $rounds, ${duration}s runs, ${warmup}s warmup, wharf $WHARF ($("$WHARF" --version 2>/dev/null || echo '?'))," \
  "$("$nginx_bin" -v 2>&1), $(openssl version), $(h2load --version), $(wrk -v 2>&1 | head -1)"
for w in $workers; do
  names=() urls=()
  for i in "${!variants[@]}"; do
    v=${variants[$i]}
    start_wharf "$w" "$i" "${v#*=}"
    names+=("${v%%=*}") urls+=("https://localhost:$wharf_port/")
    note "W=$w ${v%%=*}: server pid ${server_pids[-1]} flags '${v#*=}' https :$wharf_port task :$task_port"
  done
  # nginx proxies to the first wharf row's task: the very backend the wharf rows use.
  start_nginx "$w" "$task_port"
  names+=(nginx) urls+=("https://localhost:$nginx_port/")
  note "W=$w nginx: pid $(cat "$nginx_pidfile") https :$nginx_port -> task :$task_port"
  # What each target negotiates, and that TLS 1.2 reconnections resume (s_client -reconnect;
  # h2load's TLS 1.3 reconnections resume by ticket, but s_client reconnects before it reads one).
  for t in "${!names[@]}"; do
    port=${urls[$t]%/} port=${port##*:}
    hello=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
      -CAfile "$certs/ca.pem" -alpn h2,http/1.1 2>/dev/null || true)
    reused=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost -tls1_2 \
      -CAfile "$certs/ca.pem" -reconnect 2>/dev/null | grep -c '^Reused,' || true)
    note "W=$w ${names[$t]}: $(grep -m1 -E '^New,' <<<"$hello"); $(grep -m1 -E '^ALPN' <<<"$hello");" \
      "$(grep -m1 -E '^Verify return code' <<<"$hello"); TLS 1.2 reconnections resumed: $reused of 5"
  done
  for r in $(seq "$rounds"); do
    for row in "${rows[@]}"; do
      for t in "${!names[@]}"; do
        u=${urls[$t]%/}/
        case $row in
          keepalive) ((warmup)) && { timeout $((warmup + 30)) wrk -t1 -c"$conns" -d"$warmup"s "$u" >/dev/null 2>&1 || true; }
                     fig=$(run_wrk "$u") ;;
          h2) ((warmup)) && { timeout $((warmup + 30)) h2load -t1 -c"$conns" -m10 -D"$warmup" "$u" >/dev/null 2>&1 || true; }
              fig=$(run_h2 "$u") ;;
          full) ((warmup)) && run_full "$u" "$warmup" >/dev/null
                fig=$(run_full "$u" "$duration") ;;
          resumed) ((warmup)) && { run_resumed "$u" $((handshakes / 10 > conns ? handshakes / 10 : conns)) >/dev/null || true; }
                   fig=$(run_resumed "$u" "$handshakes") ;;
        esac
        echo "$w $row $t $r $fig" >>"$results"
        read -r val p99 err <<<"$fig"
        printf 'W=%s round=%s %-8s %-8s %s=%s p99=%sms errors=%s\n' \
          "$w" "$r" "$row" "${names[$t]}" "${row_unit[$row]}" "$val" "$p99" "$err" | tee -a "$log" >&2
      done
    done
  done
  stop_all
done

# --- the table ----------------------------------------------------------------------------------
fmt() { awk -v x="$1" -v d="$2" 'BEGIN {printf "%.*f", d, x}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
nginx_t=$((${#names[@]} - 1))
echo
echo "| W | row | target | value | min–max | p99 ms | wharf / nginx | target met (≥ 1.0×) |"
echo "|---|---|---|---|---|---|---|---|"
for w in $workers; do
  for row in "${rows[@]}"; do
    med() { awk -v w="$w" -v row="$row" -v t="$1" -v k="$2" '$1 == w && $2 == row && $3 == t {print $k}' "$results" | median; }
    n_val=$(med "$nginx_t" 5)
    for t in "${!names[@]}"; do
      val=$(med "$t" 5) p99=$(med "$t" 6)
      errs=$(awk -v w="$w" -v row="$row" -v t="$t" '$1 == w && $2 == row && $3 == t {e += $7} END {print e + 0}' "$results")
      range=$(awk -v w="$w" -v row="$row" -v t="$t" '$1 == w && $2 == row && $3 == t {
        if (n++ == 0 || $5 < lo) lo = $5; if (n == 1 || $5 > hi) hi = $5 } END {printf "%.0f–%.0f", lo, hi}' "$results")
      name=${names[$t]} vs="" met="" p99s="" 
      ((errs)) && name="$name ($errs errors)"
      [[ $row == keepalive ]] && p99s=$(fmt "$p99" 2)
      if ((t != nginx_t)); then
        name="**$name**" vs=$(ratio "$val" "$n_val")
        met=$(awk -v r="$vs" 'BEGIN {print (r >= 1.0 ? "yes" : "no")}')
        if [[ $row == keepalive ]]; then
          vs="$vs (p99 $(ratio "$p99" "$(med "$nginx_t" 6)"))"
        fi
      fi
      echo "| $w | ${row_name[$row]} | $name | $(fmt "$val" 0) ${row_unit[$row]} | $range | $p99s | $vs | $met |"
    done
  done
done
echo
echo "Medians (and min–max) of $rounds interleaved rounds, ${duration}s runs, ${warmup}s warmup per run, $conns" \
  "client connections, one ECDSA P-256 certificate, both in front of the same backend task. Raw runs: $log"
