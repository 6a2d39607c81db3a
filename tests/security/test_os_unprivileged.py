"""The confinement with a supervisor that is NOT root.

The root-only layers (tenant uid, RLIMIT_NPROC, tmpfs scratch quota) must be
reported unavailable with the reason, and every other layer must still hold.
Here DAC would allow most of these attacks (nobody may read /etc/passwd,
write /tmp, signal its own parent), so each denial is Landlock's or seccomp's.

How: a fresh interpreter, started as root by the test, imports what it needs
and then drops to ``nobody`` (setresuid) before playing the zygote. Not
``runuser -u nobody python``: on this host the interpreter lives under
/root (mode 0700), which nobody cannot even execute. When pytest itself runs
unprivileged, no drop is needed and the same tests run as that user.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import _os_harness as harness

NOBODY = 65534
DROP = NOBODY if os.geteuid() == 0 else None


@pytest.fixture
def pol():
    # Not tmp_path: pytest's base temp dir is 0700, unreachable for nobody.
    base = Path(tempfile.mkdtemp(prefix="scriptvisor-unpriv-"))
    if DROP is not None:
        os.chown(base, NOBODY, NOBODY)
    yield harness.policy(base)
    shutil.rmtree(base, ignore_errors=True)


def run(code, pol):
    return harness.run(code, pol, drop_to=DROP)


def test_doctor_reports_root_only_layers_unavailable(pol):
    """available(): uid and scratch quota need root; the others stay active."""
    layers = run("result = 1", pol)["layers"]
    assert layers["uid"] == [False, "supervisor is not root"]
    assert layers["scratch_quota"][0] is False
    assert layers["scratch_quota"][1].startswith("supervisor is not root")
    for name in ("setsid", "env_scrub", "rlimits", "pdeathsig", "no_new_privs", "landlock",
                 "landlock_net", "landlock_scope", "seccomp"):
        assert layers[name][0] is True, (name, layers[name])


def test_cant_read_etc_passwd_unprivileged(pol):
    """Landlock (DAC would allow nobody to read /etc/passwd)."""
    rep = run("result = open('/etc/passwd').read()", pol)
    assert rep["error"]["type"] == "PermissionError" and rep["error"]["errno"] == errno.EACCES


def test_cant_write_outside_scratch_unprivileged(pol):
    """Landlock (DAC would allow nobody to write /tmp)."""
    target = f"/tmp/scriptvisor-unpriv-{os.getpid()}"
    rep = run(f"open({target!r}, 'w').write('x')", pol)
    assert (rep["error"]["type"], rep["error"]["errno"]) == ("PermissionError", errno.EACCES)
    assert not os.path.exists(target)


def test_scratch_is_writable_unprivileged(pol):
    """The one read-write place works, so the denials above are not blanket failures."""
    rep = run("import os\nopen('f', 'w').write('x')\nresult = [os.getuid(), os.listdir('.')]", pol)
    assert rep["error"] is None
    assert rep["result"] == [DROP if DROP is not None else os.geteuid(), ["f"]]


def test_cant_fork_unprivileged(pol):
    """seccomp."""
    rep = run("import os; os.fork()", pol)
    assert (rep["error"]["type"], rep["error"]["errno"]) == ("PermissionError", errno.EPERM)


def test_cant_connect_or_bind_unprivileged(pol):
    """Landlock net: no allowed ports, no bind."""
    rep = run("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 5432))", pol)
    assert (rep["error"]["type"], rep["error"]["errno"]) == ("PermissionError", errno.EACCES)
    rep = run("import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))", pol)
    assert (rep["error"]["type"], rep["error"]["errno"]) == ("PermissionError", errno.EACCES)


def test_cant_signal_the_zygote_unprivileged(pol):
    """Landlock scope: same uid as the zygote, yet no signal leaves the worker's domain."""
    rep = run("import os; os.kill(os.getppid(), 0)", pol)
    assert (rep["error"]["type"], rep["error"]["errno"]) == ("PermissionError", errno.EPERM)


def test_no_new_privs_and_no_env_unprivileged(pol):
    """PR_SET_NO_NEW_PRIVS and the scrubbed environment do not need root."""
    code = "import ctypes, os\nresult = [ctypes.CDLL(None).prctl(39, 0, 0, 0, 0), sorted(os.environ)]"
    env = dict(os.environ, SCRIPTVISOR_TEST_SECRET="hunter2")
    rep = harness.run(code, pol, drop_to=DROP, env=env)
    assert rep["result"] == [1, ["HOME", "LANG", "LC_ALL", "PATH", "TMPDIR"]]
