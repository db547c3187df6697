#!/usr/bin/env bash
# The floor proxies for bench/proxy.sh and bench/proxy/profile.sh: they forward bytes and do no HTTP,
# so they bound what any proxy reaches on the machine.
#   haproxy in `mode tcp`              on HATCP_PORT
#   tcp_floor (crates/proxy/examples)  on FLOOR_PORT   (tokio, one runtime per worker)
# Both have W workers and one upstream connection per client connection, to BACKEND_PORT.
# Usage: floors.sh start DIR W BACKEND_PORT HATCP_PORT FLOOR_PORT TCP_FLOOR_BIN
#        floors.sh stop DIR           (stops exactly what start started, by PID)
set -euo pipefail
cmd=${1:-} dir=${2:-}
[[ -n $cmd && -n $dir ]] || { echo "usage: $0 start DIR W BACKEND_PORT HATCP_PORT FLOOR_PORT BIN | stop DIR" >&2; exit 2; }
case $cmd in
start)
  (($# == 7)) || { echo "usage: $0 start DIR W BACKEND_PORT HATCP_PORT FLOOR_PORT BIN" >&2; exit 2; }
  w=$3 backend=$4 hatcp=$5 floor=$6 bin=$7
  [[ -x $bin ]] || { echo "tcp_floor not found: $bin (cargo build --release -p wharf-proxy --example tcp_floor)" >&2; exit 2; }
  mkdir -p "$dir"
  cat >"$dir/hatcp.cfg" <<CONF
global
  nbthread $w
  maxconn 8192
  pidfile $dir/hatcp.pid
  daemon
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:$hatcp
  default_backend be
backend be
  server s1 127.0.0.1:$backend
CONF
  haproxy -f "$dir/hatcp.cfg"
  "$bin" "127.0.0.1:$floor" "127.0.0.1:$backend" "$w" >/dev/null 2>"$dir/tcp_floor.err" &
  echo $! >"$dir/tcp_floor.pid"
  ;;
stop)
  for p in hatcp tcp_floor; do
    if [[ -f $dir/$p.pid ]]; then kill "$(cat "$dir/$p.pid")" 2>/dev/null || true; rm -f "$dir/$p.pid"; fi
  done
  ;;
*) echo "usage: $0 start|stop DIR ..." >&2; exit 2 ;;
esac
