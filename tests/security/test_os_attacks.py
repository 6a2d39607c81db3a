"""OS-layer attack suite: each attack runs as plain Python inside a confined
worker (``Engine.debug_exec``, test-only), i.e. as if RestrictedPython had
already been broken. Each test names the layer that stops the attack and
asserts the exact outcome.

Runs as root in CI (every layer active). The root-only layers (tenant uid,
RLIMIT_NPROC, tmpfs quota) are checked here only when the supervisor is root;
tests/security/test_os_unprivileged.py covers the non-root supervisor.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket

import pytest

from scriptvisor.engine import Engine, EngineConfig, TenantLimits

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="root-only layer; see test_os_unprivileged.py")


def _config(tmp_path, **kw):
    kw.setdefault("debug_exec", True)
    kw.setdefault("limits", TenantLimits(timeout=10.0))
    return EngineConfig(state_dir=str(tmp_path / "state"), **kw)


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    os.environ["SCRIPTVISOR_TEST_SECRET"] = "hunter2"  # must never reach a worker
    try:
        e = Engine(_config(tmp_path_factory.mktemp("os"))).start()
    finally:
        del os.environ["SCRIPTVISOR_TEST_SECRET"]
    e.configure_tenant("t1")
    e.configure_tenant("t2")
    yield e
    e.close()


def run(eng, tenant, code, **kw):
    return eng.debug_exec(tenant, code, **kw)


def assert_denied(res, name, err):
    assert res.ok is False, res.to_dict()
    assert res.error["code"] == "script_error"
    assert (res.error["name"], res.error["errno"]) == (name, err), res.error


def _wait_dead(pid, timeout=10.0):
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


# -- reading what is not ours ------------------------------------------------

def test_cant_read_etc_passwd_os(eng):
    """Landlock: /etc is not readable, only a few resolver/TLS files are."""
    assert_denied(run(eng, "t1", "result = open('/etc/passwd').read()"),
                  "PermissionError", errno.EACCES)


def test_cant_list_root_directory_os(eng):
    """Landlock: no READ_DIR outside the granted trees."""
    assert_denied(run(eng, "t1", "import os; result = os.listdir('/')"),
                  "PermissionError", errno.EACCES)


def test_cant_read_supervisor_state_dir(eng):
    """Landlock (+ uid): the uid map and other tenants' dirs in state_dir are invisible."""
    state = eng.config.state_dir
    res = run(eng, "t1", f"import os; result = os.listdir({state!r})")
    assert_denied(res, "PermissionError", errno.EACCES)


def test_cant_read_project_or_tenant_files(eng, tmp_path):
    """Landlock: only the sandbox/engine packages are readable, not the repo or tenants dir."""
    tenants = tmp_path / "tenants" / "t2"
    tenants.mkdir(parents=True)
    (tenants / "login.py").write_text("SECRET = 1\n")
    for path in (str(tenants / "login.py"), os.path.abspath("pyproject.toml")):
        assert_denied(run(eng, "t1", f"result = open({path!r}).read()"),
                      "PermissionError", errno.EACCES)


def test_cant_read_proc_of_the_supervisor(eng):
    """Landlock: /proc is not granted, so no environ/cmdline/maps of other processes."""
    res = run(eng, "t1", f"result = open('/proc/{os.getpid()}/environ', 'rb').read()")
    assert_denied(res, "PermissionError", errno.EACCES)


def test_cant_read_another_tenants_scratch(eng):
    """Landlock (+ uid, 0700 dirs): a worker only reaches its own scratch dir."""
    res = run(eng, "t2", "import os; open('mine', 'w').write('t2 secret'); result = os.getcwd()")
    assert res.ok, res.to_dict()
    other = res.result
    res = run(eng, "t1", f"result = open({other + '/mine'!r}).read()")
    assert_denied(res, "PermissionError", errno.EACCES)


# -- writing where we should not ----------------------------------------------

@pytest.mark.parametrize("path", ["/tmp/scriptvisor-escape", "/dev/shm/scriptvisor-escape"])
def test_cant_write_outside_scratch(eng, path):
    """Landlock: write access is granted only beneath the scratch and data dirs."""
    res = run(eng, "t1", f"open({path!r}, 'w').write('x')")
    assert_denied(res, "PermissionError", errno.EACCES)
    assert not os.path.exists(path)


