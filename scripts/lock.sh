#!/usr/bin/env bash
# Regenerate requirements/lock.txt (and requirements/runtime.txt, its subset
# for a production node without the extras): exact versions + sha256 hashes of every
# package the default install and the `test` and `bench` extras need, resolved
# for Python 3.11 with markers that hold on 3.12 and 3.13 too (one universal
# lock; scripts/install.sh, scripts/test.sh and the wheel smoke install from it).
#
#   bash scripts/lock.sh                 # after editing pyproject.toml: add/drop what changed,
#                                        # keep every other pin as it is
#   bash scripts/lock.sh -P httpx        # upgrade one package (repeat -P for more)
#   bash scripts/lock.sh --upgrade       # newest allowed version of everything
#
# Then reinstall: .venv/bin/pip install --require-hashes -r requirements/lock.txt
# (or re-run scripts/install.sh), run the tests, commit pyproject.toml and the
# lock together.  The resolver is uv, pinned below and installed into
# .cache/lock-tool (not into the project's .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
PY="${PYTHON:-python3}"
TOOL=.cache/lock-tool
if [ ! -x "$TOOL/bin/uv" ] || [ "$("$TOOL/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    rm -rf "$TOOL"
    "$PY" -m venv "$TOOL"
    "$TOOL/bin/python" -m pip install -q "uv==$UV_VERSION" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$TOOL/bin/uv" --version >/dev/null
fi
export SSL_CERT_FILE="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
mkdir -p requirements
UV_CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" \
"$TOOL/bin/uv" pip compile pyproject.toml \
    --extra test --extra bench \
    --universal --python-version 3.11 \
    --generate-hashes --quiet \
    --output-file requirements/lock.txt "$@"
# The node's runtime set (no extras), at exactly the versions above: what
# deploy/README.md installs next to the wheel on a production node.
UV_CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" \
"$TOOL/bin/uv" pip compile pyproject.toml \
    --constraint requirements/lock.txt \
    --universal --python-version 3.11 \
    --generate-hashes --quiet \
    --output-file requirements/runtime.txt
echo "requirements/lock.txt: $(grep -c '^[a-zA-Z]' requirements/lock.txt) pinned packages;" \
     "requirements/runtime.txt: $(grep -c '^[a-zA-Z]' requirements/runtime.txt)" >&2
