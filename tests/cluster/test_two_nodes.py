"""Two scriptvisor nodes behind nginx (deploy/nginx/scriptvisor.conf), on loopback.

What issue 7 asks of a multi-node deployment, end to end with real processes:

1. affinity: one tenant's calls all land on one node (``X-Scriptvisor-Node``);
2. failover: SIGKILL that node; its in-flight call fails with a clear JSON
   error from nginx, the tenant moves to the other node, and after the
   failover window every call succeeds (a bounded run of calls);
3. shared user store: concurrent first logins of the same legacy user through
   both nodes at once create exactly one migrated user in PostgreSQL;
4. nothing is left behind: every node, zygote, worker and nginx process is gone.

nginx is installed by scripts/test.sh (nginx-light); this module skips only
when no nginx binary exists at all, and the PostgreSQL part only when the
server cannot be reached.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import signal
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import psutil
import pytest

from scriptvisor.engine.server import auth
from scriptvisor.engine.tenantdir import init_tenant, seed_sqlite

from .harness import Cluster, find_nginx, start_nginx, start_node
from tests.services import unavailable

NGINX = find_nginx()
@pytest.fixture(autouse=True)
def _nginx_present() -> None:
    if NGINX is None:
        unavailable("nginx is not installed (scripts/test.sh installs nginx-light)")

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TENANT = "acme"
#: Legacy users for the concurrent-login rounds: (email, password, nickname, verified).
LEGACY_USERS = [(f"user{i}@example.com", f"secret-{i}", f"user{i}", True) for i in range(4)]
#: Parallel first logins per user: this many against each node, released together.
LOGINS_PER_NODE = 4
#: Calls sent through nginx after the kill; all after the first success must succeed.
FAILOVER_CALLS = 20
#: The failover window, in calls: at most this many may fail before the first success.
FAILOVER_WINDOW = 3

#: The nodes' admin token: the only caller a broken tenant answers 500 (others get 401/403).
ADMIN_TOKEN = "cluster-admin-" + uuid.uuid4().hex
#: Broken tenant folders created to find some that hash onto a given node
#: (about half do; 40 make fewer than MAX_FAILS + 1 on one node vanishingly unlikely).
BROKEN_CANDIDATES = 40
#: nginx's max_fails in deploy/nginx/scriptvisor.conf.
MAX_FAILS = 3

SCRIPTS = {
    "noop.py": "def noop(callback):\n    callback(None, 'done')\n",
    # runs until the node (and with it this worker) is killed
    "hang.py": "def hang(callback):\n    n = 0\n    while True:\n        n = n + 1\n",
}


# -- fixtures ---------------------------------------------------------------

@contextlib.contextmanager
def _fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (its DSN), dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at 127.0.0.1:5432 cannot be reached: {exc}")
    name = f"sv_cluster_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    """The shared user store's database, empty: the nodes create its schema
    themselves, at the same moment, under an advisory lock."""
    with _fresh_database() as dsn:
        yield dsn


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """The module's own folder, not pytest's tmp_path: pytest prunes old numbered
    tmp folders when another session starts, which would pull the tenants folder
    away from running nodes when several test sessions share a machine."""
    path = Path(tempfile.mkdtemp(prefix="scriptvisor-cluster-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def tenants(workdir: Path) -> tuple[Path, str]:
    """One tenant in automatic migration mode over a seeded SQLite legacy database."""
    root = workdir / "tenants"
    root.mkdir()
    folder = init_tenant(root / TENANT, "sqlite", import_users=True, seed_rounds=4)
    legacy = folder / "data" / "legacy.db"
    legacy.unlink()
    seed_sqlite(legacy, users=LEGACY_USERS, rounds=4,
                schema=(folder / "schema.sql").read_text(encoding="utf-8"))
    for name, text in SCRIPTS.items():
        (folder / "scripts" / name).write_text(text)
    token = auth.create_token(root, TENANT)
    return root, token


@pytest.fixture
def cluster(tenants: tuple[Path, str], pg_dsn: str, workdir: Path) -> Iterator[Cluster]:
    root, token = tenants
    run = workdir / f"run-{uuid.uuid4().hex[:8]}"
    env = {"SCRIPTVISOR_USER_STORE_DSN": pg_dsn, "SCRIPTVISOR_ADMIN_TOKEN": ADMIN_TOKEN}
    nodes = {}
    c = Cluster(nodes, None, token, tenants_dir=root)
    try:
        for name in ("node-a", "node-b"):
            nodes[name] = start_node(name, root, run / "logs", env)
        c.nginx = start_nginx(NGINX, list(nodes.values()), run / "nginx")
        yield c
    finally:
        leftovers = c.close()
        assert not leftovers, f"processes left behind: {leftovers}"
    for node in nodes.values():
        if node.name not in c.killed:
            assert node.proc.returncode == 0, f"{node.name} exited {node.proc.returncode}:\n{node.stderr.text()}"


# -- helpers ----------------------------------------------------------------

def _noop(client: httpx.Client) -> httpx.Response:
    return client.post(f"/v1/tenants/{TENANT}/scripts/noop", json={"args": []})


def _node_of(response: httpx.Response) -> str:
    return response.headers.get("x-scriptvisor-node", "")


class _LogStream:
    """A tenant's server-sent events from one node, read in a thread."""

    def __init__(self, url: str, token: str) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.opened = threading.Event()
        self.status: int | None = None
        self._client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                    timeout=httpx.Timeout(60, read=None))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        event = "message"
        try:
            with self._client.stream("GET", f"/v1/tenants/{TENANT}/logs") as resp:
                self.status = resp.status_code
                self.opened.set()
                for line in resp.iter_lines():
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        self.events.put((event, json.loads(line.split(":", 1)[1])))
        except httpx.HTTPError:
            pass  # the node was killed: the stream ends with it
        finally:
            self.opened.set()

    def wait_for(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        while True:
            event, data = self.events.get(timeout=timeout)
            if event == kind:
                return data

    def close(self) -> None:
        self._client.close()


# -- tests ------------------------------------------------------------------

def test_tenant_sticks_to_one_node_and_fails_over_when_it_dies(cluster: Cluster) -> None:
    with cluster.lb() as lb:
        # (1) affinity: every call of the tenant is answered by the same node
        first = [_noop(lb) for _ in range(10)]
        assert [r.status_code for r in first] == [200] * 10, first[0].text
        assert all(r.json()["ok"] and r.json()["result"] == "done" for r in first)
        owners = {_node_of(r) for r in first}
        assert len(owners) == 1 and owners <= set(cluster.nodes), owners
        owner_name = owners.pop()
        owner = cluster.nodes[owner_name]
        survivor = next(n for n in cluster.nodes.values() if n is not owner)

        # a call in flight on the owner when it dies: watch it start there
        stream = _LogStream(owner.url, cluster.token)
        try:
            assert stream.opened.wait(30) and stream.status == 200
            in_flight: dict[str, httpx.Response] = {}
            caller = threading.Thread(
                target=lambda: in_flight.setdefault(
                    "r", lb.post(f"/v1/tenants/{TENANT}/scripts/hang", json={"args": []})),
                daemon=True,
            )
            caller.start()
            started = stream.wait_for("start")
            assert started["script"] == "hang"

            # (2) the owner dies hard: no drain, no goodbye
            owner.record_family()
            assert len(owner.family) >= 3, "expected the node, its zygote and a worker"
            cluster.killed.add(owner_name)
            owner.proc.send_signal(signal.SIGKILL)
            owner.proc.wait(timeout=30)
            caller.join(timeout=30)
            assert not caller.is_alive()
        finally:
            stream.close()

        # the in-flight call is lost, with a clear error (nginx never re-sends a POST)
        lost = in_flight["r"]
        assert lost.status_code == 502, lost.text
        assert lost.json()["error"]["code"] == "node_unavailable"
        assert lost.headers.get("retry-after") == "1"

        # the dead node's zygote and workers die with it (PDEATHSIG), unprompted
        _, alive = psutil.wait_procs(list(owner.family.values()), timeout=20)
        assert not alive, f"orphans of the killed node: {[p.pid for p in alive]}"

        # new calls move to the survivor; after the failover window none is lost
        outcomes = []
        for _ in range(FAILOVER_CALLS):
            r = _noop(lb)
            ok = r.status_code == 200 and r.json().get("ok") is True
            outcomes.append((ok, r.status_code, _node_of(r), r.text))
        window = next(i for i, o in enumerate(outcomes) if o[0])
        assert window <= FAILOVER_WINDOW, outcomes
        for ok, status, _node, text in outcomes[:window]:  # failures inside the window are clear
            assert status in (502, 503) and json.loads(text)["error"]["code"], text
        assert all(o[0] for o in outcomes[window:]), outcomes
        assert {o[2] for o in outcomes[window:]} == {survivor.name}


def _data_dir_state(cluster: Cluster) -> list[tuple[str, int, str]]:
    """Owner and mode of the tenant's data folder and files (for failure messages)."""
    data = cluster.tenants_dir / TENANT / "data"
    paths = [data.parent, data, *sorted(data.iterdir())] if data.is_dir() else [data]
    out = []
    for p in paths:
        st = p.lstat()
        out.append((p.name, st.st_uid, oct(st.st_mode)))
    return out


def _concurrent_logins(nodes: list[Any], token: str, email: str, password: str) -> list[tuple[str, int, dict]]:
    """LOGINS_PER_NODE logins of ``email`` on each node, released at once by a barrier."""
    barrier = threading.Barrier(LOGINS_PER_NODE * len(nodes))
    results: list[tuple[str, int, dict[str, Any]]] = []
    lock = threading.Lock()

    def login(node: Any) -> None:
        with node.client(token) as client:
            barrier.wait(timeout=30)
            r = client.post(f"/v1/tenants/{TENANT}/connection/login", json={"args": [email, password]})
            with lock:
                results.append((node.name, r.status_code, r.json()))

    threads = [threading.Thread(target=login, args=(n,)) for n in nodes for _ in range(LOGINS_PER_NODE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == len(threads)
    assert {name for name, _, _ in results} == {n.name for n in nodes}
    return results


def test_concurrent_first_logins_on_both_nodes_create_one_user(cluster: Cluster, pg_dsn: str) -> None:
    import psycopg

    nodes = list(cluster.nodes.values())
    for email, password, nickname, _verified in LEGACY_USERS:
        results = _concurrent_logins(nodes, cluster.token, email, password)
        for name, status, body in results:
            assert status == 200 and body["ok"] is True, (name, body, _data_dir_state(cluster))
            assert body["result"]["email"] == email and body["result"]["nickname"] == nickname
        user_ids = {body["result"]["user_id"] for _, _, body in results}
        assert len(user_ids) == 1, user_ids

        with psycopg.connect(pg_dsn, connect_timeout=5) as db:
            rows = db.execute(
                "SELECT user_id, source, password_hash FROM sv_users WHERE tenant = %s AND email_key = %s",
                (TENANT, email),
            ).fetchall()
        assert len(rows) == 1, rows
        assert rows[0][0] == user_ids.pop() and rows[0][1] == "migrated"
        assert rows[0][2] and rows[0][2] != password and rows[0][2].startswith(("$argon2id$", "$2"))  # platform hash (argon2id; bcrypt before)

        # a later login on either node comes from the shared store, not the legacy script
        for node in nodes:
            with node.client(cluster.token) as client:
                body = client.post(f"/v1/tenants/{TENANT}/connection/login", json={"args": [email, password]}).json()
            assert body["ok"] is True and body["from_platform_store"] is True, body
            assert body["scripts_called"] == []

    with psycopg.connect(pg_dsn, connect_timeout=5) as db:
        total = db.execute("SELECT count(*) FROM sv_users WHERE tenant = %s", (TENANT,)).fetchone()[0]
    assert total == len(LEGACY_USERS)


def test_broken_tenant_leaves_its_node_in_the_pool(cluster: Cluster) -> None:
    """More broken-tenant calls than nginx's max_fails, on the node of a healthy
    tenant, within fail_timeout: the node stays in the pool (500 is tenant-level)."""
    root = cluster.tenants_dir
    names = [f"broken{i:02d}" for i in range(BROKEN_CANDIDATES)]
    for name in names:
        (root / name).mkdir()
        (root / name / "tenant.toml").write_text("[limits]\nnot_a_limit = 1\n")
    try:
        with cluster.lb() as lb:
            home = {_node_of(_noop(lb)) for _ in range(3)}
            assert len(home) == 1
            home_node = home.pop()
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            on_home = []
            for name in names:
                r = lb.post(f"/v1/tenants/{name}/scripts/noop", json={"args": []}, headers=admin)
                assert r.status_code == 500 and r.json()["error"]["code"] == "tenant_unavailable", r.text
                if _node_of(r) == home_node:
                    on_home.append(name)
            assert len(on_home) > MAX_FAILS, (home_node, on_home)
            for name in on_home:  # and once more each: well over max_fails on that node
                r = lb.post(f"/v1/tenants/{name}/scripts/noop", json={"args": []}, headers=admin)
                assert r.status_code == 500 and _node_of(r) == home_node
            # the healthy tenant is still served by its node: nginx did not take it out
            after = [_noop(lb) for _ in range(10)]
            assert [r.status_code for r in after] == [200] * 10
            assert {_node_of(r) for r in after} == {home_node}
    finally:
        for name in names:
            shutil.rmtree(root / name, ignore_errors=True)
