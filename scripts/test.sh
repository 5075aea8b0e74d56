#!/usr/bin/env bash
# Every test: unit, property, schema and integration (real nats-server, real sled).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export FUNNEL_NATS_SERVER="$PWD/.tools/venv/bin/nats-server"
export FUNNEL_PYTHON="$PWD/.tools/venv/bin/python"
cargo test --workspace --all-targets "$@"
