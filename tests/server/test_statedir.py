"""One engine state directory per server (issue 14): two servers on one host never
share scratch mount points, and same-named tenants of two tenants folders never
share a uid; a state directory is locked while its server runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from scriptvisor.engine.config import EngineConfig
from scriptvisor.engine.server import auth
from scriptvisor.engine.server.statedir import ServerStateDir, StateDirBusy, server_state_dir
from server_harness import make_tenant, start_server


def _listening(log: Path) -> dict:
    return next(e for e in map(json.loads, log.read_text().splitlines()) if e.get("event") == "listening")


def _worker_uids(pid: int) -> set[int]:
    """Real uids of the server's workers (the zygote runs as the server's user)."""
    procs = psutil.Process(pid).children(recursive=True)
    return {p.uids().real for p in procs} - {os.getuid()}


def test_two_servers_on_one_host_have_separate_state(tmp_path: Path) -> None:
    servers = []
    try:
        for name in ("one", "two"):
            root = tmp_path / name
            make_tenant(root, "acme")
            servers.append(start_server(root, tmp_path / f"{name}.jsonl", {"acme": auth.create_token(root, "acme")}))
        for srv in servers:
            with srv.client("acme") as c:
                r = c.post("/v1/tenants/acme/scripts/echo", json={"args": ["hi"]})
            assert r.status_code == 200 and r.json()["result"] == "hi", r.text

        dirs = [_listening(srv.log_file)["state_dir"] for srv in servers]
        assert dirs[0] != dirs[1]
        base = EngineConfig().state_dir
        for srv, d in zip(servers, dirs):
            port = int(srv.url.rsplit(":", 1)[1])
            assert d == server_state_dir(base, "127.0.0.1", port)
            assert Path(d, "server.lock").read_text().strip() == str(srv.proc.pid)
        if os.geteuid() == 0:  # per-tenant uids exist only under a root supervisor
            uids = [_worker_uids(srv.proc.pid) for srv in servers]
            assert uids[0] and uids[1] and not uids[0] & uids[1], uids
            mapping = json.loads(Path(base, "uids.json").read_text())
            keys = [os.path.realpath(tmp_path / n / "acme" / "data") for n in ("one", "two")]
            assert {mapping[k] for k in keys} == uids[0] | uids[1]
    finally:
        for srv in servers:
            assert srv.stop() == 0, srv.proc.stderr.read()


def test_cant_start_a_second_server_on_a_state_dir_in_use(tmp_path: Path) -> None:
    root = tmp_path / "tenants"
    make_tenant(root, "acme")
    state = tmp_path / "state"
    first = subprocess.Popen(
        [sys.executable, "-m", "scriptvisor.engine.cli", "serve", "--tenants", str(root), "--port", "0",
         "--state-dir", str(state), "--log-file", str(tmp_path / "first.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in first.stdout.readline()
        second = subprocess.run(
            [sys.executable, "-m", "scriptvisor.engine.cli", "serve", "--tenants", str(root), "--port", "0",
             "--state-dir", str(state), "--log-file", str(tmp_path / "second.jsonl")],
            capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert f"in use by another scriptvisor server (pid {first.pid})" in second.stderr
    finally:
        first.terminate()
        assert first.wait(60) == 0
    # released on exit: the next server may take it
    with ServerStateDir(str(state)):
        pass


def test_state_dir_lock_and_scratch_cleanup(tmp_path: Path) -> None:
    d = ServerStateDir(str(tmp_path / "s")).acquire()
    try:
        (tmp_path / "s" / "scratch" / "acme" / "1").mkdir(parents=True)
        with pytest.raises(StateDirBusy, match=str(os.getpid())):
            ServerStateDir(str(tmp_path / "s")).acquire()
        cfg = d.engine_config(EngineConfig(state_dir="/host-wide"))
        assert cfg.state_dir == str(tmp_path / "s") and cfg.uid_dir == "/host-wide"
    finally:
        d.release()
    assert not (tmp_path / "s" / "scratch").exists()
    assert server_state_dir("/b", "::1", 80) == "/b/servers/__1-80"
