#!/usr/bin/env bash
# Set up everything, then run the whole test suite (CPU only; a few minutes on 2 cores).
# Arguments go to pytest: `bash scripts/test.sh -m "not slow"` is the fast subset for development.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
exec pytest -q "$@"
