#!/usr/bin/env bash
# Benchmarks: the limits (raw JetStream, raw sled), ours, and the peers (PostgreSQL, DuckDB),
# side by side in one run; prints one markdown table. Sizes are flags: scripts/bench.sh --help.
# Defaults finish in about 10 minutes on 2 cores. Everything runs on 127.0.0.1 and is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.tools/venv/bin/pip install --quiet --disable-pip-version-check -r scripts/bench-requirements.txt
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
cargo build --release --bins -p funnel -p funnel-bench
export FUNNEL_NATS_SERVER="$PWD/.tools/venv/bin/nats-server"
export FUNNEL_PYTHON="$PWD/.tools/venv/bin/python"
exec target/release/funnel-bench "$@"
