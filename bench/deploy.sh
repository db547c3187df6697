#!/usr/bin/env bash
# Zero-downtime deploy figures, on the release build: runs the deploy sequence
# of crates/cli/tests/deploys.rs (rolling, blue-green, never healthy, crash at
# start, exit after healthy, 500 after the switch, rollback from a bake, manual
# rollback to the first revision, scale 1 → 4 → 1) under continuous load, with
# the demo app and with gunicorn + Flask, ROUNDS times (default 3), and prints
# one table.
#   switch   : `wharf deploy` started → first answer of the new revision after
#              which every answer is from it (app ready in 0.2 s for the demo)
#   rollback : `wharf rollback` during a blue-green bake → every answer from the
#              previous revision again
# Usage: bench/deploy.sh [ROUNDS]    (needs gunicorn and python3-flask)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test --release -q -p wharf --test deploys --no-run 2>/dev/null
echo "| run | app | requests | failures | req/s | upgrades held / cut by the app's own exit | switch rolling | switch blue-green | rollback from bake |"
echo "|---|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  rm -f "$out"
  WHARF_DEPLOY_FIGURES=$out cargo test --release -q -p wharf --test deploys -- --test-threads 1 >/dev/null 2>&1 \
    || { echo "round $r: the deploy test failed (run it without -q to see why)" >&2; exit 1; }
  python3 - "$out" "$r" <<'PY'
import json, sys
figs = json.load(open(sys.argv[1]))
for app in ("demo", "gunicorn"):
    f = figs.get(app)
    if not f:
        continue
    print(f"| {sys.argv[2]} | {app} | {f['requests']} | {f['failures']} | {f['requests_per_s']} | "
          f"{f['upgrades_completed']} / {f['upgrades_cut']} | {f['switch_rolling_ms']} ms | "
          f"{f['switch_blue-green_ms']} ms | {f['rollback_from_bake_ms']} ms |")
PY
done
