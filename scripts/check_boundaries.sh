#!/usr/bin/env bash
# The crate map's boundaries (ARCHITECTURE.md), held the rust-analyzer way: by what each crate links.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
forbid() { # crate, pattern, why
  if cargo tree -p "$1" -e normal --prefix none | grep -Eq "^($2) v"; then
    echo "boundary broken: $1 depends on $2 ($3)" >&2
    fail=1
  fi
}
forbid funnel-core 'tokio|sled|async-nats|axum' 'the domain performs no I/O'
forbid funnel-engine 'tokio|async-nats|axum' 'the engine runs the same in the service and offline'
forbid funnel-query 'async-nats|funnel-projector|funnel-producer' 'queries never link ingest'
[ "$fail" = 0 ] && echo "boundaries: ok"
exit "$fail"
