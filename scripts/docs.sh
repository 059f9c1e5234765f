#!/usr/bin/env bash
# Build the documentation site strictly (a broken link, a page left out of the nav or a stale API name is an
# error) into site/ (or $1). Sets up .venv first if needed, with the docs extra (MkDocs, Material, mkdocstrings).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
python -m pip install -q -e ".[docs]"
python scripts/mkdocs_hooks.py
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir "${1:-site}"
