"""The deadline reaches the database: stop a dead worker's server sessions.

Killing a worker closes its sockets, but a database server does not notice a
vanished client while a statement runs: ``SET statement_timeout = 0; SELECT
pg_sleep(60)`` or MariaDB's ``SET STATEMENT max_statement_time=0 FOR SELECT
SLEEP(60)`` would keep running (holding locks and connection slots) long
after the caller got ``timeout``.  So:

* a worker reports each database session it opens (``db_session`` frame:
  declared name, backend pid / MySQL thread id, PostgreSQL backend start);
* the supervisor keeps the last ``MAX_SESSIONS_PER_WORKER`` per worker
  (``DbSessions.opened``) and, when the worker goes away for any reason
  (timeout kill, crash, protocol error, recycle, shutdown), hands them to a
  helper process (``DbSessions.closed``);
* the helper (``python -m scriptvisor.engine.dbsessions``, exec'd once, lazily,
  by the supervisor; never a fork of it) connects with the tenant's
  *declared* credentials (the operator's, from tenant.toml, never the
  worker's word) and runs ``pg_terminate_backend(pid, 1000)`` guarded by the
  reported backend start (a reused pid is not hit) / ``KILL CONNECTION id``.
  A role may end its own sessions without any extra privilege, and a lying
  worker can only name sessions of its own tenant's role.

The helper does the blocking driver work so the supervisor's loop never
waits on a database; it answers one JSON line per request (``stopped``,
elapsed ms, error) which the supervisor turns into a ``db_sessions_stopped``
event.  Requests that cannot be written at once (helper busy, pipe full) are
dropped with a warning rather than buffered without bound.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections import deque
from typing import Any

log = logging.getLogger("scriptvisor.dbsessions")

__all__ = ["DbSessions", "MAX_SESSIONS_PER_WORKER", "stop_session"]

#: Sessions remembered per worker (older ones are closed or long gone).
MAX_SESSIONS_PER_WORKER = 32
#: How long the helper waits for a session to end (pg_terminate_backend timeout).
STOP_WAIT_MS = 1000
#: Worker close reasons after which its sessions are stopped even without a job.
ABNORMAL = frozenset({"crash", "timeout", "protocol_error", "zygote_exit"})
#: Largest line the helper may answer with.
MAX_REPLY = 4096


class DbSessions:
    """Supervisor side: remember sessions per worker, stop them when it goes."""

    def __init__(self, supervisor: Any) -> None:
        self.sup = supervisor
        self.by_worker: dict[int, deque[tuple[str, int, str]]] = {}
        self.helper: subprocess.Popen[bytes] | None = None
        self._buf = b""

    # -- hooks called by the supervisor -----------------------------------
    def opened(self, w: Any, msg: Any) -> None:
        sessions = self.by_worker.get(w.id)
        if sessions is None:
            sessions = self.by_worker[w.id] = deque(maxlen=MAX_SESSIONS_PER_WORKER)
        sessions.append((msg.name, msg.session, msg.started))
        self._ensure_helper()  # started ahead of need: a kill must not wait for its start-up

    def closed(self, w: Any, reason: str) -> None:
        """``w`` is gone. Its sessions are stopped when an invocation was in
        flight or the worker ended abnormally; a worker that exits idle and
        gracefully has closed them itself (an idle session of a killed worker
        ends at once: the server reads EOF)."""
        sessions = self.by_worker.pop(w.id, None)
        if not sessions:
            return
        in_flight = w.job is not None and not w.job.done
        if not in_flight and reason not in ABNORMAL:
            return
        pool = self.sup.pools.get(w.tenant)
        decls = {d.name: d for d in (pool.databases if pool is not None else ())}
        for name, session, started in sessions:
            decl = decls.get(name)
            if decl is None or decl.driver not in ("postgres", "mysql") or decl.secret_error:
                continue
            self._send({"tenant": w.tenant, "worker": w.id, "driver": decl.driver, "host": decl.host,
                        "port": decl.port, "database": decl.database, "user": decl.user,
                        "password": decl.password or "", "session": session, "started": started})

    def close(self) -> None:
        """Engine stop: the helper finishes what it was sent, then exits on EOF."""
        helper, self.helper = self.helper, None
        if helper is not None:
            self._unregister(helper)
            try:
                helper.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass

    # -- helper process ----------------------------------------------------
    def _ensure_helper(self) -> subprocess.Popen[bytes] | None:
        helper = self.helper
        if helper is not None and helper.poll() is None:
            return helper
        if helper is not None:
            self._unregister(helper)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}
        try:
            helper = subprocess.Popen([sys.executable, "-s", "-m", "scriptvisor.engine.dbsessions"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd="/")
        except OSError as exc:
            log.error("cannot start the database session helper: %s", exc)
            self.helper = None
            return None
        os.set_blocking(helper.stdin.fileno(), False)  # type: ignore[union-attr]
        os.set_blocking(helper.stdout.fileno(), False)  # type: ignore[union-attr]
        self.helper = helper
        self._buf = b""
        self.sup.reactor.add_reader(helper.stdout.fileno(), self._on_reply)  # type: ignore[union-attr]
        return helper

    def _unregister(self, helper: subprocess.Popen[bytes]) -> None:
        try:
            self.sup.reactor.remove_reader(helper.stdout.fileno())  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass

    def _send(self, request: dict[str, Any]) -> None:
        helper = self._ensure_helper()
        if helper is None:
            return
        line = (json.dumps(request) + "\n").encode("utf-8")
        try:
            n = os.write(helper.stdin.fileno(), line)  # type: ignore[union-attr]
        except (BlockingIOError, BrokenPipeError, OSError) as exc:
            log.warning("database session of tenant %s not stopped: helper not writable (%s)",
                        request["tenant"], exc)
            return
        if n != len(line):  # a partial line would corrupt the next one: restart the helper
            log.warning("database session helper pipe full; restarting it")
            helper.kill()

    def _on_reply(self) -> None:
        helper = self.helper
        if helper is None:
            return
        try:
            data = os.read(helper.stdout.fileno(), 65536)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._unregister(helper)
            helper.poll()
            self.helper = None
            return
        self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            try:
                reply = json.loads(line[:MAX_REPLY])
            except ValueError:
                continue
            if isinstance(reply, dict):
                self.sup.emit("db_session_stopped", **{k: reply.get(k) for k in
                              ("tenant", "worker", "driver", "session", "stopped", "ms", "error")})
        if len(self._buf) > MAX_REPLY:
            self._buf = b""


# --------------------------------------------------------------------------
# the helper process


def stop_session(req: dict[str, Any]) -> tuple[bool, str | None]:
    """End one reported session with the tenant's declared credentials."""
    session = int(req["session"])
    if req["driver"] == "postgres":
        import psycopg

        with psycopg.connect(host=req["host"], port=req["port"], dbname=req["database"], user=req["user"],
                             password=req["password"], connect_timeout=2, autocommit=True,
                             application_name="scriptvisor-stop") as conn:
            row = conn.execute(
                "SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity"
                " WHERE pid = %s AND backend_start::text = %s AND usename = current_user",
                (STOP_WAIT_MS, session, str(req.get("started") or ""))).fetchone()
            return bool(row and row[0]), None
    import pymysql

    conn = pymysql.connect(host=req["host"], port=req["port"], user=req["user"], password=req["password"],
                           database=req["database"], connect_timeout=2, read_timeout=5, client_flag=0)
    try:
        with conn.cursor() as cur:
            try:
                cur.execute("KILL CONNECTION %s", (session,))
            except pymysql.err.OperationalError as exc:
                if exc.args and exc.args[0] == 1094:  # unknown thread id: already gone
                    return False, None
                raise
        return True, None
    finally:
        conn.close()


def main() -> int:
    # Import both drivers now: the helper starts at a worker's first session,
    # long before a kill needs it, so no stop waits for an import.
    import psycopg  # noqa: F401
    import pymysql  # noqa: F401

    out = sys.stdout.buffer
    for raw in sys.stdin.buffer:
        try:
            req = json.loads(raw)
        except ValueError:
            continue
        t0 = time.monotonic()
        try:
            stopped, error = stop_session(req)
        except Exception as exc:  # the database is down, credentials changed...: report, go on
            stopped, error = False, " ".join(str(exc).split())[:300] or type(exc).__name__
        reply = {"tenant": req.get("tenant"), "worker": req.get("worker"), "driver": req.get("driver"),
                 "session": req.get("session"), "stopped": stopped, "error": error,
                 "ms": round((time.monotonic() - t0) * 1000.0, 1)}
        try:
            out.write((json.dumps(reply) + "\n").encode("utf-8"))
            out.flush()
        except (BrokenPipeError, ValueError):
            out = open(os.devnull, "wb")  # the engine stopped listening: keep stopping sessions
    return 0


if __name__ == "__main__":
    sys.exit(main())
