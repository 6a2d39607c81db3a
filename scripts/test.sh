#!/usr/bin/env bash
# Install everything the test suite needs, start the services it talks to,
# run the whole suite (Python 3.11), then the wheel smoke test on 3.11-3.13
# (scripts/smoke_wheel.sh).  This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "test,bench"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)   # second load balancer (tests/cluster)
command -v openssl >/dev/null || need_apt+=(openssl)   # the http facade's TLS tests make a throwaway CA
command -v pg_ctlcluster >/dev/null || need_apt+=(postgresql)
command -v curl >/dev/null || need_apt+=(curl)  # the README session (tests/test_readme.py)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
# the console's browser tests drive Debian's headless Chromium through its chromedriver
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
# `ip` (iproute2): the wheel smoke test brings up loopback in its own network namespace.
command -v ip >/dev/null || need_apt+=(iproute2)
# Debian's libseccomp binding: the fallback sandbox/seccomp.py uses when pyseccomp is missing.
[ -e /usr/lib/python3/dist-packages/seccomp.cpython-311-x86_64-linux-gnu.so ] || need_apt+=(python3-seccomp)
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need_apt+=(nftables)  # per-tenant egress layer (engine/egress.py)
if [ ${#need_apt[@]} -gt 0 ] && command -v apt-get >/dev/null; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# PostgreSQL and MariaDB: start them when they are down (a fresh machine).
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; then
    as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
for _ in $(seq 1 60); do
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null && break
    sleep 0.5  # services start asynchronously; this wait is outside the code under test
done
# A fresh PostgreSQL has no trust auth for root over TCP: the tests connect as
# user postgres to database postgres/test; make sure "test" exists.
if command -v psql >/dev/null; then
    as_root runuser -u postgres -- psql -qAtc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 \
        || as_root runuser -u postgres -- createdb test 2>/dev/null || true
fi
if command -v mariadb >/dev/null; then
    as_root mariadb -uroot -e "CREATE DATABASE IF NOT EXISTS test" 2>/dev/null || true
fi

missing=()
(exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null || missing+=("PostgreSQL on 127.0.0.1:5432")
(exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null || missing+=("MariaDB on 127.0.0.1:3306")
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=("nginx")
command -v chromium >/dev/null && command -v chromedriver >/dev/null || missing+=("chromium + chromedriver")
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=("haproxy")
if [ ${#missing[@]} -gt 0 ]; then
    printf 'scripts/test.sh: not available after install/start: %s\n' "${missing[@]}" >&2
    exit 1
fi
# Here every service is up: a test that cannot reach one must fail, not skip.
export SCRIPTVISOR_REQUIRE_SERVICES=1

set +e
.venv/bin/python -m pytest -q "$@"
status=$?
set -e
if [ $status -eq 5 ]; then
    echo "pytest collected no tests" >&2
    exit 1
fi
# The artefact, not just the tree: build the wheel, install it in a fresh
# virtualenv on Python 3.11, 3.12 and 3.13 and run the smoke session there
# (about a minute per version).  Only for the whole run: with pytest
# arguments (a targeted run while iterating) it is left out.
if [ $# -eq 0 ]; then
    bash scripts/smoke_wheel.sh || status=1
fi
exit $status
