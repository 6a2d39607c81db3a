"""``scriptvisor check``: compile scripts under the sandbox policy, out of process.

The compiler runs in a short-lived child interpreter with an address-space and
CPU cap, never in the caller: a compile bomb (``"-" * 100000 + "1"``, deeply
nested brackets) costs that child, and comes back as a problem report.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from typing import Any, Iterable

CHILD_MEMORY = 1024 * 1024 * 1024  # bytes of address space for the compiling child
CHILD_CPU = 30                     # seconds


def _limit_child() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (CHILD_CPU, CHILD_CPU + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def check_sources(sources: list[tuple[str, str]], *,
                  function: str | None = None) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(path, problems)`` per source, in order; each problem has ``line``, ``column``, ``message``.

    One child per file: a file that crashes or exhausts the compiler is
    reported as its own problem and does not hide the others' results.
    ``function``: the function each file must define (default: the file's
    stem, the one ``scriptvisor run`` and the server call; "" checks none).
    """
    out = []
    for path, source in sources:
        wanted = os.path.splitext(os.path.basename(path))[0] if function is None else function
        out.append((path, _check_one(path, source, wanted or None)))
    return out


def _check_one(path: str, source: str, function: str | None = None) -> list[dict[str, Any]]:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    try:
        proc = subprocess.run(
            [sys.executable, "-s", "-m", "scriptvisor.engine.checker"],
            input=json.dumps([[path, source, function]]).encode("utf-8", "surrogatepass"),
            capture_output=True, env=env, preexec_fn=_limit_child, timeout=CHILD_CPU * 2,
        )
    except subprocess.TimeoutExpired:
        return [{"line": 0, "column": 0, "message": f"compiling took longer than {CHILD_CPU * 2} s"}]
    try:
        [(_path, problems)] = json.loads(proc.stdout.decode("utf-8"))
        return problems
    except (ValueError, UnicodeDecodeError):
        how = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exited with status {proc.returncode}")
        return [{"line": 0, "column": 0, "message": f"the compiler {how} (source too large or too complex)"}]


async def check_source_async(path: str, source: str, *, function: str | None = None) -> list[dict[str, Any]]:
    """``check`` for a server: the same child, awaited on the running asyncio loop.

    The child is started with ``subprocess.Popen`` and no ``preexec_fn`` (so
    CPython uses vfork + exec: no fork of the grown, multi-threaded server)
    and sets its own limits before reading anything (``--self-limit``).  The
    source reaches it through an anonymous memfd as stdin (no pipe to feed
    while it runs), its output is read with ``add_reader`` and its exit is
    awaited on a pidfd: no thread and no child watcher.  ``function``: also
    report when the source defines no top-level function of that name (the
    one an invocation of this script calls).
    """
    import asyncio

    loop = asyncio.get_running_loop()
    payload = json.dumps([[path, source, function]]).encode("utf-8", "surrogatepass")
    stdin = os.memfd_create("scriptvisor-check", os.MFD_CLOEXEC)
    try:
        os.write(stdin, payload)
        os.lseek(stdin, 0, os.SEEK_SET)
        proc = subprocess.Popen(
            [sys.executable, "-s", "-m", "scriptvisor.engine.checker", "--self-limit"],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
    finally:
        os.close(stdin)
    assert proc.stdout is not None
    out_fd = proc.stdout.fileno()
    os.set_blocking(out_fd, False)
    pidfd = os.pidfd_open(proc.pid)
    chunks: list[bytes] = []
    eof = loop.create_future()
    exited = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(out_fd, 65536)
        except BlockingIOError:
            return
        if data and sum(map(len, chunks)) < 4 * 1024 * 1024:
            chunks.append(data)
        if not data and not eof.done():
            loop.remove_reader(out_fd)
            eof.set_result(None)

    def gone() -> None:
        loop.remove_reader(pidfd)
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(out_fd, readable)
    loop.add_reader(pidfd, gone)
    try:
        await asyncio.wait_for(asyncio.gather(eof, exited), CHILD_CPU * 2)
    except asyncio.TimeoutError:
        proc.kill()
        return [{"line": 0, "column": 0, "message": f"compiling took longer than {CHILD_CPU * 2} s"}]
    finally:
        loop.remove_reader(out_fd)
        loop.remove_reader(pidfd)
        os.close(pidfd)
        proc.stdout.close()
        if proc.poll() is None:  # only after a kill: SIGKILL ends it at once
            proc.kill()
        proc.wait()  # the pidfd said it exited: this reaps without blocking
    try:
        [(_path, problems)] = json.loads(b"".join(chunks).decode("utf-8"))
        return problems
    except (ValueError, UnicodeDecodeError):
        how = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exited with status {proc.returncode}")
        return [{"line": 0, "column": 0, "message": f"the compiler {how} (source too large or too complex)"}]


def _defines(source: str, function: str) -> bool:
    """Whether ``source`` (already compiled once: parsing it is safe) defines top-level ``function``."""
    import ast

    return any(isinstance(node, ast.FunctionDef) and node.name == function for node in ast.parse(source).body)


def _child_main() -> None:
    from scriptvisor.sandbox.policy import CompileFailure, compile_script

    if "--self-limit" in sys.argv:
        _limit_child()

    out = []
    for path, source, *rest in json.loads(sys.stdin.buffer.read().decode("utf-8")):
        function = rest[0] if rest else None
        result = compile_script(source, os.path.basename(path))
        problems = []
        if isinstance(result, CompileFailure):
            problems = [{"line": ln, "column": col, "message": msg} for ln, col, msg in result.problems]
        elif function and not _defines(source, function):
            problems = [{"line": 1, "column": 1,
                         "message": f"no function {function}(...): an invocation of this script calls it "
                                    "(name the function after the file, or call it with --fn)"}]
        out.append([path, problems])
        sys.stdout.flush()
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    _child_main()
