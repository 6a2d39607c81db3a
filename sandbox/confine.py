"""OS-level confinement of a worker: what the zygote prepares, what the child applies.

Contract with the zygote (single-threaded, the supervisor's user, maybe root)::

    prepare(policy)          # zygote, before fork: scratch dir (tmpfs when root),
                             # seccomp BPF compiled once, Landlock ruleset fd built
    pid = os.fork()
    # child: close every fd except the worker socket and keep_fds(policy)
    apply(policy)            # child, before any tenant code is compiled
    # zygote, after reaping the worker:
    cleanup_scratch(policy)  # unmount / move away the scratch dir, close the ruleset fd

``apply`` runs the layers in the order of docs/security.md: setsid, scrubbed
environment, rlimits, tenant uid/gid, PR_SET_PDEATHSIG (+ getppid re-check),
PR_SET_NO_NEW_PRIVS, Landlock, seccomp. A layer that the host provides but
that fails raises ``ConfinementFailed(layer, reason)``; the worker must exit.
A layer the host does not provide is skipped here and reported by
``available()`` (and ``scriptvisor doctor``): never silently.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import sys
import time
from typing import Any

from scriptvisor.sandbox import landlock, rlimits, seccomp
from scriptvisor.sandbox.wire import WorkerPolicy

__all__ = [
    "ConfinementFailed",
    "LAYERS",
    "WORKER_ENV",
    "apply",
    "available",
    "cleanup_scratch",
    "keep_fds",
    "prepare",
]

#: Every layer ``available()`` reports, in the order ``apply()`` uses them
#: (``interpreter_access`` is a host check that the uid layer depends on).
LAYERS = (
    "setsid", "env_scrub", "rlimits", "uid", "pdeathsig", "no_new_privs",
    "landlock", "landlock_net", "landlock_scope", "seccomp", "scratch_quota",
    "interpreter_access",
)

#: The whole environment a worker sees (plus HOME/TMPDIR = its scratch dir).
WORKER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}

#: Read-only for workers beyond the interpreter: shared libraries (late
#: dlopen of extension modules), TLS roots, resolver and time-zone data.
#: Not /etc as a whole: /etc/passwd, /etc/shadow and friends stay invisible.
SYSTEM_READ_ONLY = (
    "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib",
    "/etc/ld.so.cache", "/etc/ssl", "/usr/lib/ssl", "/usr/share/ca-certificates",
    "/etc/ca-certificates", "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf",
    "/etc/host.conf", "/etc/gai.conf", "/etc/services", "/etc/protocols",
    "/etc/localtime", "/usr/share/zoneinfo",
    "/dev/urandom", "/dev/random",
)
#: Device files a worker may read and write.
SYSTEM_READ_WRITE = ("/dev/null", "/dev/zero")

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39
_PR_GET_SECCOMP = 21
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x2, 0x4, 0x8
_MS_REC, _MS_PRIVATE = 0x4000, 0x40000
_MNT_DETACH = 2
#: tmpfs inodes per MiB of scratch quota: bounds the "many small files" attack.
INODES_PER_MB = 32

_libc = ctypes.CDLL(None, use_errno=True)
# Resolved once at import (in the zygote): a dlsym() after fork costs page faults.
_prctl = _libc.prctl
_clearenv = _libc.clearenv


class ConfinementFailed(Exception):
    """A layer the host provides could not be applied; the worker must not serve.

    ``layer`` is one of ``LAYERS``; ``reason`` says what failed (errno text).
    """

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(f"{layer}: {reason}")
        self.layer = layer
        self.reason = reason


# ---------------------------------------------------------------------------
# Zygote-side state (inherited by every worker through fork)

_zygote_pid: int | None = None
_programs: dict[bool, seccomp.Program] = {}      # allow_udp -> compiled BPF
_rulesets: dict[tuple[str, int], landlock.Ruleset] = {}  # (tenant, worker_id) -> fd
_mounted: set[str] = set()                        # scratch dirs that are tmpfs mounts
_private_ns: bool | None = None                   # zygote has its own mount namespace
_read_only: list[str] | None = None
_availability: dict[str, tuple[bool, str]] | None = None


def _key(policy: WorkerPolicy) -> tuple[str, int]:
    return (policy.tenant, policy.worker_id)


def _is_root() -> bool:
    return os.geteuid() == 0


def _errno_text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------
# Availability (doctor, start-up checks)

def available(config: Any = None) -> dict[str, tuple[bool, str]]:
    """``{layer: (active, reason)}`` for this host and this (supervisor) user."""
    root = _is_root()
    abi = landlock.abi_version()
    seccomp_lib, seccomp_why = seccomp.available()
    kernel_seccomp = _libc.prctl(_PR_GET_SECCOMP, 0, 0, 0, 0) >= 0
    nnp = _libc.prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) >= 0
    not_root = "supervisor is not root"
    out: dict[str, tuple[bool, str]] = {
        "setsid": (True, "own session and process group per worker"),
        "env_scrub": (True, f"workers see only {sorted(WORKER_ENV)} + HOME/TMPDIR"),
        "rlimits": (True, "AS, CPU, NOFILE, FSIZE, CORE=0, MEMLOCK=0"
                    + (", NPROC per tenant uid" if root else "; NPROC needs a tenant uid")),
    }
    if root:
        span = ""
        if config is not None:
            span = f" {config.uid_base}..{config.uid_base + config.uid_count - 1}"
        out["uid"] = (True, f"one uid/gid per tenant{span}, no supplementary groups")
        blocked = [b for b in map(_untraversable_ancestor, _interpreter_dirs()) if b]
        if blocked:
            out["interpreter_access"] = (
                False, f"{blocked[0]} is not searchable by other users: workers under a tenant "
                       f"uid cannot import modules the zygote did not preload (chmod o+x "
                       f"{blocked[0]}, or install Python outside it)")
        else:
            out["interpreter_access"] = (True, "tenant uids can read the interpreter and packages")
    else:
        out["uid"] = (False, not_root)
        out["interpreter_access"] = (True, "workers keep the supervisor's uid")
    out["pdeathsig"] = (True, "SIGKILL when the zygote dies")
    out["no_new_privs"] = (nnp, "PR_SET_NO_NEW_PRIVS" if nnp else "prctl refused it")
    if abi >= 1:
        out["landlock"] = (True, f"ABI {abi}: read-only system/interpreter, read-write scratch"
                                 " and data dir only")
    else:
        out["landlock"] = (False, "kernel without Landlock (or disabled at boot)")
    out["landlock_net"] = ((True, f"ABI {abi}: TCP connect to allowed ports only, no bind")
                           if abi >= 4 else (False, f"needs Landlock ABI >= 4 (kernel has {abi})"))
    out["landlock_scope"] = ((True, f"ABI {abi}: no signals out of the worker, no abstract"
                                    " unix sockets")
                             if abi >= 6 else (False, f"needs Landlock ABI >= 6 (kernel has {abi})"))
    if not kernel_seccomp:
        out["seccomp"] = (False, "kernel without seccomp")
    else:
        out["seccomp"] = (seccomp_lib, seccomp_why if not seccomp_lib else
                          f"{seccomp_why}: {len(seccomp.DENIED)} syscalls + clone/socket/ioctl"
                          " arguments -> EPERM")
    if root:
        out["scratch_quota"] = (True, "tmpfs per worker (size=scratch_mb, "
                                      f"{INODES_PER_MB} inodes/MiB) in the zygote's mount namespace")
    else:
        out["scratch_quota"] = (False, f"{not_root}: only RLIMIT_FSIZE bounds scratch files")
    return out


def _interpreter_dirs() -> list[str]:
    # sys.path may name entries that do not exist (python311.zip): nothing to load there.
    return sorted(p for p in {sys.base_prefix, sys.prefix, *[p for p in sys.path if p]}
                  if os.path.exists(p))


def _untraversable_ancestor(path: str) -> str | None:
    """First directory above ``path`` that other users cannot search (mode o-x)."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts) + 1):
        cur = os.sep.join(parts[:i]) or os.sep
        try:
            mode = os.stat(cur).st_mode
        except OSError:
            return cur
        if not mode & 0o001 and (cur != path or os.path.isdir(cur)):
            return cur
    return None


