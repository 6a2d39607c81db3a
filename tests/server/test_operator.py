"""Operator-facing routes and answers (issue 12, and issue 10's anonymity rule):
the admin tenant listing, a broken tenant.toml explained to its own caller,
/readyz and /metrics saying nothing per tenant without the admin token, and
metrics that add up."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from scriptvisor.engine.server import auth
from server_harness import ADMIN_TOKEN, Server, check_openapi, make_tenant

ADMIN = "/v1/admin/tenants"


def _rewrite(path: Path, text: str) -> None:
    st = path.stat()
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a new stamp on coarse clocks


def _samples(text: str) -> list:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


# -- GET /v1/admin/tenants ----------------------------------------------------------

def test_admin_tenants_lists_state_workers_and_errors(server: Server) -> None:
    with server.client("beta") as c:
        c.post("/v1/tenants/beta/scripts/noop", json={})
        failed = c.post("/v1/tenants/beta/scripts/fails", json={}).headers["X-Invocation-Id"]
    with server.client(token=ADMIN_TOKEN) as c:
        r = c.get(ADMIN)
    assert r.status_code == 200
    check_openapi("get", ADMIN, r)
    rows = {t["name"]: t for t in r.json()["tenants"]}
    assert {"alpha", "beta", "broken"} <= set(rows)
    beta = rows["beta"]
    assert beta["state"] == "ready" and beta["config_error"] is None and beta["tokens"] >= 1
    assert beta["workers"]["alive"] >= 1
    assert beta["workers"]["alive"] == sum(beta["workers"][s] for s in ("spawning", "idle", "busy", "exiting"))
    assert beta["last_error"]["invocation_id"] == failed and beta["last_error"]["code"] == "script_error"
    broken = rows["broken"]
    assert broken["state"] == "invalid" and broken["config_error"]["key"] == "limits.not_a_limit"
    assert broken["workers"]["alive"] == 0


def test_cant_list_tenants_without_the_admin_token(server: Server) -> None:
    with server.client() as c:
        r = c.get(ADMIN)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    check_openapi("get", ADMIN, r)
    with server.client("alpha") as c:  # a tenant's token: known, but not the admin
        r = c.get(ADMIN)
    assert r.status_code == 403 and "admin token" in r.json()["error"]["message"]
    check_openapi("get", ADMIN, r)
    assert "beta" not in r.text


# -- an invalid tenant.toml explained to its own caller -------------------------------

def test_broken_tenant_answers_its_own_token_500_with_the_key(server: Server) -> None:
    folder = make_tenant(server.tenants_dir, "fragile", "[limits]\ntimeout = 2\n")
    token = auth.create_token(server.tenants_dir, "fragile")
    toml = folder / "tenant.toml"
    good = toml.read_text()
    with server.client(token=token) as c:
        assert c.post("/v1/tenants/fragile/scripts/noop", json={}).status_code == 200
        # a typo in a limit: the file still parses, the token is still readable
        _rewrite(toml, good.replace("timeout = 2", "timeout = 2\ntimout = 3"))
        r = c.post("/v1/tenants/fragile/scripts/noop", json={})
        assert r.status_code == 500, r.text  # tenant-level: never counted against the node
        check_openapi("post", "/v1/tenants/{tenant}/scripts/{script}", r)
        error = r.json()["error"]
        assert error["code"] == "tenant_unavailable" and error["key"] == "limits.timout"
        assert "unknown limit" in error["message"] and "fix the file" in error["message"]
        assert str(server.tenants_dir) not in r.text
        # a TOML syntax error: the token line is still found
        _rewrite(toml, good.replace("timeout = 2", "timeout = = 2"))
        r = c.post("/v1/tenants/fragile/scripts/noop", json={})
        assert r.status_code == 500 and "invalid TOML" in r.json()["error"]["message"]
        assert r.json()["error"]["key"] is None
        # fixed: served again on the next request, no restart
        _rewrite(toml, good)
        assert c.post("/v1/tenants/fragile/scripts/noop", json={}).status_code == 200
    with server.client("alpha") as c:  # another tenant's token still learns nothing
        _rewrite(toml, good.replace("timeout = 2", "timeout = 2\ntimout = 3"))
        r = c.post("/v1/tenants/fragile/scripts/noop", json={})
        assert r.status_code == 403 and "timout" not in r.text
    _rewrite(toml, good)


def test_cant_revive_a_removed_token_by_breaking_the_file(server: Server) -> None:
    """A token deleted in the same edit that broke the file gets 401, not the reason."""
    folder = make_tenant(server.tenants_dir, "fragile2", "")
    token = auth.create_token(server.tenants_dir, "fragile2")
    toml = folder / "tenant.toml"
    _rewrite(toml, "[limits]\nbogus = 1\n")  # tokens gone and the file broken
    with server.client(token=token) as c:
        r = c.post("/v1/tenants/fragile2/scripts/noop", json={})
    assert r.status_code == 401 and "bogus" not in r.text


# -- anonymity (issue 10) --------------------------------------------------------------

def test_cant_learn_tenants_from_metrics_without_the_admin_token(server: Server) -> None:
    with server.client("alpha") as c:
        c.post("/v1/tenants/alpha/scripts/noop", json={})
    for token in (None, server.tokens["alpha"]):
        with server.client(token=token) as c:
            r = c.get("/metrics")
        assert r.status_code == 200
        samples = _samples(r.text)
        assert not [s for s in samples if "tenant" in s.labels], "per-tenant series leaked"
        assert "alpha" not in r.text and "beta" not in r.text
        names = {s.name for s in samples}
        # the node's own health stays visible to any scraper
        assert {"scriptvisor_workers", "process_resident_memory_bytes", "scriptvisor_build_info"} <= names
    with server.client(token=ADMIN_TOKEN) as c:
        admin = _samples(c.get("/metrics").text)
    assert any(s.labels.get("tenant") == "alpha" for s in admin)


# -- metrics that add up ---------------------------------------------------------------

def test_worker_states_sum_to_the_live_count(server: Server) -> None:
    with server.client(token=ADMIN_TOKEN) as c:
        c.post("/v1/tenants/beta/scripts/noop", json={})
        samples = _samples(c.get("/metrics").text)
        listing = c.get(ADMIN).json()["tenants"]
    states = {s.labels["state"]: s.value for s in samples if s.name == "scriptvisor_workers"}
    assert set(states) == {"spawning", "idle", "busy", "exiting"}  # no overlapping "alive" or "spare"
    live = sum(t["workers"]["alive"] for t in listing)
    assert live >= 1
    # the two reads are a moment apart; with no calls in flight the pool is steady
    assert sum(states.values()) == live


def test_rss_uss_are_separate_and_cpu_is_a_counter_that_survives_recycles(server: Server) -> None:
    def read() -> dict[str, float]:
        with server.client(token=ADMIN_TOKEN) as c:
            out: dict[str, float] = {}
            for s in _samples(c.get("/metrics").text):
                if s.labels.get("tenant") == "beta" or s.name in ("scriptvisor_build_info",):
                    out[s.name] = s.value
            return out

    before = read()
    assert before["scriptvisor_worker_rss_bytes"] > before["scriptvisor_worker_uss_bytes"] > 0
    assert before["scriptvisor_build_info"] == 1
    with server.client("beta") as c:
        for _ in range(2):  # burn CPU, then the worker is killed at its deadline
            assert c.post("/v1/tenants/beta/scripts/spin", json={"timeout": 0.4}).json()["error"]["code"] == "timeout"
    after = read()
    # the killed workers' CPU stays counted after they are gone (the exact
    # figure depends on how much of its 0.4 s the spin got on a shared machine)
    assert after["scriptvisor_worker_cpu_seconds_total"] > before.get("scriptvisor_worker_cpu_seconds_total", 0) + 0.05


def test_cpu_counter_never_drops_when_workers_exit() -> None:
    from scriptvisor.engine.server.metrics import _CpuLedger

    ledger = _CpuLedger()
    one = {"tenants": {"t": {"workers": [{"worker_id": 1, "cpu_s": 2.0}, {"worker_id": 2, "cpu_s": 1.0}]}}}
    assert ledger.values(one) == {"t": 3.0}
    ledger.on_exit(1, None, "t")  # worker 1 exits: its last figure is retired, not lost
    two = {"tenants": {"t": {"workers": [{"worker_id": 2, "cpu_s": 1.5}, {"worker_id": 3, "cpu_s": 0.1}]}}}
    assert ledger.values(two) == {"t": 3.6}
    ledger.on_exit(3, None, "t")
    ledger.on_exit(2, None, "t")
    assert ledger.values({"tenants": {}}) == {"t": 3.6}
    # a worker that died between scrapes after its last reading: never below the last export
    ledger2 = _CpuLedger()
    assert ledger2.values(one) == {"t": 3.0}
    ledger2.seen.clear()  # (as if its figures were never seen)
    ledger2.on_exit(1, None, "t")
    assert ledger2.values({"tenants": {"t": {"workers": []}}}) == {"t": 3.0}


def test_token_list_and_revoke_from_the_cli_take_effect_at_once(server: Server) -> None:
    from click.testing import CliRunner

    from scriptvisor.engine.cli import main

    make_tenant(server.tenants_dir, "rotating", "")
    runner = CliRunner()
    tenants = str(server.tenants_dir)
    empty = runner.invoke(main, ["token", "list", "rotating", "--tenants", tenants])
    assert empty.exit_code == 0 and "token create rotating" in empty.output  # the hint, not an empty table
    old = runner.invoke(main, ["token", "create", "rotating", "--tenants", tenants, "--name", "old"]).output.strip()
    new = runner.invoke(main, ["token", "create", "rotating", "--tenants", tenants, "--name", "new"]).output.strip()
    listed = runner.invoke(main, ["token", "list", "rotating", "--tenants", tenants])
    assert listed.exit_code == 0 and "old" in listed.output and "new" in listed.output
    assert old not in listed.output and new not in listed.output
    rows = json.loads(runner.invoke(main, ["token", "list", "rotating", "--tenants", tenants, "--json"]).output)
    assert [r["name"] for r in rows] == ["old", "new"] and all(r["created"] for r in rows)
    with server.client(token=old) as c:
        assert c.post("/v1/tenants/rotating/scripts/noop", json={}).status_code == 200
    toml = server.tenants_dir / "rotating" / "tenant.toml"
    stamp = toml.stat()
    revoked = runner.invoke(main, ["token", "revoke", "rotating", rows[0]["id"], "--tenants", tenants])
    assert revoked.exit_code == 0 and "revoked token" in revoked.output
    os.utime(toml, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))  # coarse clocks
    with server.client(token=old) as c:
        assert c.post("/v1/tenants/rotating/scripts/noop", json={}).status_code == 401
    with server.client(token=new) as c:
        assert c.post("/v1/tenants/rotating/scripts/noop", json={}).status_code == 200
    bad = runner.invoke(main, ["token", "revoke", "rotating", "zz", "--tenants", tenants])
    assert bad.exit_code == 2 and "token list" in bad.output


def test_a_removed_tenant_folder_leaves_the_listing_and_its_workers_are_retired(server: Server) -> None:
    import shutil

    folder = make_tenant(server.tenants_dir, "vanishing", "")
    token = auth.create_token(server.tenants_dir, "vanishing")
    with server.client(token=token) as c:
        assert c.post("/v1/tenants/vanishing/scripts/noop", json={}).status_code == 200
    with server.client(token=ADMIN_TOKEN) as c:
        assert "vanishing" in {t["name"] for t in c.get(ADMIN).json()["tenants"]}
        shutil.rmtree(folder)
        r = c.get(ADMIN)
    check_openapi("get", ADMIN, r)
    assert "vanishing" not in {t["name"] for t in r.json()["tenants"]}  # not "invalid: missing" forever
    # the registry's on_remove ran engine.remove_tenant (its idle workers retired at once)
    assert [e["tenant"] for e in server.oplog() if e["event"] == "tenant_removed"] == ["vanishing"]
    with server.client(token=token) as c:
        assert c.post("/v1/tenants/vanishing/scripts/noop", json={}).status_code == 401


def test_a_tenant_without_a_token_is_logged_with_the_command_to_fix_it(server: Server) -> None:
    make_tenant(server.tenants_dir, "tokenless", "")
    with server.client(token=ADMIN_TOKEN) as c:
        rows = {t["name"]: t for t in c.get(ADMIN).json()["tenants"]}  # the listing loads new folders
    assert rows["tokenless"]["tokens"] == 0
    [line] = [x for x in server.oplog() if x["event"] == "tenant_without_token" and x["tenant"] == "tokenless"]
    assert line["level"] == "warning"
    assert line["hint"].endswith(f"token create tokenless --tenants {server.tenants_dir}")