def test_cant_leave_a_file_for_the_next_worker(tmp_path):
    """Per-worker scratch, discarded when the worker is recycled (tmpfs unmounted as root)."""
    with Engine(_config(tmp_path)) as e:
        first = run(e, "t1", "import os; open('left', 'w').write('x'); result = [os.getpid(), os.getcwd()]")
        assert first.ok, first.to_dict()
        # Kill the worker that wrote the file (not whichever worker the next
        # call lands on: an idle spare may take a call before the warm worker).
        os.kill(first.result[0], signal.SIGKILL)
        assert _wait_dead(first.result[0])
        nxt = run(e, "t1", "import os; result = [os.getpid(), os.getcwd(), os.listdir('.')]")
        assert nxt.ok, nxt.to_dict()
        assert nxt.result[0] != first.result[0]
        assert nxt.result[2] == []
        old = first.result[1]
        assert nxt.result[1] != old
        # Gone (cleanup ran) or, if the zygote has not reaped yet, out of reach (Landlock).
        res = run(e, "t1", f"result = open({old + '/left'!r}).read()")
        assert (res.error["name"], res.error["errno"]) in (
            ("FileNotFoundError", errno.ENOENT), ("PermissionError", errno.EACCES))


# -- other processes -----------------------------------------------------------

def test_cant_signal_the_supervisor(eng):
    """Landlock scope (ABI 6) + uid: no signal leaves the worker's domain (signal 0 probes)."""
    res = run(eng, "t1", f"import os; os.kill({os.getpid()}, 0)")
    assert_denied(res, "PermissionError", errno.EPERM)


def test_cant_signal_another_worker(eng):
    """Landlock scope + uid: a worker cannot signal another tenant's worker."""
    other = run(eng, "t2", "import os; result = os.getpid()")
    assert other.ok
    res = run(eng, "t1", f"import os, signal; os.kill({other.result}, signal.SIGKILL)")
    assert_denied(res, "PermissionError", errno.EPERM)
    again = run(eng, "t2", "import os; result = os.getpid()")
    assert again.result == other.result  # still alive, same worker


def test_cant_ptrace_another_process(eng):
    """seccomp: ptrace returns EPERM (so do process_vm_readv/writev)."""
    code = (f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"rc = libc.ptrace(16, {os.getpid()}, 0, 0)\n"  # PTRACE_ATTACH
            f"result = [rc, ctypes.get_errno()]")
    res = run(eng, "t1", code)
    assert res.result == [-1, errno.EPERM]


def test_cant_outlive_the_zygote(tmp_path):
    """PR_SET_PDEATHSIG(SIGKILL): a worker dies with its zygote."""
    with Engine(_config(tmp_path)) as e:
        res = run(e, "t1", "import os; result = [os.getpid(), os.getppid()]")
        worker, zygote = res.result
        os.kill(zygote, signal.SIGKILL)
        assert _wait_dead(worker)


# -- network -----------------------------------------------------------------

def test_cant_connect_to_a_port_not_allowed(eng):
    """Landlock net (ABI 4): TCP connect only to the tenant's allowed ports (none here)."""
    code = "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 5432))"
    assert_denied(run(eng, "t1", code), "PermissionError", errno.EACCES)


def test_allowed_port_is_reachable(tmp_path):
    """Landlock net: the allowed port is not blocked (the server may or may not listen)."""
    with Engine(_config(tmp_path)) as e:
        e.configure_tenant("db", limits=TenantLimits(timeout=10.0, allowed_ports=(5432,)))
        code = ("import socket\ns = socket.socket()\ns.settimeout(2)\n"
                "try:\n    s.connect(('127.0.0.1', 5432)); result = 'connected'\n"
                "except ConnectionRefusedError:\n    result = 'refused'")
        res = run(e, "db", code)
        assert res.ok and res.result in ("connected", "refused"), res.to_dict()
        denied = run(e, "db", "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 3306))")
        assert_denied(denied, "PermissionError", errno.EACCES)


def test_cant_bind_a_port(eng):
    """Landlock net: BIND_TCP is handled and never granted."""
    code = "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))"
    assert_denied(run(eng, "t1", code), "PermissionError", errno.EACCES)