def _layers() -> dict[str, tuple[bool, str]]:
    global _availability
    if _availability is None:
        _availability = available()
    return _availability


# ---------------------------------------------------------------------------
# Zygote side

def prepare(policy: WorkerPolicy) -> None:
    """Per-worker work done in the zygote before fork (fast; no threads left)."""
    global _zygote_pid
    _zygote_pid = os.getpid()
    _make_scratch(policy)
    if not policy.confine:
        return
    layers = _layers()
    if layers["seccomp"][0]:
        allow_udp = bool(policy.allowed_ports)
        if allow_udp not in _programs:
            try:
                _programs[allow_udp] = seccomp.Program(seccomp.build(allow_udp=allow_udp))
            except Exception as exc:
                raise ConfinementFailed("seccomp", f"building the filter: {_errno_text(exc)}")
    if layers["landlock"][0]:
        key = _key(policy)
        old = _rulesets.pop(key, None)
        if old is not None:
            old.close()
        try:
            _rulesets[key] = _build_ruleset(policy)
        except (OSError, ValueError) as exc:
            raise ConfinementFailed("landlock", f"building the ruleset: {_errno_text(exc)}")


def keep_fds(policy: WorkerPolicy) -> set[int]:
    """Fds the forked child must keep open for ``apply`` (the Landlock ruleset)."""
    rs = _rulesets.get(_key(policy))
    return {rs.fd} if rs is not None and rs.fd >= 0 else set()


