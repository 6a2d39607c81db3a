"""The server under systemd: Type=notify readiness and a log file reopened on SIGHUP.

The service manager's side is played by a datagram socket bound in the test
(what systemd passes as $NOTIFY_SOCKET); deploy/systemd/scriptvisor@.service
uses exactly this (Type=notify, ExecReload sends SIGHUP), and
scripts/smoke_wheel.sh runs that unit's ExecStart from an installed wheel.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import psutil
import pytest

from scriptvisor.engine.server import auth
from scriptvisor.engine.server.sdnotify import Notifier
from server_harness import make_tenant, start_server


def _messages(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()  # blocks until the server sends (timeout set on the socket)
    return dict(line.split("=", 1) for line in data.splitlines() if line)


@pytest.fixture
def notify_socket(tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(60)
    yield sock, str(path)
    sock.close()


@pytest.mark.slow
def test_ready_after_listening_log_reopened_on_sighup_stopping_on_term(tmp_path: Path, notify_socket) -> None:
    sock, address = notify_socket
    tenants = tmp_path / "tenants"
    make_tenant(tenants, "alpha")
    tokens = {"alpha": auth.create_token(tenants, "alpha")}
    log = tmp_path / "node.jsonl"
    srv = start_server(tenants, log, tokens, env={"NOTIFY_SOCKET": address})
    try:
        ready = _messages(sock)
        assert ready["READY"] == "1" and ready["MAINPID"] == str(srv.proc.pid)
        assert ready["STATUS"].startswith("listening on 127.0.0.1:")
        # nothing the server started inherits the service manager's socket
        for child in psutil.Process(srv.proc.pid).children(recursive=True):
            assert "NOTIFY_SOCKET" not in child.environ()

        with srv.client("alpha") as c:
            assert c.post("/v1/tenants/alpha/scripts/echo", json={"args": [1]}).json()["ok"]
        rotated = tmp_path / "node.jsonl.1"
        log.rename(rotated)  # what logrotate does before it signals
        srv.proc.send_signal(signal.SIGHUP)
        assert _messages(sock)["RELOADING"] == "1"
        assert _messages(sock)["READY"] == "1"
        with srv.client("alpha") as c:
            assert c.post("/v1/tenants/alpha/scripts/echo", json={"args": [2]}).json()["ok"]
        srv.proc.send_signal(signal.SIGTERM)
        assert _messages(sock)["STOPPING"] == "1"
        assert srv.proc.wait(60) == 0
    finally:
        srv.stop()

    old = [line for line in rotated.read_text().splitlines() if '"invocation"' in line]
    new = log.read_text()
    assert len(old) == 1  # the first call, before the rotation
    assert '"event":"log_reopened"' in new and new.count('"event":"invocation"') == 1
    assert '"event":"stopped"' in new


def test_notifier_is_a_no_op_without_notify_socket_and_sends_to_abstract_names() -> None:
    assert Notifier(None).send(READY=1) is False
    assert Notifier("vsock:2:1234").active is False
    name = f"scriptvisor-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        assert Notifier("@" + name).send(READY=1, STATUS="a\nb") is True
        assert sock.recv(100) == b"READY=1\nSTATUS=a b\n"
