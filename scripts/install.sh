#!/usr/bin/env bash
# Install scriptvisor into ./.venv (idempotent) from requirements/lock.txt.
# The lock always brings the test and bench extras; other extras: e.g. "plot".
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "scriptvisor needs Python >= 3.11 (found: $("$PY" --version 2>&1))" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$PY" -m venv .venv 2>/dev/null; then
        # Debian's python3 ships venv separately.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            rm -rf .venv && "$PY" -m venv .venv
        else
            echo "cannot create a virtualenv: install python3-venv" >&2
            exit 2
        fi
    fi
fi
# libseccomp is what the seccomp layer loads; apt itself depends on it, but check.
if ! ldconfig -p 2>/dev/null | grep -q libseccomp.so.2; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq libseccomp2 >/dev/null
    fi
fi
# Workers run under per-tenant uids (when the supervisor is root): they must be
# able to traverse the directories that hold the interpreter and the packages
# (search permission only, no listing). pyenv installs under /root (0700).
if [ "$(id -u)" = 0 ]; then
    for dir in $(.venv/bin/python - <<'PY'
import os, sys
seen = set()
for base in (sys.base_prefix, sys.prefix, os.getcwd()):
    d = os.path.realpath(base)
    while d != "/":
        if d not in seen:
            seen.add(d)
            print(d)
        d = os.path.dirname(d)
PY
    ); do
        if [ -d "$dir" ] && [ $(( $(stat -c '%a' "$dir" | sed 's/^.*\(.\)$/\1/') & 1 )) -eq 0 ]; then
            echo "scriptvisor: granting search (o+x) on $dir so tenant uids can load the interpreter" >&2
            chmod o+x "$dir"
        fi
    done
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# Exact, hash-checked versions from the lock (default + test + bench extras in
# one set; regenerate with scripts/lock.sh), then the project itself without
# resolving anything again.  Extras outside the lock (plot) come unpinned.
.venv/bin/python -m pip install -q --require-hashes -r requirements/lock.txt
.venv/bin/python -m pip install -q --no-deps -e .
if [ -n "$EXTRAS" ]; then
    for extra in ${EXTRAS//,/ }; do
        case "$extra" in
            test|bench) ;;  # in the lock
            *) .venv/bin/python -m pip install -q -e ".[${extra}]" ;;
        esac
    done
fi
# A dependency added to pyproject.toml but not to the lock shows up here.
if ! .venv/bin/python -m pip check >/dev/null; then
    .venv/bin/python -m pip check >&2 || true
    echo "scripts/install.sh: requirements/lock.txt does not satisfy pyproject.toml; run: bash scripts/lock.sh" >&2
    exit 1
fi
