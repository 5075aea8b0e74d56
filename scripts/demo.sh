#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, start `funnel serve` (with its own local
# nats-server), publish a simulated funnel, and print where to look. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --bin funnel
data=${FUNNEL_DATA_DIR:-.data}
http=${FUNNEL_HTTP:-127.0.0.1:8080}
funnel=target/debug/funnel
"$funnel" serve --data-dir "$data" --http "$http" &
serve=$!
trap 'kill $serve 2>/dev/null; wait $serve 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -fs "http://$http/health" >/dev/null 2>&1 && break
  kill -0 $serve 2>/dev/null || { echo "demo: funnel serve exited" >&2; exit 1; }
  sleep 0.1
done
"$funnel" simulate --data-dir "$data" --leads "${LEADS:-5000}"
sleep 1
"$funnel" report funnel --by channel --url "http://$http"
echo
echo "Dashboard:   http://$http/"
echo "Funnel JSON: http://$http/v1/funnel?by=channel"
echo "Chain head:  http://$http/v1/audit/head"
echo "Serving until Ctrl-C."
wait $serve
