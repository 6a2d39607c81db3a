"""Two scriptvisor nodes and nginx in front of them, all on loopback, for tests.

Everything is a subprocess started the way an operator would start it:

* a node is ``python -m scriptvisor.engine.cli serve --tenants DIR --port 0`` (the kernel
  picks a free port, the node prints it on its first stdout line), with
  ``SCRIPTVISOR_NODE_ID`` and ``SCRIPTVISOR_USER_STORE_DSN`` in its environment;
* nginx runs the configuration ``deploy/nginx/render.py`` renders from the
  shipped ``deploy/nginx/scriptvisor.conf``, with ``-p tmpdir`` so its pid
  file, logs and temp folders stay in the test's folder.  Readiness is read
  from nginx's own log on stderr ("start worker process"), never polled.

``Cluster.close()`` stops everything and reports any process left behind.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
RENDER = ROOT / "deploy" / "nginx" / "render.py"
HAPROXY_RENDER = ROOT / "deploy" / "haproxy" / "render.py"
#: Longest a process gets to start or to stop before the test gives up on it.
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def find_nginx() -> str | None:
    """The nginx binary (Debian installs it in /usr/sbin, often not on a user's PATH)."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def free_loopback_port() -> int:
    """A port nothing listens on right now (nginx binds it itself a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _LineReader:
    """Drains a subprocess pipe in a thread so it never fills; lines go to a queue."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self.queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)
            self.queue.put(line)
        self.queue.put(None)

    def wait_for(self, needle: str, timeout: float) -> str:
        """The first line containing ``needle``; raises if the stream ends or times out."""
        while True:
            try:
                line = self.queue.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no line with {needle!r} within {timeout} s") from None
            if line is None:
                raise EOFError(f"stream ended before a line with {needle!r}")
            if needle in line:
                return line

    def text(self) -> str:
        return "".join(self.lines)


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[str]
    url: str
    stdout: _LineReader
    stderr: _LineReader
    #: the node and every process it started (zygote, workers), recorded as
    #: they appear so that orphans can be found after the node is gone
    family: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def record_family(self) -> None:
        try:
            root = psutil.Process(self.proc.pid)
            self.family.setdefault(root.pid, root)
            for child in root.children(recursive=True):
                self.family.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def start_node(name: str, tenants_dir: Path, log_dir: Path, env: dict[str, str]) -> Node:
    log_dir.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ, SCRIPTVISOR_NODE_ID=name, **env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scriptvisor.engine.cli", "serve", "--tenants", str(tenants_dir),
         "--host", "127.0.0.1", "--port", "0", "--log-file", str(log_dir / f"{name}.jsonl")],
        cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    out, err = _LineReader(proc.stdout), _LineReader(proc.stderr)
    try:
        line = out.wait_for("listening on ", STARTUP_TIMEOUT)
    except (TimeoutError, EOFError) as exc:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)
        raise RuntimeError(f"node {name} did not start ({exc}):\n{out.text()}\n{err.text()}") from None
    node = Node(name, proc, line.split("listening on ", 1)[1].strip(), out, err)
    node.record_family()
    return node


@dataclass
class Nginx:
    proc: subprocess.Popen[str]
    url: str
    prefix: Path
    stderr: _LineReader

    def family(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text() if path.exists() else ""


def start_nginx(nginx: str, nodes: list[Node], prefix: Path) -> Nginx:
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    conf = prefix / "nginx.conf"
    rendered = subprocess.run(
        [sys.executable, str(RENDER), "--listen", f"127.0.0.1:{port}", "--prefix", str(prefix),
         *[arg for n in nodes for arg in ("--node", f"127.0.0.1:{n.port}")]],
        capture_output=True, text=True, check=True,
    )
    conf.write_text(rendered.stdout)
    proc = subprocess.Popen(
        [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf),
         # a second error log on stderr: "start worker process" there means the
         # listening socket is open (the master binds it before forking workers)
         "-g", "daemon off; error_log stderr notice;"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    err = _LineReader(proc.stderr)
    try:
        err.wait_for("start worker process", STARTUP_TIMEOUT)
    except (TimeoutError, EOFError) as exc:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)
        raise RuntimeError(f"nginx did not start ({exc}):\n{err.text()}") from None
    return Nginx(proc, f"http://127.0.0.1:{port}", prefix, err)


def find_haproxy() -> str | None:
    """The haproxy binary (Debian: /usr/sbin/haproxy)."""
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None
    )


@dataclass
class Haproxy:
    proc: subprocess.Popen[str]
    url: str
    stderr: _LineReader

    def family(self) -> list[psutil.Process]:
        try:
            return [psutil.Process(self.proc.pid)]
        except psutil.NoSuchProcess:
            return []


def start_haproxy(haproxy: str, nodes: list[Node], prefix: Path) -> Haproxy:
    """HAProxy running ``deploy/haproxy/haproxy.cfg`` (rendered for ``nodes``).

    The test binds the listening socket itself and hands it over as a file
    descriptor (``bind fd@N``): the port accepts connections from this moment
    on, so nothing has to wait for HAProxy to be ready.
    """
    prefix.mkdir(parents=True, exist_ok=True)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    fd = listener.fileno()
    conf = prefix / "haproxy.cfg"
    rendered = subprocess.run(
        [sys.executable, str(HAPROXY_RENDER), "--bind", f"fd@{fd}",
         *[arg for n in nodes for arg in ("--node", f"127.0.0.1:{n.port}")]],
        capture_output=True, text=True, check=True,
    )
    conf.write_text(rendered.stdout)
    proc = subprocess.Popen(
        [haproxy, "-db", "-f", str(conf)], pass_fds=(fd,),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()  # HAProxy holds its own copy
    return Haproxy(proc, url, _LineReader(proc.stderr))


@dataclass
class Cluster:
    nodes: dict[str, Node]
    nginx: Nginx | None
    token: str
    tenants_dir: Path | None = None
    #: nodes a test killed on purpose (their exit status is not checked)
    killed: set[str] = field(default_factory=set)
    haproxy: Haproxy | None = None

    def lb(self) -> httpx.Client:
        """A client of the balancer in front (nginx, or HAProxy when there is no nginx)."""
        front = self.nginx or self.haproxy
        assert front is not None
        return httpx.Client(base_url=front.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def close(self) -> list[str]:
        """Stop everything (SIGTERM, then SIGKILL); return descriptions of leftovers."""
        procs: list[psutil.Process] = []
        for node in self.nodes.values():
            node.record_family()
            procs.extend(node.family.values())
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        if self.nginx is not None:
            procs.extend(self.nginx.family())
            if self.nginx.proc.poll() is None:
                self.nginx.proc.send_signal(signal.SIGQUIT)  # graceful: finish requests, then exit
        if self.haproxy is not None:
            procs.extend(self.haproxy.family())
            if self.haproxy.proc.poll() is None:
                self.haproxy.proc.send_signal(signal.SIGUSR1)  # soft stop: finish sessions, then exit
        for node in self.nodes.values():
            _wait(node.proc)
        if self.nginx is not None:
            _wait(self.nginx.proc)
        if self.haproxy is not None:
            _wait(self.haproxy.proc)
        _, alive = psutil.wait_procs(procs, timeout=STOP_TIMEOUT)
        leftovers = []
        for p in alive:
            try:
                leftovers.append(f"pid {p.pid} {p.name()} {p.cmdline()[:3]}")
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=STOP_TIMEOUT)
        return leftovers


def _wait(proc: subprocess.Popen[str]) -> None:
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)
