#!/usr/bin/env bash
# Installs the runtime needs and starts the app (on the built-in demo project unless a PROJECT is given).
# Usage: bash scripts/run_app.sh [PROJECT] [--host H] [--port P] [--auth user:pass]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -r requirements.txt
exec python3 app.py "$@"
