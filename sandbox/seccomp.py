"""The worker's seccomp-bpf filter: built with libseccomp (pyseccomp) in the
zygote, exported as raw BPF, loaded in the worker with a single prctl().

Why split: compiling the filter through libseccomp costs milliseconds; the
fork-to-ready path must stay around 1 ms. The zygote compiles once (one
program per variant) and every worker only installs the bytes.

Policy: allow by default, deny a list of syscalls that reach kernel objects
outside the worker or change what the process is. Denials return EPERM
(ENOSYS for clone3, so glibc falls back to clone(), whose flags we can
inspect) rather than killing the process, so a script gets a structured
``PermissionError`` instead of a mysterious crash.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any

__all__ = ["DENIED", "SeccompError", "available", "build", "install"]

CLONE_THREAD = 0x00010000
AF_INET, AF_INET6 = 2, 10
SOCK_STREAM, SOCK_DGRAM = 1, 2
IPPROTO_ICMP, IPPROTO_UDP = 1, 17
TIOCSTI, TIOCLINUX = 0x5412, 0x541C

#: Syscalls that always return EPERM in a worker, with the reason.
DENIED: dict[str, str] = {
    "execve": "no new programs", "execveat": "no new programs",
    "fork": "no processes", "vfork": "no processes",
    "ptrace": "no debugging of other processes",
    "process_vm_readv": "no access to other processes' memory",
    "process_vm_writev": "no access to other processes' memory",
    "kcmp": "no inspection of other processes", "pidfd_getfd": "no stealing fds",
    "mount": "no mounts", "umount2": "no mounts", "umount": "no mounts",
    "move_mount": "no mounts", "open_tree": "no mounts", "fsopen": "no mounts",
    "fsconfig": "no mounts", "fsmount": "no mounts", "fspick": "no mounts",
    "mount_setattr": "no mounts", "pivot_root": "no mounts", "chroot": "no mounts",
    "unshare": "no namespaces", "setns": "no namespaces",
    "keyctl": "kernel keyrings are not namespaced", "add_key": "keyrings",
    "request_key": "keyrings",
    "bpf": "no kernel programs", "perf_event_open": "no perf (side channels)",
    "io_uring_setup": "io_uring bypasses syscall filtering",
    "io_uring_enter": "io_uring", "io_uring_register": "io_uring",
    "kexec_load": "host kernel", "kexec_file_load": "host kernel",
    "init_module": "host kernel", "finit_module": "host kernel",
    "delete_module": "host kernel", "create_module": "host kernel",
    "reboot": "host", "swapon": "host", "swapoff": "host", "acct": "host",
    "quotactl": "host", "quotactl_fd": "host", "syslog": "host kernel log",
    "settimeofday": "host clock", "clock_settime": "host clock",
    "clock_adjtime": "host clock", "adjtimex": "host clock", "stime": "host clock",
    "sethostname": "host name", "setdomainname": "host name",
    "personality": "no ASLR tricks", "userfaultfd": "exploit primitive",
    "modify_ldt": "exploit primitive", "iopl": "hardware", "ioperm": "hardware",
    "vm86": "hardware", "vm86old": "hardware",
    "open_by_handle_at": "bypasses path checks", "name_to_handle_at": "bypasses path checks",
    "lookup_dcookie": "host", "uselib": "legacy", "vhangup": "tty",
    "fanotify_init": "host-wide file events", "nfsservctl": "legacy",
    "migrate_pages": "other processes' memory", "move_pages": "other processes' memory",
    "process_madvise": "other processes' memory",
}


class SeccompError(OSError):
    """Building or installing the filter failed."""


def _binding() -> tuple[Any, str]:
    """The libseccomp binding: pyseccomp (the pinned dependency, ctypes over
    libseccomp.so.2), else Debian's ``python3-seccomp`` (module ``seccomp``,
    the upstream binding with the same API) when it is importable."""
    try:
        import pyseccomp  # loads libseccomp.so.2 through ctypes
        return pyseccomp, "pyseccomp"
    except Exception as first:  # ImportError, OSError: library missing
        try:
            import seccomp  # type: ignore[import-not-found]
        except Exception:
            raise first from None
        return seccomp, "seccomp (python3-seccomp)"


def available() -> tuple[bool, str]:
    """Whether libseccomp can be loaded (through pyseccomp or python3-seccomp)."""
    try:
        _sc, via = _binding()
    except Exception as exc:
        return False, f"libseccomp unavailable: {exc}"
    return True, f"libseccomp via {via}"


def build(*, allow_udp: bool) -> bytes:
    """Compile the worker filter and return the raw BPF program (struct sock_filter[])."""
    sc, _via = _binding()

    eperm = sc.ERRNO(errno.EPERM)
    flt = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED:
        _add(flt, eperm, name)
    # Threads only: clone() without CLONE_THREAD creates a process.
    _add(flt, eperm, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    # clone3 passes its flags in memory, which BPF cannot read: make glibc fall back.
    _add(flt, sc.ERRNO(errno.ENOSYS), "clone3")
    # Sockets: IPv4/IPv6 TCP (and UDP for DNS when the tenant has egress) only.
    # No AF_UNIX (host daemons' sockets), AF_NETLINK, AF_PACKET, raw sockets.
    # Written as few comparisons as possible: the kernel JIT-compiles the
    # program in every worker, and its length is on the fork-to-ready path.
    _add(flt, eperm, "socket", sc.Arg(0, sc.LT, AF_INET))
    _add(flt, eperm, "socket", sc.Arg(0, sc.GT, AF_INET6))
    for family in range(AF_INET + 1, AF_INET6):
        _add(flt, eperm, "socket", sc.Arg(0, sc.EQ, family))
    # type & 0xF: only SOCK_STREAM (1) and SOCK_DGRAM (2) (flags live above 0xF).
    for value, mask in ((0, 0xF), (3, 0xF), (4, 0xC), (8, 0xC), (12, 0xC)):
        _add(flt, eperm, "socket", sc.Arg(1, sc.MASKED_EQ, mask, value))
    if not allow_udp:
        _add(flt, eperm, "socket", sc.Arg(1, sc.MASKED_EQ, 0xF, SOCK_DGRAM))
    # Protocol: no ICMP "ping" sockets, and nothing above UDP (MPTCP, SCTP,
    # UDP-Lite, raw), which Landlock's TCP rules would not cover.
    _add(flt, eperm, "socket", sc.Arg(2, sc.EQ, IPPROTO_ICMP))
    _add(flt, eperm, "socket", sc.Arg(2, sc.GT, IPPROTO_UDP))
    # Terminal injection (a worker has no tty after setsid, but be sure).
    _add(flt, eperm, "ioctl", sc.Arg(1, sc.EQ, TIOCSTI))
    _add(flt, eperm, "ioctl", sc.Arg(1, sc.EQ, TIOCLINUX))

    fd = os.memfd_create("scriptvisor-seccomp", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "rb", closefd=True) as handle:
            flt.export_bpf(handle)
        size = os.lseek(fd, 0, os.SEEK_END)
        program = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    if not program or len(program) % 8:
        raise SeccompError(errno.EINVAL, f"libseccomp exported {len(program)} bytes")
    return program


def _add(flt: object, action: int, name: str, *args: object) -> None:
    sc, _via = _binding()

    try:
        nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
    except Exception:
        return
    if nr < 0:  # no such syscall on this architecture (fork on aarch64...)
        return
    flt.add_rule(action, nr, *args)  # type: ignore[attr-defined]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl  # resolved in the zygote, not after fork


class Program:
    """A BPF program kept in C memory, ready for ``install`` without allocation."""

    def __init__(self, program: bytes) -> None:
        self._buf = ctypes.create_string_buffer(program, len(program))
        self._fprog = _SockFprog(len(program) // 8, ctypes.cast(self._buf, ctypes.c_void_p))

    def install(self) -> None:
        """Load the filter on the calling thread (needs PR_SET_NO_NEW_PRIVS)."""
        res = _prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER,
                          ctypes.byref(self._fprog), 0, 0)
        if res != 0:
            err = ctypes.get_errno()
            raise SeccompError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")


def install(program: bytes) -> None:
    Program(program).install()
