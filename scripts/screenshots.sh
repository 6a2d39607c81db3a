#!/usr/bin/env bash
# Refresh docs/console-tenant.png and docs/console-operator.png: the browser
# tests save them when SCRIPTVISOR_SCREENSHOTS names a folder.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPTVISOR_SCREENSHOTS=docs .venv/bin/python -m pytest -q tests/server/test_console_browser.py "$@"
