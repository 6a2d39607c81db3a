"""Landlock through raw syscalls (ctypes): filesystem, TCP-port and scope rules.

Why our own module: the ``landlock`` package on PyPI covers filesystem rules
only; we also need the network rules (ABI >= 4: TCP connect only to allowed
ports, bind denied) and the scopes (ABI >= 6: no signals to processes outside
the worker's domain, no abstract unix sockets).

Usage is split in two so that the expensive part happens once in the zygote
and the worker only makes one syscall after fork:

    rs = Ruleset.create(abi)                      # zygote: landlock_create_ruleset
    rs.allow_path("/usr/lib", READ_ONLY)          # zygote: landlock_add_rule
    rs.allow_port(5432)
    ...                                           # fork; the fd is inherited
    restrict_self(rs.fd)                          # worker, after PR_SET_NO_NEW_PRIVS

The syscall numbers are the same on every architecture (unified table).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

__all__ = [
    "ACCESS_FS_ALL_V1",
    "LandlockError",
    "READ_ONLY",
    "READ_WRITE",
    "Ruleset",
    "abi_version",
    "handled_fs",
    "restrict_self",
]

_SYSCALLS = {
    # machine: (create_ruleset, add_rule, restrict_self)
    "x86_64": (444, 445, 446),
    "aarch64": (444, 445, 446),
}

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2

# Filesystem access rights, with the ABI that introduced them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13       # ABI 2
FS_TRUNCATE = 1 << 14    # ABI 3
FS_IOCTL_DEV = 1 << 15   # ABI 5

ACCESS_FS_ALL_V1 = (1 << 13) - 1

NET_BIND_TCP = 1 << 0     # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1                # ABI 6

#: What the worker may do with the interpreter, libraries and config files.
READ_ONLY = FS_READ_FILE | FS_READ_DIR
#: Rights on regular files only (a rule on a file, not a directory, must not
#: name directory rights or the kernel answers EINVAL).
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
#: What the worker may do in its scratch and data directories. No device
#: nodes, sockets, fifos or symlinks: nothing there needs them.
READ_WRITE = (
    FS_READ_FILE | FS_READ_DIR | FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE
    | FS_MAKE_DIR | FS_MAKE_REG | FS_REFER | FS_TRUNCATE
)


class LandlockError(OSError):
    """A Landlock syscall failed (errno and the step that failed)."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel struct is __attribute__((packed))
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


_NUMBERS = _SYSCALLS.get(platform.machine())


def _numbers() -> tuple[int, int, int] | None:
    return _NUMBERS


def _call(step: str, *args: object) -> int:
    res = _syscall(*args)
    if res < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, f"{step}: {os.strerror(err)}")
    return int(res)


def abi_version() -> int:
    """The kernel's Landlock ABI (0: unsupported or disabled at boot)."""
    nums = _numbers()
    if nums is None:
        return 0
    res = _syscall(ctypes.c_long(nums[0]), None, ctypes.c_size_t(0),
                   ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if res < 0:
        return 0  # ENOSYS (old kernel) or EOPNOTSUPP (disabled at boot)
    return int(res)


def handled_fs(abi: int) -> int:
    """Every filesystem right the kernel knows at ``abi``: all are denied unless granted."""
    rights = ACCESS_FS_ALL_V1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


class Ruleset:
    """An open Landlock ruleset fd. Close it in the process that built it once forked."""

    def __init__(self, fd: int, abi: int, fs: int, net: int, scoped: int) -> None:
        self.fd = fd
        self.abi = abi
        self.handled_fs = fs
        self.handled_net = net
        self.scoped = scoped

    @classmethod
    def create(cls, abi: int, *, network: bool = True, scopes: bool = True) -> "Ruleset":
        nums = _numbers()
        if nums is None or abi < 1:
            raise LandlockError(errno.ENOSYS, "landlock is not available")
        fs = handled_fs(abi)
        net = (NET_BIND_TCP | NET_CONNECT_TCP) if network and abi >= 4 else 0
        scoped = (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if scopes and abi >= 6 else 0
        attr = _RulesetAttr(fs, net, scoped)
        # Older ABIs know a shorter struct; pass only the fields they understand.
        size = 8 if abi < 4 else (16 if abi < 6 else ctypes.sizeof(attr))
        fd = _call("landlock_create_ruleset", ctypes.c_long(nums[0]), ctypes.byref(attr),
                   ctypes.c_size_t(size), ctypes.c_uint32(0))
        os.set_inheritable(fd, True)  # the worker receives it through fork()
        return cls(fd, abi, fs, net, scoped)

    def allow_path(self, path: str, access: int) -> bool:
        """Grant ``access`` beneath ``path``. Returns False when the path does not exist."""
        try:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            # Missing, or hidden from us by DAC: the worker (never more
            # privileged than the zygote) could not read it either.
            return False
        try:
            if not os.path.isdir(path):
                access &= _FILE_RIGHTS
            attr = _PathBeneathAttr(access & self.handled_fs, pfd)
            _call("landlock_add_rule", ctypes.c_long(_numbers()[1]),  # type: ignore[index]
                  ctypes.c_int(self.fd), ctypes.c_int(_RULE_PATH_BENEATH),
                  ctypes.byref(attr), ctypes.c_uint32(0))
        finally:
            os.close(pfd)
        return True

    def allow_port(self, port: int, access: int = NET_CONNECT_TCP) -> None:
        """Grant TCP ``access`` (connect by default) to ``port``. Needs ABI >= 4."""
        if not self.handled_net:
            raise LandlockError(errno.EOPNOTSUPP, "network rules need Landlock ABI >= 4")
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"not a TCP port: {port!r}")
        attr = _NetPortAttr(access, int(port))
        _call("landlock_add_rule", ctypes.c_long(_numbers()[1]),  # type: ignore[index]
              ctypes.c_int(self.fd), ctypes.c_int(_RULE_NET_PORT),
              ctypes.byref(attr), ctypes.c_uint32(0))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def restrict_self(fd: int) -> None:
    """Enforce the ruleset on the calling thread (needs PR_SET_NO_NEW_PRIVS first)."""
    nums = _numbers()
    if nums is None:
        raise LandlockError(errno.ENOSYS, "landlock is not available")
    _call("landlock_restrict_self", ctypes.c_long(nums[2]), ctypes.c_int(fd), ctypes.c_uint32(0))
