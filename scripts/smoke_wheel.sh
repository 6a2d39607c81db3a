#!/usr/bin/env bash
# Build the wheel and smoke-test it installed (not editable) on Python 3.11,
# 3.12 and 3.13: the artefact an operator installs, not the source tree.
#
#   bash scripts/smoke_wheel.sh            # all three
#   bash scripts/smoke_wheel.sh 3.13       # one
#
# Per interpreter: a virtualenv in .cache/smoke/<version> gets the install
# path of deploy/README.md (requirements/runtime.txt with hashes, then the
# wheel with --no-deps; the bench extra from requirements/lock.txt for
# `bench recycle`), then scripts/smoke_session.py runs the session in a
# scratch folder outside the repository, in a network namespace of its own
# (so `serve` with no arguments can have port 8080).  The virtualenv is kept
# while the lock files and the interpreter are unchanged (only the wheel is
# reinstalled), so a second run spends its time on the session itself.
# Called by scripts/test.sh; interpreters come from pyenv (or PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(3.11 3.12 3.13)
BUILD_PY=.venv/bin/python
[ -x "$BUILD_PY" ] || BUILD_PY="${PYTHON:-python3}"
quiet() { grep -v '^WARNING: Location' >&2 || true; }

find_python() {
    local v=$1 root="${PYENV_ROOT:-$HOME/.pyenv}" cand
    for cand in $(ls -d "$root"/versions/"$v".* 2>/dev/null | sort -V -r); do
        [ -x "$cand/bin/python$v" ] && { echo "$cand/bin/python$v"; return; }
    done
    command -v "python$v" || return 1
}

# Tenant uids load the interpreter: they need search (o+x) on its folders,
# as scripts/install.sh grants for the project's own .venv.
grant_search() {
    [ "$(id -u)" = 0 ] || return 0
    local d
    for d in $("$1" -c 'import os, sys
seen = set()
for base in (sys.base_prefix, os.getcwd()):
    d = os.path.realpath(base)
    while d != "/":
        if d not in seen:
            seen.add(d); print(d)
        d = os.path.dirname(d)'); do
        if [ -d "$d" ] && [ $(( $(stat -c '%a' "$d" | sed 's/^.*\(.\)$/\1/') & 1 )) -eq 0 ]; then
            chmod o+x "$d"
        fi
    done
}

started=$(date +%s)
rm -rf dist
"$BUILD_PY" -m pip wheel -q --no-deps -w dist . 2>&1 | quiet
WHEEL=$(ls dist/scriptvisor-*.whl)
echo "smoke: built $WHEEL ($(stat -c %s "$WHEEL") bytes)"

failed=()
for v in "${VERSIONS[@]}"; do
    if ! PY=$(find_python "$v"); then
        echo "smoke $v: FAIL no python$v (pyenv install $v, or put python$v on PATH)" >&2
        failed+=("$v"); continue
    fi
    grant_search "$PY"
    VENV="$REPO/.cache/smoke/$v"
    stamp="$("$PY" -VV) $(sha256sum requirements/runtime.txt requirements/lock.txt | cut -c1-16 | tr '\n' ' ')"
    if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]; then
        rm -rf "$VENV"
        "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --require-hashes -r requirements/runtime.txt 2>&1 | quiet
        "$VENV/bin/python" -m pip install -q --require-hashes -r requirements/lock.txt 2>&1 | quiet  # bench extra
        echo "$stamp" > "$VENV/.stamp"
    fi
    "$VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$WHEEL" 2>&1 | quiet
    "$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check >&2; failed+=("$v"); continue; }
    WORK=$(mktemp -d /tmp/scriptvisor-smoke-XXXXXX)
    chmod 755 "$WORK"
    # a private network namespace (root): port 8080 is free whatever else runs here
    if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && unshare --net true 2>/dev/null; then
        run=(unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh)
    else
        run=()
    fi
    if "${run[@]}" "$VENV/bin/python" "$REPO/scripts/smoke_session.py" "$VENV" "$WORK" "$REPO"; then
        rm -rf "$WORK"
    else
        echo "smoke $v: FAIL (scratch folder kept: $WORK)" >&2
        failed+=("$v")
    fi
done
echo "smoke: $(( $(date +%s) - started )) s for ${VERSIONS[*]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "smoke: failed on ${failed[*]}" >&2
    exit 1
fi