def _read_only_paths() -> list[str]:
    """Interpreter, stdlib, site-packages and our own packages; computed once."""
    global _read_only
    if _read_only is None:
        import importlib.util

        # The engine's package directory by lookup, not by import: the
        # sandbox never imports the engine.
        engine_dirs = importlib.util.find_spec("scriptvisor.engine").submodule_search_locations or []
        from scriptvisor import sandbox

        prefixes = {os.path.realpath(p) for p in
                    (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
        paths = set(prefixes)
        paths.add(os.path.realpath(os.path.dirname(sys.executable)))
        for entry in sys.path:
            # Only sys.path entries inside a prefix (stdlib, site-packages) or
            # zip imports: never a working directory that may hold tenants'
            # scripts or the supervisor's files.
            if not entry:
                continue
            real = os.path.realpath(entry)
            if any(real == p or real.startswith(p + os.sep) for p in prefixes):
                paths.add(real)
        for d in [*sandbox.__path__, *engine_dirs]:
            if d:
                paths.add(os.path.realpath(d))
        paths.update(SYSTEM_READ_ONLY)
        # A root or home-like grant would void the whole layer: refuse it loudly.
        broad = sorted(p for p in paths if p.count(os.sep) < 2 and p not in SYSTEM_READ_ONLY)
        if broad:
            raise ConfinementFailed("landlock", f"refusing to grant read access to {broad}")
        _read_only = sorted(paths)
    return _read_only


def _build_ruleset(policy: WorkerPolicy) -> landlock.Ruleset:
    abi = landlock.abi_version()
    rs = landlock.Ruleset.create(abi)
    try:
        for path in _read_only_paths():
            rs.allow_path(path, landlock.READ_ONLY)
        for path in SYSTEM_READ_WRITE:
            rs.allow_path(path, landlock.READ_WRITE)
        for path in (policy.scratch_dir, policy.data_dir):
            if path and not rs.allow_path(path, landlock.READ_WRITE):
                raise FileNotFoundError(errno.ENOENT, "read-write directory missing", path)
        if rs.handled_net:
            for port in policy.allowed_ports:
                rs.allow_port(int(port))
    except BaseException:
        rs.close()
        raise
    return rs


def _make_scratch(policy: WorkerPolicy) -> None:
    """Create ``policy.scratch_dir``: mode 0700, owned by the tenant uid.

    As root it is a tmpfs of ``scratch_mb`` with a bounded inode count, mounted
    in the zygote's private mount namespace (it vanishes with the zygote).
    """
    path = policy.scratch_dir
    if not path:
        return
    path = os.path.abspath(path)
    uid, gid = policy.uid, policy.gid
    parent = os.path.dirname(path)
    # The per-tenant parent: searchable (to reach one's own dir), not listable,
    # not writable by workers: nothing left there survives a recycle.
    os.makedirs(parent, mode=0o711, exist_ok=True)
    if path in _mounted:
        _unmount(path)
    if os.path.isdir(path) and os.listdir(path):
        _discard(path)  # a previous worker with the same id left files: never reuse them
    os.makedirs(path, mode=0o700, exist_ok=True)
    if uid is not None:
        _ensure_searchable(parent, uid)
        data_dir = policy.data_dir
        if data_dir and os.path.isdir(data_dir) and os.stat(data_dir).st_uid != uid:
            _give_data_dir(data_dir, int(uid), int(gid if gid is not None else uid))
    if _is_root() and policy.confine and _mount_namespace():
        mb = int(policy.limits.scratch_mb)
        owner = f",uid={uid},gid={gid if gid is not None else uid}" if uid is not None else ""
        opts = f"size={mb}m,nr_inodes={max(64, mb * INODES_PER_MB)},mode=0700{owner}"
        if _libc.mount(b"scriptvisor-scratch", path.encode(), b"tmpfs",
                       _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, opts.encode()) != 0:
            err = ctypes.get_errno()
            raise ConfinementFailed("scratch_quota", f"mount tmpfs on {path}: {os.strerror(err)}")
        _mounted.add(path)
    elif uid is not None:
        os.chown(path, uid, gid if gid is not None else uid)
    os.chmod(path, 0o700)


def _ensure_searchable(path: str, uid: int) -> None:
    """Tenant uids must be able to walk down to their scratch dir (o+x, never o+r/w)."""
    cur = os.path.abspath(path)
    while True:
        st = os.stat(cur)
        if st.st_uid != uid and not st.st_mode & 0o001:
            os.chmod(cur, (st.st_mode & 0o7777) | 0o001)
        nxt = os.path.dirname(cur)
        if nxt == cur:
            return
        cur = nxt


def _give_data_dir(data_dir: str, uid: int, gid: int) -> None:
    """The tenant's data dir (sqlite files) belongs to the tenant's uid."""
    _ensure_searchable(os.path.dirname(os.path.abspath(data_dir)), uid)
    os.chown(data_dir, uid, gid)
    os.chmod(data_dir, 0o700)
    for name in os.listdir(data_dir):
        full = os.path.join(data_dir, name)
        if not os.path.islink(full):
            os.chown(full, uid, gid)


def _mount_namespace() -> bool:
    """Give the zygote its own mount namespace once, so scratch tmpfs mounts never
    leak into the host and disappear with the zygote."""
    global _private_ns
    if _private_ns is None:
        ok = _libc.unshare(_CLONE_NEWNS) == 0
        if ok:
            ok = _libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) == 0
        _private_ns = ok
    return _private_ns


def _unmount(path: str) -> None:
    _libc.umount2(path.encode(), _MNT_DETACH)
    _mounted.discard(path)


def cleanup_scratch(policy: WorkerPolicy) -> None:
    """Zygote, after reaping the worker: drop its scratch files and ruleset fd.

    Cheap for the zygote whatever the worker left: a tmpfs is detached in one
    syscall; a plain directory is renamed into a trash dir and deleted by a
    short-lived grandchild (double fork, so the zygote only reaps the
    intermediate child, which exits at once).
    """
    rs = _rulesets.pop(_key(policy), None)
    if rs is not None:
        rs.close()
    path = policy.scratch_dir
    if not path:
        return
    path = os.path.abspath(path)
    if path in _mounted:
        _unmount(path)
        try:
            os.rmdir(path)
        except OSError:
            pass
        return
    if os.path.isdir(path):
        _discard(path)


def _discard(path: str) -> None:
    trash = os.path.join(os.path.dirname(os.path.dirname(path)), ".trash")
    os.makedirs(trash, mode=0o700, exist_ok=True)
    target = os.path.join(trash, f"{os.path.basename(os.path.dirname(path))}."
                                 f"{os.path.basename(path)}.{os.getpid()}.{id(path)}"
                                 f".{int.from_bytes(os.urandom(4), 'big')}")
    os.rename(path, target)
    pid = os.fork()
    if pid == 0:  # intermediate child: fork the deleter and leave at once
        try:
            if os.fork() == 0:
                os.closerange(3, 65536)  # hold no worker's socket open
                shutil.rmtree(target, ignore_errors=True)
            os._exit(0)
        except BaseException:
            os._exit(1)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # the zygote's own reaper got it first; it exited immediately anyway


# ---------------------------------------------------------------------------
# Child side

def apply(policy: WorkerPolicy, timings: dict[str, float] | None = None) -> None:
    """Confine the calling (forked, single-threaded) worker. Irreversible.

    ``timings`` (optional) receives the milliseconds each step took, for the
    cold-start figure of ``bench/``.
    """
    zygote = _zygote_pid if _zygote_pid is not None else os.getppid()
    clock = time.perf_counter
    last = [clock()]

    def mark(step: str) -> None:
        if timings is not None:
            now = clock()
            timings[step] = round((now - last[0]) * 1000.0, 4)
            last[0] = now
    try:
        if os.getsid(0) != os.getpid():
            os.setsid()
    except OSError as exc:
        raise ConfinementFailed("setsid", _errno_text(exc))
    _scrub_env(policy)
    mark("setsid_env_ms")
    if not policy.confine:
        return
    layers = _layers()
    uid, gid = policy.uid, policy.gid
    try:
        rlimits.apply(policy.limits, per_uid=uid is not None)
    except rlimits.RlimitError as exc:
        raise ConfinementFailed("rlimits", str(exc))
    mark("rlimits_ms")
    if uid is not None:
        gid = uid if gid is None else gid
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        except OSError as exc:
            raise ConfinementFailed("uid", f"dropping to {uid}:{gid}: {_errno_text(exc)}")
        if os.getuid() != uid or os.geteuid() != uid or os.getgroups():
            raise ConfinementFailed("uid", "credentials did not change")
    scratch = policy.scratch_dir
    if scratch:
        try:
            os.chdir(scratch)  # relative paths land in the scratch dir, not in "/"
        except OSError as exc:
            raise ConfinementFailed("uid", f"cannot enter scratch dir: {_errno_text(exc)}")
    mark("uid_ms")
    if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise ConfinementFailed("pdeathsig", os.strerror(ctypes.get_errno()))
    if os.getppid() != zygote:
        os._exit(0)  # the zygote died before we armed PDEATHSIG: nobody to serve
    if _prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise ConfinementFailed("no_new_privs", os.strerror(ctypes.get_errno()))
    mark("prctl_ms")
    if layers["landlock"][0]:
        rs = _rulesets.get(_key(policy))
        if rs is None or rs.fd < 0:
            raise ConfinementFailed("landlock", "prepare() did not build a ruleset")
        try:
            landlock.restrict_self(rs.fd)
        except OSError as exc:
            raise ConfinementFailed("landlock", _errno_text(exc))
        rs.close()
    mark("landlock_ms")
    if layers["seccomp"][0]:
        prog = _programs.get(bool(policy.allowed_ports))
        if prog is None:
            raise ConfinementFailed("seccomp", "prepare() did not build the filter")
        try:
            prog.install()
        except OSError as exc:
            raise ConfinementFailed("seccomp", _errno_text(exc))
    mark("seccomp_ms")


def _scrub_env(policy: WorkerPolicy) -> None:
    """Nothing of the supervisor's environment (secrets) reaches tenant code."""
    env = dict(WORKER_ENV)
    scratch = policy.scratch_dir
    if scratch:
        env["HOME"] = env["TMPDIR"] = scratch
    # clearenv() empties the C environ in one call (os.environ.clear() unsets
    # variables one by one: ~0.4 ms after fork); then rebuild both views.
    if _clearenv() != 0:
        os.environ.clear()
    os.environ._data.clear()  # type: ignore[attr-defined]  # the mapping behind os.environ
    for key, value in env.items():
        os.environ[key] = value  # putenv() + the Python mapping
