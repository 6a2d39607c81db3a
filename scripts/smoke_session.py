"""The smoke session of an installed (non-editable) scriptvisor wheel.

Run by scripts/smoke_wheel.sh with the interpreter of a fresh virtualenv into
which the wheel was installed the way deploy/README.md says; stdlib only.
Each step prints one line; the first failure exits 1 with what went wrong.

    python smoke_session.py VENV WORKDIR REPO

Steps: the installed files (no top-level engine/sandbox/bench, code from
site-packages), ``init`` for every template, ``check`` of their scripts,
``doctor``, ``connection login``, ``run`` of a script using
``datetime.strptime``, ``serve`` with no arguments plus one HTTP call, the
systemd unit's ExecStart as systemd would run it (Type=notify readiness,
SIGHUP log reopen, SIGTERM drain), the facade and language-layer tests
against the installed package, and ``bench recycle --quick``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

VENV, WORK, REPO = (Path(arg) for arg in sys.argv[1:4])
BIN = VENV / "bin"
SV = str(BIN / "scriptvisor")
TEMPLATES = ("sqlite", "postgres", "mysql", "webservice")
LOGIN = ["alice@example.com", "wonderland"]
ALICE = {"user_id": "1", "email": "alice@example.com", "nickname": "alice", "email_verified": True}
# a private HOME: serve's example copy, and nothing of the caller's
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SCRIPTVISOR_", "VIRTUAL_ENV"))}
ENV.update(HOME=str(WORK / "home"), SCRIPTVISOR_HOME=str(WORK / "home" / "scriptvisor"),
           PATH=f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def step(name: str, ok: bool, detail: object = "") -> None:
    print(f"smoke {PY}: {'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail != "" else ""), flush=True)
    if not ok:
        sys.exit(1)


def sv(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SV, *args], cwd=WORK, env=ENV, capture_output=True, text=True, timeout=timeout)


def installed_files() -> None:
    out = subprocess.run([str(BIN / "python"), "-m", "pip", "show", "-f", "scriptvisor"],
                         env=ENV, capture_output=True, text=True, check=True).stdout
    files = [line.strip() for line in out.split("Files:", 1)[1].splitlines() if line.strip()]
    tops = {f.split("/", 1)[0] for f in files if not f.startswith("..")}
    step("pip show -f: only scriptvisor/ and its dist-info (no top-level engine, sandbox, bench)",
         {t for t in tops if not t.endswith(".dist-info")} == {"scriptvisor"}, sorted(tops))
    where = subprocess.run([str(BIN / "python"), "-c", "import scriptvisor.engine as e; print(e.__file__)"],
                           cwd=WORK, env=ENV, capture_output=True, text=True, check=True).stdout.strip()
    step("code comes from the venv's site-packages", where.startswith(str(VENV / "lib")) and "site-packages" in where, where)


def init_check_login() -> Path:
    tenants = WORK / "tenants"
    for template in TEMPLATES:
        res = sv("init", str(tenants / template), "--template", template)
        made = sorted(p.name for p in (tenants / template / "scripts").glob("*.py"))
        step(f"init --template {template}", res.returncode == 0 and "login.py" in made
             and (tenants / template / "tenant.toml").is_file(), res.stderr.strip() or f"{len(made)} scripts")
        res = sv("check", *(str(tenants / template / "scripts" / m) for m in made))
        step(f"check {template} scripts", res.returncode == 0, (res.stdout + res.stderr).strip())
    res = sv("doctor", "--json")
    layers = json.loads(res.stdout)["layers"] if res.returncode == 0 else []
    step("doctor --json", res.returncode == 0 and bool(layers),
         " ".join(f"{x['name']}={'on' if x['active'] else 'off'}" for x in layers) or res.stderr.strip())
    res = sv("connection", "login", "--tenant-dir", str(tenants / "sqlite"), "--json", *LOGIN)
    out = json.loads(res.stdout) if res.stdout.strip() else {}
    step("connection login (sqlite)", res.returncode == 0 and out.get("result") == ALICE, out or res.stderr)
    return tenants


def run_strptime() -> None:
    script = WORK / "dates.py"
    script.write_text(
        "import datetime\n"
        "def parse(text, callback):\n"
        "    d = datetime.datetime.strptime(text, '%Y-%m-%d %H:%M')\n"
        "    callback(None, [d.isoformat(), d.strftime('%A')])\n")
    res = sv("run", str(script), "2024-02-29 13:45", "--fn", "parse", "--json")
    out = json.loads(res.stdout) if res.stdout.strip() else {}
    step("run (datetime.strptime)", res.returncode == 0 and out.get("result") == ["2024-02-29T13:45:00", "Thursday"],
         out.get("result") if res.returncode == 0 else (out.get("error") or res.stderr))


def post(url: str, body: object, token: str) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def serve_bare() -> None:
    """``scriptvisor serve`` exactly as the README says (port 8080: the caller
    gives this session its own network namespace, so nothing else holds it)."""
    # the command line stays bare; its per-server state folder (locked while it
    # runs, named after host:port) is this session's own, since another server
    # on this machine may serve 127.0.0.1:8080 in its own network namespace
    env = dict(ENV, SCRIPTVISOR_STATE_DIR=str(WORK / "state-serve"))
    proc = subprocess.Popen([SV, "serve"], cwd=WORK, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # blocks until the server listens (or exits)
        step("serve (no arguments) listens", first.startswith("scriptvisor listening on http://127.0.0.1:8080"),
             first.strip() or proc.stderr.read()[-2000:])
        shown = "".join(proc.stdout.readline() for _ in range(4))
        token = shown.split("Bearer ", 1)[1].split("'", 1)[0]
        out = post("http://127.0.0.1:8080/v1/tenants/example/scripts/login", {"args": LOGIN}, token)
        step("serve: POST /v1/tenants/example/scripts/login", out.get("ok") and out.get("result") == ALICE, out)
        with urllib.request.urlopen("http://127.0.0.1:8080/openapi.json", timeout=60) as resp:
            doc = json.loads(resp.read())
        step("serve: GET /openapi.json (package data)", doc.get("openapi", "").startswith("3."), doc.get("openapi"))
        proc.send_signal(signal.SIGTERM)
        step("serve: SIGTERM -> exit 0", proc.wait(60) == 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def systemd_unit(tenants: Path) -> None:
    """The unit's ExecStart with the unit's paths mapped into WORK, run as systemd would."""
    unit = (REPO / "deploy" / "systemd" / "scriptvisor@.service").read_text()
    service = unit.split("[Service]", 1)[1].split("\n[", 1)[0].replace("\\\n", " ")
    settings: dict[str, list[str]] = {}
    for line in service.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    step("unit: Type=notify, ExecReload sends SIGHUP", settings.get("Type") == ["notify"]
         and settings.get("ExecReload") == ["/bin/kill -HUP $MAINPID"], settings.get("Type"))
    port = "8081"
    node_tenants = WORK / "srv" / "tenants"
    node_tenants.mkdir(parents=True)
    os.rename(tenants / "sqlite", node_tenants / "acme")
    token = sv("token", "create", "acme", "--tenants", str(node_tenants)).stdout.strip()
    logs = WORK / "var-log"
    logs.mkdir()
    mapping = {"/opt/scriptvisor/venv": str(VENV), "/srv/scriptvisor/tenants": str(node_tenants),
               "/var/log/scriptvisor": str(logs), "%i": port, "%H": socket.gethostname()}

    def subst(text: str) -> str:
        for old, new in mapping.items():
            text = text.replace(old, new)
        return text

    argv = shlex.split(subst(settings["ExecStart"][0]))
    env = dict(ENV)
    for assignment in settings.get("Environment", []):
        key, value = subst(assignment).split("=", 1)
        env[key] = value
    # StateDirectory= (/var/lib/scriptvisor) is systemd's to create: use the
    # engine's default state folder, shared with every engine on this host,
    # so tenant uids stay agreed (engine/uids.py)
    env.pop("XDG_RUNTIME_DIR", None)
    env["SCRIPTVISOR_STATE_DIR"] = str(WORK / "state-unit")  # this server's own (see serve_bare)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(WORK / "notify.sock"))
    notify.settimeout(60)
    env["NOTIFY_SOCKET"] = str(WORK / "notify.sock")

    def message() -> dict[str, str]:
        return dict(line.split("=", 1) for line in notify.recv(4096).decode().splitlines() if line)

    proc = subprocess.Popen(argv, cwd="/", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready = message()
        step("unit: READY=1 via NOTIFY_SOCKET", ready.get("READY") == "1", ready.get("STATUS"))
        url = f"http://127.0.0.1:{port}/v1/tenants/acme/connection/login"
        out = post(url, {"args": LOGIN}, token)
        step("unit: POST connection/login", out.get("ok") and out.get("result") == ALICE, out)
        log = logs / f"node-{port}.jsonl"
        log.rename(logs / f"node-{port}.jsonl.1")
        proc.send_signal(signal.SIGHUP)  # ExecReload
        reload = [message(), message()]
        out = post(url, {"args": LOGIN}, token)
        step("unit: SIGHUP reopens the log file", reload[0].get("RELOADING") == "1" and reload[1].get("READY") == "1"
             and out.get("ok") and '"event":"invocation"' in log.read_text(), reload)
        proc.send_signal(signal.SIGTERM)  # systemctl stop (KillMode=mixed: the main process first)
        stopping = message()
        code = proc.wait(60)
        step("unit: SIGTERM -> STOPPING=1, exit 0", stopping.get("STOPPING") == "1" and code == 0,
             code or proc.stderr.read()[-2000:])
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def facade_tests() -> None:
    """The language layer and facade tests against the installed package on
    this interpreter: same results on all three.  On 3.11 the full suite
    (scripts/test.sh) has just run them from the tree, so they are left out."""
    if sys.version_info < (3, 12):
        return
    started = time.monotonic()
    res = subprocess.run([str(BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/sandbox/test_facades.py", "tests/sandbox/test_runner.py",
                          "tests/security/test_language_escapes.py", "tests/security/test_language_unpacking.py",
                          "tests/security/test_reachability.py", "tests/engine/test_timerfd.py"],
                         cwd=REPO, env=dict(ENV, SCRIPTVISOR_REQUIRE_SERVICES="1"),
                         capture_output=True, text=True, timeout=600)
    summary = (res.stdout.strip().splitlines() or [""])[-1]
    step("facade + language tests on the installed wheel", res.returncode == 0,
         f"{summary} ({time.monotonic() - started:.0f} s)" if res.returncode == 0 else res.stdout[-3000:])


def bench() -> None:
    started = time.monotonic()
    res = sv("bench", "recycle", "--quick", "--out", str(WORK / "bench"), timeout=600)
    results = WORK / "bench" / "results.json"
    step("bench recycle --quick", res.returncode == 0 and results.is_file(),
         f"{time.monotonic() - started:.0f} s" if res.returncode == 0 else res.stderr[-2000:])


def main() -> None:
    (WORK / "home").mkdir(parents=True, exist_ok=True)
    installed_files()
    tenants = init_check_login()
    run_strptime()
    serve_bare()
    systemd_unit(tenants)
    facade_tests()
    bench()


if __name__ == "__main__":
    main()