@pytest.mark.parametrize("family,kind,proto", [
    (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    (socket.AF_PACKET, socket.SOCK_RAW, 0),
    (socket.AF_NETLINK, socket.SOCK_RAW, 0),
    (socket.AF_UNIX, socket.SOCK_STREAM, 0),
    (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP),
    (socket.AF_INET, socket.SOCK_DGRAM, 0),  # no UDP without egress ports
])
def test_cant_open_raw_packet_netlink_unix_or_udp_sockets(eng, family, kind, proto):
    """seccomp: socket() only for AF_INET/AF_INET6 TCP (UDP only with allowed ports)."""
    res = run(eng, "t1", f"import socket\nsocket.socket({int(family)}, {int(kind)}, {proto})")
    assert_denied(res, "PermissionError", errno.EPERM)


def test_cant_use_abstract_unix_sockets(eng):
    """seccomp (AF_UNIX) and Landlock scope: no talking to host daemons over unix sockets."""
    res = run(eng, "t1", "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0x')")
    assert_denied(res, "PermissionError", errno.EPERM)


# -- processes and privileges ------------------------------------------------

def test_cant_fork(eng):
    """seccomp: fork/vfork and clone without CLONE_THREAD return EPERM."""
    assert_denied(run(eng, "t1", "import os; os.fork()"), "PermissionError", errno.EPERM)


def test_cant_spawn_a_program(eng):
    """seccomp: posix_spawn (clone(CLONE_VFORK)) and execve are denied."""
    res = run(eng, "t1", "import os; os.posix_spawn('/bin/true', ['true'], {})")
    assert_denied(res, "PermissionError", errno.EPERM)
    res = run(eng, "t1", "import os; os.execv('/bin/true', ['true'])")
    assert_denied(res, "PermissionError", errno.EPERM)


def test_cant_use_subprocess(eng):
    """seccomp: subprocess cannot start anything."""
    res = run(eng, "t1", "import subprocess; subprocess.run(['/bin/true'])")
    assert_denied(res, "PermissionError", errno.EPERM)


@pytest.mark.parametrize("name,nr,args", [
    ("unshare", 272, (0x10000000,)),      # CLONE_NEWUSER
    ("mount", 165, (0, 0, 0, 0, 0)),
    ("bpf", 321, (0, 0, 0)),
    ("io_uring_setup", 425, (1, 0)),
    ("keyctl", 250, (0, 0)),
    ("perf_event_open", 298, (0, 0, -1, -1, 0)),
    ("userfaultfd", 323, (0,)),
])
def test_cant_reach_kernel_objects_outside_the_worker(eng, name, nr, args):
    """seccomp: namespace/mount/bpf/io_uring/keyring/perf syscalls return EPERM."""
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers in this table are x86_64")
    code = (f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"rc = libc.syscall({nr}, *{args!r})\nresult = [rc, ctypes.get_errno()]")
    assert run(eng, "t1", code).result == [-1, errno.EPERM], name


def test_cant_gain_privileges(eng):
    """no_new_privs is set; as root the worker runs as its tenant uid without groups."""
    code = ("import ctypes, os\nresult = [ctypes.CDLL(None).prctl(39, 0, 0, 0, 0),"
            " os.getuid(), os.geteuid(), os.getgroups()]")
    res = run(eng, "t1", code)
    nnp, uid, euid, groups = res.result
    assert nnp == 1
    if ROOT:
        assert uid == euid and uid >= eng.config.uid_base and groups == []
        assert_denied(run(eng, "t1", "import os; os.setuid(0)"), "PermissionError", errno.EPERM)


@needs_root
def test_cant_share_a_uid_with_another_tenant(eng):
    """uid: every tenant runs under its own uid from the configured range."""
    a = run(eng, "t1", "import os; result = os.getuid()").result
    b = run(eng, "t2", "import os; result = os.getuid()").result
    assert a != b
    assert {a, b} <= set(range(eng.config.uid_base, eng.config.uid_base + eng.config.uid_count))


# -- resources ----------------------------------------------------------------

def test_cant_allocate_beyond_the_memory_limit(tmp_path):
    """RLIMIT_AS: a huge allocation is a MemoryError, the worker lives on."""
    with Engine(_config(tmp_path)) as e:
        e.configure_tenant("m", limits=TenantLimits(timeout=10.0, memory_mb=256))
        res = run(e, "m", "s = 'a' * (10 ** 9)")
        assert (res.error["code"], res.error["name"]) == ("script_error", "MemoryError")
        assert run(e, "m", "result = 1").result == 1


def test_cant_use_too_much_cpu(tmp_path):
    """RLIMIT_CPU: the soft limit arrives as SIGXCPU, reported as a crash."""
    with Engine(_config(tmp_path)) as e:
        e.configure_tenant("c", limits=TenantLimits(timeout=20.0, cpu_seconds=1))
        res = run(e, "c", "while True: pass")
        assert res.error["code"] == "crash"
        assert res.error["signal"] == signal.SIGXCPU


def test_cant_write_a_huge_file(tmp_path):
    """RLIMIT_FSIZE: writing past file_size_mb fails with EFBIG (SIGXFSZ is ignored)."""
    with Engine(_config(tmp_path)) as e:
        e.configure_tenant("f", limits=TenantLimits(timeout=10.0, file_size_mb=1))
        res = run(e, "f", "f = open('big', 'wb', buffering=0)\nf.write(b'x' * (2 * 1024 * 1024))\n"
                          "f.write(b'x')")
        assert_denied(res, "OSError", errno.EFBIG)


@needs_root
def test_cant_fill_the_disk_with_many_small_files(tmp_path):
    """scratch quota (tmpfs nr_inodes): file creation fails with ENOSPC."""
    with Engine(_config(tmp_path)) as e:
        e.configure_tenant("q", limits=TenantLimits(timeout=10.0, scratch_mb=2))
        code = ("n = 0\ntry:\n    for i in range(100000):\n"
                "        open(f'f{i}', 'w').close(); n += 1\n"
                "except OSError as exc:\n    result = [n, exc.errno]")
        n, err = run(e, "q", code).result
        assert err == errno.ENOSPC and n < 100


@needs_root
def test_cant_exceed_the_scratch_quota(tmp_path):
    """scratch quota (tmpfs size=scratch_mb): bytes beyond it fail with ENOSPC."""
    with Engine(_config(tmp_path)) as e:
        e.configure_tenant("q", limits=TenantLimits(timeout=10.0, scratch_mb=2, file_size_mb=16))
        code = ("chunk = b'x' * 65536\nn = 0\ntry:\n    with open('big', 'wb') as f:\n"
                "        for i in range(1000):\n            f.write(chunk); f.flush(); n += 1\n"
                "except OSError as exc:\n    result = [n, exc.errno]")
        n, err = run(e, "q", code).result
        assert err == errno.ENOSPC and n <= 2 * 16


@needs_root
def test_cant_thread_bomb(tmp_path):
    """RLIMIT_NPROC (per tenant uid): thread creation stops at the processes limit."""
    with Engine(_config(tmp_path)) as e:
        e.configure_tenant("b", limits=TenantLimits(timeout=10.0, processes=8))
        code = ("import _thread\nlock = _thread.allocate_lock(); lock.acquire()\nn = 0\n"
                "try:\n    for i in range(1000):\n"
                "        _thread.start_new_thread(lock.acquire, ()); n += 1\n"
                "except RuntimeError as exc:\n    result = [n, str(exc)]")
        n, msg = run(e, "b", code).result
        assert n < 8 and msg == "can't start new thread"


def test_cant_open_too_many_files(tmp_path):
    """RLIMIT_NOFILE: descriptors beyond open_files fail with EMFILE."""
    with Engine(_config(tmp_path)) as e:
        e.configure_tenant("n", limits=TenantLimits(timeout=10.0, open_files=16))
        code = ("fs = []\ntry:\n    for i in range(1000): fs.append(open('/dev/null'))\n"
                "except OSError as exc:\n    result = [len(fs), exc.errno]")
        n, err = run(e, "n", code).result
        assert err == errno.EMFILE and n < 16


# -- environment ----------------------------------------------------------------

def test_cant_see_supervisor_environment_variables(eng):
    """env scrub: a worker sees a fixed, tiny environment (C environ included)."""
    code = ("import os, ctypes\nlibc = ctypes.CDLL(None)\nlibc.getenv.restype = ctypes.c_char_p\n"
            "result = [sorted(os.environ), libc.getenv(b'SCRIPTVISOR_TEST_SECRET')]")
    res = run(eng, "t1", code)
    assert res.result == [["HOME", "LANG", "LC_ALL", "PATH", "TMPDIR"], None]
