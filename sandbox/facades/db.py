"""Database facades for action scripts: ``sqlite``, ``postgres``, ``mysql``.

A script gets one of these objects from ``import sqlite`` (etc.), never the
driver module: drivers reach ``os``, ``socket`` and files through public
attributes (``pymysql.connections.socket``), and raw sqlite3 connections can
``ATTACH`` any path or load native code.  Every facade has the same small API:

    db = sqlite.connect("legacy.db")                 # file in the tenant's data dir
    db = postgres.connect("legacy")                  # a database declared in tenant.toml
    db = mysql.connect("legacy")                     # (host, user, secret: the operator's)
    rows = db.query(sql, params=())   -> list of dicts (JSON-ready values)
    n = db.execute(sql, params=())    -> rows changed; db.last_insert_id after INSERT
    with db.transaction(): ...        -> BEGIN / COMMIT, ROLLBACK on an exception
    db.close()

and the exception classes a script catches by name (``except sqlite.DuplicateKey``):

    DatabaseError                      any database failure
    ├── NotAllowed                     the facade refused (undeclared, privileged, ATTACH, cap...)
    ├── ConnectError                   could not connect / the connection broke
    ├── QueryTimeout                   the statement ran into the invocation's deadline
    ├── DataQuotaExceeded              the data directory is full (data_mb, data_files)
    └── IntegrityError                 a constraint failed
        └── DuplicateKey               a UNIQUE / PRIMARY KEY constraint failed

Rules every facade enforces, and why:
- Declared endpoints only: postgres/mysql open a ``[[databases]]`` entry of
  the tenant's ``tenant.toml`` by name (``engine.databases``); host, port,
  database, user and password come from the operator, so a script cannot
  reach another tenant's database, the platform user store or another role.
  Anything else is ``NotAllowed`` naming what is declared.
- No privileged sessions: right after connecting, a PostgreSQL role that is a
  superuser, may create roles, or is a member of ``pg_execute_server_program``
  / ``pg_read_server_files`` / ``pg_write_server_files`` (or of a superuser
  role), and a MySQL/MariaDB account with any global privilege (FILE, SUPER,
  ...), a PROXY grant or a granted role, is refused with ``NotAllowed`` saying
  how to create a least-privileged role (``scriptvisor db setup`` does).
- One statement per call, enforced by the driver protocol, not by reading
  SQL: postgres statements always go through the extended query protocol
  (Parse/Bind/Execute carries one statement), PyMySQL connects without
  ``CLIENT.MULTI_STATEMENTS``, and Python's sqlite3 refuses a second
  statement.  ``params`` is a list/tuple/dict of plain scalars; placeholders
  are the driver's own: ``?`` / ``:name`` for sqlite, ``%s`` / ``%(name)s``
  for postgres and mysql.
- Time: the connect timeout and every statement's timeout are derived from
  ``sandbox.context.current().remaining()`` minus a safety margin, so a slow
  query fails as a catchable ``QueryTimeout`` with a clear message while
  there is still time to call back, instead of the worker being killed.  Each
  postgres/mysql session is reported to the supervisor (backend pid / thread
  id), which stops it on the server when the invocation ends abnormally
  (``engine.dbsessions``), whatever the script SET.
- Caps: ``TenantLimits.db_connections`` open connections per worker (more is
  ``NotAllowed``); ``data_mb`` bounds each sqlite file (``max_page_count``:
  a full database fails with ``DataQuotaExceeded``, a ``DatabaseError``) and
  ``data_files`` the files in the data directory.
- Lifetime: a connection can live in ``global_`` across invocations; every
  open connection is closed when the worker is recycled gracefully, and one
  that nobody references any more is closed when it is garbage collected.
- Results are capped at ``MAX_ROWS`` rows: a runaway ``SELECT *`` fails
  clearly instead of exhausting the worker's memory.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import gc
import importlib
import math
import os
import re
import sqlite3
import time
import uuid
import weakref
from typing import Any, Callable

from scriptvisor.sandbox import context
from scriptvisor.sandbox.wire import WorkerLimits

_DEFAULT_LIMITS = WorkerLimits()

# Workers cannot import after confinement, and the socket module encodes host
# names with the "idna" codec, imported lazily on first use: load it now (the
# zygote imports this module before it forks).
"localhost".encode("idna")

__all__ = [
    "ConnectError",
    "DataQuotaExceeded",
    "DatabaseError",
    "DuplicateKey",
    "IntegrityError",
    "NotAllowed",
    "QueryTimeout",
    "mysql",
    "postgres",
    "sqlite",
]

# --------------------------------------------------------------------------
# limits (documented data)

#: Rows a single ``query`` may return; more is an error, not a truncation.
MAX_ROWS = 10_000
#: Longest SQL text accepted.
MAX_SQL_CHARS = 100_000
#: Most parameters in one statement.
MAX_PARAMS = 1_000
#: Part of the remaining time kept back for the script to handle the error and
#: call back: 10 % of what is left, at least 50 ms, at most 0.5 s.
MARGIN_FRACTION, MARGIN_MIN, MARGIN_MAX = 0.10, 0.05, 0.5
#: Below this many seconds of budget a statement is not even sent.
MIN_BUDGET = 0.02
#: libpq refuses connect timeouts below 2 s (it silently raises them to 2).
PG_MIN_CONNECT_TIMEOUT = 2
#: sqlite3 progress handler granularity (VM instructions between deadline checks).
SQLITE_PROGRESS_STEPS = 10_000
#: Allowed sqlite file names: one plain file directly inside the data dir.
_SQLITE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
#: Files in the data dir that belong to the platform, not to scripts: the
#: migration user store (engine.userstore) and its WAL/SHM companions.
SQLITE_RESERVED_PREFIXES = ("platform.db",)
#: PRAGMAs a script may run (read or set): connection-local or header-only ones.
#: Everything else (writable_schema, temp_store_directory, mmap_size...) is denied.
SQLITE_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "foreign_key_check", "foreign_keys", "user_version",
    "application_id", "journal_mode", "synchronous", "busy_timeout", "cache_size",
    "integrity_check", "quick_check", "database_list", "collation_list", "defer_foreign_keys",
    "recursive_triggers", "case_sensitive_like", "optimize", "page_count", "page_size",
    "freelist_count", "encoding", "schema_version", "data_version",
})
#: PRAGMAs a script may read but not set.
SQLITE_READ_ONLY_PRAGMAS = frozenset({"page_size", "page_count", "freelist_count", "data_version",
                                      "schema_version", "encoding"})
#: SQL functions a script may not call even if they exist in the library.
SQLITE_DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"})


# --------------------------------------------------------------------------
# exceptions scripts can catch


class DatabaseError(Exception):
    """Any failure of a database facade. Catch this to handle them all."""


class NotAllowed(DatabaseError):
    """The facade refused the request (path outside the data dir, port, ATTACH...)."""


class ConnectError(DatabaseError):
    """The database could not be reached, or the connection broke."""


class QueryTimeout(DatabaseError):
    """The statement did not finish within the invocation's remaining time."""


class IntegrityError(DatabaseError):
    """A constraint failed (NOT NULL, FOREIGN KEY, CHECK, UNIQUE)."""


class DuplicateKey(IntegrityError):
    """A UNIQUE or PRIMARY KEY constraint failed: the row exists already."""


class DataQuotaExceeded(DatabaseError):
    """The tenant's data directory is full (``data_mb``) or holds ``data_files`` files."""


# --------------------------------------------------------------------------
# time budget


def _remaining() -> float:
    # every connect and statement asks for its budget here: outside an
    # invocation (a generator's finally collected later) it is refused
    return context.require_current("database access").remaining()


def _budget(what: str) -> float:
    """Seconds ``what`` may take: the time left minus the safety margin."""
    left = _remaining()
    margin = min(MARGIN_MAX, max(MARGIN_MIN, left * MARGIN_FRACTION))
    budget = left - margin
    if budget < MIN_BUDGET:
        raise QueryTimeout(f"no time left for the {what} ({left:.2f} s left in this invocation)")
    return budget


def _timeout_message(budget: float) -> str:
    return (f"the statement timed out after {budget:.2f} s, stopped before the invocation's "
            f"deadline ({_remaining():.2f} s left)")


# --------------------------------------------------------------------------
# input checks


def _check_sql(sql: object, dialect: str) -> str:
    if type(sql) is not str:
        raise TypeError("sql must be a str")
    if not sql.strip():
        raise DatabaseError("empty SQL statement")
    if len(sql) > MAX_SQL_CHARS:
        raise DatabaseError(f"SQL statement longer than {MAX_SQL_CHARS} characters")
    return sql


_SCALARS = (str, int, float, bool, type(None), bytes)


def _check_params(params: object) -> tuple | dict:
    """Plain scalars only: anything else could carry host-side adapters or be huge."""
    if type(params) in (list, tuple):
        values = list(params)
        out: tuple | dict = tuple(values)
    elif type(params) is dict:
        for key in params:
            if type(key) is not str:
                raise TypeError("named parameters need str keys")
        values = list(params.values())
        out = dict(params)
    else:
        raise TypeError("params must be a list, tuple or dict of plain values (str, int, float, bool, None, bytes)")
    if len(values) > MAX_PARAMS:
        raise DatabaseError(f"more than {MAX_PARAMS} parameters")
    for v in values:
        if type(v) not in _SCALARS:
            raise TypeError(f"parameter of type {type(v).__name__} not allowed "
                            "(str, int, float, bool, None, bytes only)")
        if type(v) is float and not math.isfinite(v):
            raise TypeError("NaN and infinite floats are not valid parameters")
    return out


def _to_script(value: Any) -> Any:
    """Driver values -> JSON-ready values (dates as ISO 8601 text, decimals as numbers)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_to_script(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_script(v) for k, v in value.items()}
    if isinstance(value, (str, int, float)):  # subclasses (enums...) -> plain
        return type(value).__mro__[-2](value)
    return str(value)


def _row(mapping: Any) -> dict:
    return {str(k): _to_script(v) for k, v in mapping.items()}


def _fetch_capped(cur: Any) -> list:
    """The cursor's rows; more than ``MAX_ROWS`` is an error, not a truncation."""
    fetched = cur.fetchmany(MAX_ROWS + 1)
    if len(fetched) > MAX_ROWS:
        raise DatabaseError(f"query returned more than {MAX_ROWS} rows; add a LIMIT")
    return fetched


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] or type(exc).__name__


# --------------------------------------------------------------------------
# connection bookkeeping: close on recycle, close when unreferenced

_open: "weakref.WeakSet[_Connection]" = weakref.WeakSet()
#: Worker contexts whose on_recycle already closes our connections (weak refs:
#: WorkerContext is an unhashable dataclass, so no WeakSet).
_hooked_workers: "list[weakref.ref[Any]]" = []


def _close_all() -> None:
    for conn in list(_open):
        conn.close()


def _track(conn: "_Connection", raw_close: Callable[[], None]) -> None:
    _open.add(conn)
    # Closing the raw driver connection when the facade object dies keeps a
    # script that forgets close() (and does not keep it in global_) from
    # leaking sockets/fds across invocations. The finalizer must not hold
    # ``conn`` itself, only the driver's close.
    weakref.finalize(conn, _quiet(raw_close))
    try:
        ctx = context.worker()
    except RuntimeError:
        return
    _hooked_workers[:] = [r for r in _hooked_workers if r() is not None]
    if not any(r() is ctx for r in _hooked_workers):
        _hooked_workers.append(weakref.ref(ctx))
        ctx.on_recycle(_close_all)


def _quiet(fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except Exception:
            pass
    return run


# --------------------------------------------------------------------------
# the connection object scripts hold


class _Transaction:
    """``with db.transaction():`` BEGIN ... COMMIT, or ROLLBACK on an exception."""

    def __init__(self, conn: "_Connection") -> None:
        self._conn = conn

    def __enter__(self) -> "_Transaction":
        self._conn._begin()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            self._conn._end(commit=True)
        else:
            try:
                self._conn._end(commit=False)
            except DatabaseError:
                pass  # the original exception matters more
        return False


class _Connection:
    """Common API; subclasses implement ``_run``, ``_begin_sql`` and ``_close_raw``."""

    _dialect = ""
    _kind = "database"

    def __init__(self) -> None:
        context.require_current("database access")  # before any file or socket is opened
        self._closed = False
        self._in_tx = False
        self._last_insert_id: Any = None

    # public API ---------------------------------------------------------

    def query(self, sql: str, params: Any = ()) -> list:
        """Run one SELECT-like statement; rows as dicts."""
        sql = _check_sql(sql, self._dialect)
        return self._guarded(sql, _check_params(params), True)

    def execute(self, sql: str, params: Any = ()) -> int:
        """Run one INSERT/UPDATE/DELETE/DDL statement; number of rows changed."""
        sql = _check_sql(sql, self._dialect)
        return self._guarded(sql, _check_params(params), False)

    def transaction(self) -> _Transaction:
        """Context manager: ``with db.transaction(): ...`` (not nestable)."""
        return _Transaction(self)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        _open.discard(self)
        try:
            self._close_raw()
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        """True once the connection is closed."""
        return self._closed

    @property
    def in_transaction(self) -> bool:
        """True inside ``with db.transaction():``."""
        return self._in_tx

    @property
    def last_insert_id(self) -> Any:
        """Auto-increment id of the last INSERT through ``execute`` (sqlite, mysql)."""
        return self._last_insert_id

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{self._kind} connection ({state})>"

    # internals ----------------------------------------------------------

    def _guarded(self, sql: str, params: Any, rows: bool) -> Any:
        if self._closed:
            raise ConnectError("the connection is closed")
        budget = _budget("statement")
        try:
            return self._run(sql, params, rows, budget)
        except DatabaseError:
            raise
        except TypeError:
            raise
        except Exception as exc:  # driver exception -> facade exception, no driver object leaks
            err = self._translate(exc, budget)
        raise err

    def _begin(self) -> None:
        if self._in_tx:
            raise DatabaseError("a transaction is already open on this connection (no nesting)")
        self._guarded("BEGIN", (), False)
        self._in_tx = True

    def _end(self, commit: bool) -> None:
        self._in_tx = False
        self._guarded("COMMIT" if commit else "ROLLBACK", (), False)

    def _run(self, sql: str, params: Any, rows: bool, budget: float) -> Any:
        raise NotImplementedError

    def _close_raw(self) -> None:
        raise NotImplementedError

    def _translate(self, exc: Exception, budget: float) -> DatabaseError:
        return DatabaseError(_short(exc))


# --------------------------------------------------------------------------
# sqlite


def _sqlite_path(name: object) -> str:
    if type(name) is not str:
        raise TypeError("the database name must be a str")
    if name == ":memory:":
        return name
    if not _SQLITE_NAME.match(name) or ".." in name:
        raise NotAllowed(f"sqlite database name {name!r} refused: use a plain file name inside "
                         "the tenant's data directory (letters, digits, '_', '-', '.')")
    if name.lower().startswith(SQLITE_RESERVED_PREFIXES):
        raise NotAllowed(f"sqlite database {name!r} is reserved for the platform's own user store")
    try:
        data_dir = context.worker().data_dir
    except RuntimeError:
        data_dir = None
    if not data_dir:
        raise NotAllowed("this tenant has no data directory for sqlite files: run the script with its "
                         "tenant (scriptvisor run --tenant-dir DIR, or the server), or give one with "
                         "Engine.configure_tenant(name, data_dir=...)")
    base = os.path.realpath(data_dir)
    path = os.path.join(base, name)
    if os.path.lexists(path):
        if os.path.islink(path) or not os.path.isfile(path):
            raise NotAllowed(f"sqlite database {name!r} is not a regular file in the data directory")
    else:
        limit = _limit("data_files")
        files = [f for f in os.listdir(base) if not f.endswith(_SQLITE_COMPANIONS)]
        if len(files) >= limit:
            raise DataQuotaExceeded(f"sqlite database {name!r} not created: the data directory holds "
                                    f"{len(files)} files (limit data_files = {limit})")
    if os.path.dirname(os.path.realpath(path)) != base:
        raise NotAllowed(f"sqlite database {name!r} resolves outside the data directory")
    return path


_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def _limit(key: str) -> int:
    """A worker limit (``sandbox.wire.WorkerLimits``; its defaults outside a worker)."""
    ctx = _worker_ctx()
    return int(getattr(ctx.limits if ctx is not None else _DEFAULT_LIMITS, key))


def _data_quota_bytes() -> int:
    return _limit("data_mb") * 1024 * 1024


def _other_files_bytes(path: str) -> int:
    """Bytes of the data directory's files other than ``path`` and its companions."""
    base, own = os.path.split(path)
    total = 0
    for entry in os.scandir(base):
        if entry.name == own or (entry.name.startswith(own) and entry.name.endswith(_SQLITE_COMPANIONS)):
            continue
        try:
            total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            pass
    return total


class SqliteConnection(_Connection):
    """An open SQLite database: query, execute, transaction, close."""

    _dialect = "sqlite"
    _kind = "sqlite"

    def __init__(self, name: str) -> None:
        super().__init__()
        path = _sqlite_path(name)
        budget = _budget("connect")
        try:
            raw = sqlite3.connect(path, timeout=min(budget, 5.0), isolation_level=None,
                                  check_same_thread=False, uri=False)
        except sqlite3.Error as exc:
            raise ConnectError(f"cannot open sqlite database {name!r}: {_short(exc)}") from None
        self._raw = raw
        self._stmt_deadline = 0.0
        self._interrupted = False
        self._trusted = True
        raw.execute("PRAGMA temp_store = MEMORY")  # no temp files outside the data dir
        if path != ":memory:":
            # data_mb: the file may grow to the tenant's data quota minus what
            # the other files of the data directory already take.
            page = raw.execute("PRAGMA page_size").fetchone()[0]
            pages = max(1, (_data_quota_bytes() - _other_files_bytes(path)) // page)
            raw.execute(f"PRAGMA max_page_count = {int(pages)}")
        raw.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        raw.set_authorizer(self._authorize)
        raw.set_progress_handler(self._progress, SQLITE_PROGRESS_STEPS)
        self._trusted = False
        _track(self, raw.close)

    def _authorize(self, action: int, arg1: Any, arg2: Any, dbname: Any, source: Any) -> int:
        if self._trusted:
            return sqlite3.SQLITE_OK
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA:
            pragma = str(arg1).lower()
            if pragma in SQLITE_READ_ONLY_PRAGMAS and arg2 is not None:
                return sqlite3.SQLITE_DENY  # page_size would multiply the max_page_count quota
            return sqlite3.SQLITE_OK if pragma in SQLITE_PRAGMAS else sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION:
            return sqlite3.SQLITE_DENY if str(arg2).lower() in SQLITE_DENIED_FUNCTIONS else sqlite3.SQLITE_OK
        return sqlite3.SQLITE_OK

    def _progress(self) -> int:
        if time.monotonic() > self._stmt_deadline:
            self._interrupted = True
            return 1  # non-zero aborts the statement with "interrupted"
        return 0

    def _run(self, sql: str, params: Any, rows: bool, budget: float) -> Any:
        self._stmt_deadline = time.monotonic() + budget
        self._interrupted = False
        cur = self._raw.execute(sql, params)
        try:
            if rows:
                if cur.description is None:
                    return []
                names = [d[0] for d in cur.description]
                fetched = _fetch_capped(cur)
                return [_row(dict(zip(names, r))) for r in fetched]
            self._last_insert_id = cur.lastrowid
            return cur.rowcount
        finally:
            cur.close()

    def _translate(self, exc: Exception, budget: float) -> DatabaseError:
        msg = _short(exc)
        if self._interrupted:
            return QueryTimeout(_timeout_message(budget))
        if isinstance(exc, sqlite3.IntegrityError):
            if "UNIQUE" in msg or "PRIMARY KEY" in msg:
                return DuplicateKey(msg)
            return IntegrityError(msg)
        if isinstance(exc, sqlite3.OperationalError) and "database or disk is full" in msg:
            return DataQuotaExceeded(
                f"the tenant's data quota is used up (data_mb = {_limit('data_mb')} MiB "
                f"for the whole data directory): {msg}")
        if "not authorized" in msg or "authorization denied" in msg or "too many attached" in msg:
            return NotAllowed(f"statement refused by the sqlite facade ({msg}): ATTACH, DETACH, "
                              "extensions and file-changing pragmas are not available")
        if isinstance(exc, sqlite3.ProgrammingError) and "one statement" in msg:
            return NotAllowed("only one SQL statement per call")
        return DatabaseError(msg)

    def _close_raw(self) -> None:
        self._raw.close()


# --------------------------------------------------------------------------
# network databases


def _worker_ctx() -> Any:
    try:
        return context.worker()
    except RuntimeError:
        return None


def _declared(driver: str, name: object, refused: dict[str, Any]) -> dict[str, Any]:
    """The declaration a script names; ``NotAllowed`` for anything else."""
    ctx = _worker_ctx()
    decls: dict[str, dict[str, Any]] = dict(ctx.databases) if ctx is not None else {}
    mine = {n: d for n, d in decls.items() if d.get("driver") == driver}
    shown = ", ".join(f"{n} ({d.get('driver')} {d.get('user')}@{d.get('host')}:{d.get('port')}/"
                      f"{d.get('database')})" for n, d in sorted(decls.items())) or "none"
    usage = (f"{driver}.connect(NAME) opens a database its operator declared in tenant.toml "
             f"([[databases]]); declared for this tenant: {shown}")
    if refused:
        raise NotAllowed(f"{driver}.connect does not take {', '.join(sorted(refused))}: host, port, user, "
                         f"password and database come from the declaration. {usage}")
    if name is None:
        if len(mine) != 1:
            raise NotAllowed(f"name the database to open. {usage}")
        name = next(iter(mine))
    if type(name) is not str or len(name) > 64:
        raise TypeError("the database name must be a str")
    decl = decls.get(name)
    if decl is None:
        raise NotAllowed(f"database {name!r} is not declared. {usage}")
    if decl.get("driver") != driver:
        raise NotAllowed(f"database {name!r} is a {decl.get('driver')} database: use "
                         f"{decl.get('driver')}.connect({name!r})")
    if decl.get("secret_error"):
        raise ConnectError(f"database {name!r}: {decl['secret_error']}")
    _check_connection_cap(ctx)
    return decl


def _check_connection_cap(ctx: Any) -> None:
    limit = _limit("db_connections")
    live = sum(1 for c in list(_open) if not c.closed)
    if live >= limit:
        # Connections nobody references but a reference cycle (an exception's
        # traceback holding the frame that held the connection) keeps alive
        # are closed by their finalizers once the cycle is collected.
        gc.collect()
        live = sum(1 for c in list(_open) if not c.closed)
    if live >= limit:
        raise NotAllowed(f"this worker already has {live} open database connections (limit "
                         f"db_connections = {limit}): close one, or keep one in global_ and reuse it")


def _report_session(message: dict[str, Any]) -> None:
    """Tell the supervisor about a server session so it can stop it (engine.dbsessions)."""
    ctx = _worker_ctx()
    if ctx is not None and ctx.report is not None:
        ctx.report(message)


LEAST_PRIVILEGE_PG = (
    "create a least-privileged role instead: `scriptvisor db setup --tenant-dir DIR` does it "
    "(by hand: CREATE ROLE acme_legacy LOGIN PASSWORD '...' NOSUPERUSER NOCREATEDB NOCREATEROLE; "
    "GRANT CONNECT ON DATABASE acme_legacy TO acme_legacy; GRANT SELECT, INSERT, UPDATE, DELETE ON "
    "users TO acme_legacy; GRANT USAGE ON SEQUENCE users_id_seq TO acme_legacy)")
LEAST_PRIVILEGE_MY = (
    "create a least-privileged account instead: `scriptvisor db setup --tenant-dir DIR` does it "
    "(by hand: CREATE USER 'acme_legacy'@'%' IDENTIFIED BY '...'; GRANT SELECT, INSERT, UPDATE, "
    "DELETE ON acme_legacy.* TO 'acme_legacy'@'%'; no global privileges, no FILE, no SUPER)")


# --------------------------------------------------------------------------
# the network drivers, loaded where they are needed

#: Network database drivers, by facade: psycopg (~120 modules, ~11 MiB) and
#: PyMySQL.  They are imported only in the zygote that forks workers for
#: tenants declaring such a database (``engine.zygote``: one zygote per set
#: of drivers), never in the slim zygote: every worker inherits what its
#: zygote holds, and a killed worker's teardown and every fork grow with it.
#: A worker cannot import after confinement, so the facade never depends on
#: that: it checks the declaration first (an undeclared database is
#: ``NotAllowed`` whatever is loaded), then uses the driver its zygote loaded.
DRIVERS = ("postgres", "mysql")

psycopg: Any = None
pymysql: Any = None
_OneStatementCursor: Any = None


def load_driver(kind: str) -> None:
    """Import the driver of ``kind`` (``"postgres"`` or ``"mysql"``) now, in the zygote."""
    global psycopg, pymysql, _OneStatementCursor
    if kind == "postgres":
        if psycopg is None:
            pg = importlib.import_module("psycopg")
            importlib.import_module("psycopg.errors")
            importlib.import_module("psycopg.rows")

            class OneStatementCursor(pg.Cursor):
                """Always the extended query protocol, even without parameters.

                psycopg sends a parameterless query with the simple protocol, which runs
                every statement of ``"SELECT 1; DROP TABLE users"``; Parse/Bind/Execute
                carries exactly one statement and the server refuses more ("cannot insert
                multiple commands into a prepared statement").
                """

                def _execute_send(self, query: Any, *, force_extended: bool = False, binary: Any = None) -> None:
                    super()._execute_send(query, force_extended=True, binary=binary)

            _OneStatementCursor = OneStatementCursor
            psycopg = pg
    elif kind == "mysql":
        if pymysql is None:
            my = importlib.import_module("pymysql")
            for sub in ("pymysql.constants.CLIENT", "pymysql.cursors", "pymysql.err"):
                importlib.import_module(sub)
            pymysql = my
    else:
        raise ValueError(f"no database driver {kind!r}")


def loaded_drivers() -> tuple[str, ...]:
    """The drivers this process holds (a worker: what its zygote preloaded)."""
    return tuple(k for k, mod in (("postgres", psycopg), ("mysql", pymysql)) if mod is not None)


def _require(kind: str) -> None:
    """The driver for a declared database, or a clear ``ConnectError``."""
    if kind in loaded_drivers():
        return
    try:
        load_driver(kind)
    except Exception as exc:  # confined: imports may be refused
        raise ConnectError(f"the {kind} driver is not loaded in this worker ({_short(exc)}); its zygote "
                           f"preloads it only for tenants that declare a {kind} database") from None


class PostgresConnection(_Connection):
    """An open PostgreSQL session: query, execute, transaction, close."""

    _dialect = "postgres"
    _kind = "postgres"

    def __init__(self, decl: dict[str, Any]) -> None:
        _require("postgres")
        super().__init__()
        budget = _budget("connect")
        name, host, port = decl["name"], decl["host"], decl["port"]
        kwargs: dict[str, Any] = {
            "host": host, "port": port, "autocommit": True, "dbname": decl["database"],
            "user": decl["user"], "password": decl.get("password") or "",
            "connect_timeout": max(PG_MIN_CONNECT_TIMEOUT, math.ceil(budget)),
            "application_name": "scriptvisor",
            "row_factory": psycopg.rows.dict_row,
            "cursor_factory": _OneStatementCursor,
        }
        try:
            self._raw = psycopg.connect(**kwargs)
        except Exception as exc:
            if "too many connections for role" in str(exc):
                raise NotAllowed(f"database {name!r} refused another connection ({_short(exc)}): the "
                                 "tenant's role is at its connection limit (db_connections_per_tenant)") from None
            raise ConnectError(f"cannot connect to database {name!r} (postgres at {host}:{port}): "
                               f"{_short(exc)}") from None
        _track(self, self._raw.close)
        try:
            with self._raw.cursor() as cur:
                cur.execute(
                    "SELECT r.rolsuper OR r.rolcreaterole"
                    " OR pg_has_role(r.oid, 'pg_execute_server_program', 'MEMBER')"
                    " OR pg_has_role(r.oid, 'pg_read_server_files', 'MEMBER')"
                    " OR pg_has_role(r.oid, 'pg_write_server_files', 'MEMBER')"
                    " OR EXISTS (SELECT 1 FROM pg_roles s WHERE s.rolsuper AND pg_has_role(r.oid, s.oid, 'MEMBER'))"
                    " AS privileged, pg_backend_pid() AS pid,"
                    " (SELECT backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()) AS started"
                    " FROM pg_roles r WHERE r.rolname = session_user")
                row = cur.fetchone()
        except Exception as exc:
            self.close()
            raise ConnectError(f"cannot check the privileges of database {name!r}: {_short(exc)}") from None
        if row is None or row["privileged"]:
            self.close()
            raise NotAllowed(
                f"database {name!r}: role {decl['user']!r} is privileged (superuser, CREATEROLE, or member of "
                "pg_execute_server_program / pg_read_server_files / pg_write_server_files or of a superuser "
                f"role) and could run programs or read files on the database host; {LEAST_PRIVILEGE_PG}")
        _report_session({"t": "db_session", "driver": "postgres", "name": name,
                         "session": int(row["pid"]), "started": str(row["started"] or "")})

    def _run(self, sql: str, params: Any, rows: bool, budget: float) -> Any:
        ms = max(1, int(budget * 1000))
        with self._raw.cursor() as cur:
            # One statement timeout per statement, because the budget shrinks
            # as the invocation goes on (one extra round trip, on purpose).
            cur.execute("SELECT set_config('statement_timeout', %s, false)", (str(ms),))
            cur.execute(sql, params if params else None)
            if rows:
                if cur.description is None:
                    return []
                fetched = _fetch_capped(cur)
                return [_row(r) for r in fetched]
            return cur.rowcount

    def _translate(self, exc: Exception, budget: float) -> DatabaseError:
        msg = _short(exc)
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return QueryTimeout(_timeout_message(budget))
        if isinstance(exc, psycopg.errors.UniqueViolation):
            return DuplicateKey(msg)
        if isinstance(exc, psycopg.IntegrityError):
            return IntegrityError(msg)
        if isinstance(exc, psycopg.OperationalError) or self._raw.closed:
            self.close()
            return ConnectError(msg)
        if "cannot insert multiple commands" in msg:
            return NotAllowed(f"only one SQL statement per call ({msg})")
        return DatabaseError(msg)

    def _close_raw(self) -> None:
        self._raw.close()


# MariaDB/MySQL error numbers we translate.
_MY_DUP_ENTRY = 1062
_MY_STATEMENT_TIMEOUT = (1969, 3024)  # MariaDB max_statement_time, MySQL max_execution_time
_MY_LOST = (2006, 2013)               # server gone / lost connection (our socket timeout)
_MY_USER_LIMIT = (1203, 1226)         # max_user_connections reached
_MY_PARSE = 1064                      # syntax error: a second statement lands here
#: Global grants that are harmless: USAGE means "no privilege".
_MY_GLOBAL = re.compile(r"^GRANT (.+?) ON \*\.\* TO ", re.IGNORECASE)


#: SQL a script may not send to MySQL/MariaDB: raising the facade's statement
#: limit (``SET STATEMENT max_statement_time=0 FOR ...``, ``@@max_statement_time``,
#: MySQL's ``MAX_EXECUTION_TIME`` hint) or dynamic SQL that could carry such a
#: text past this check (PREPARE / EXECUTE [IMMEDIATE]).  Checked on the SQL
#: template, before PyMySQL quotes the parameters into it.  Without this a
#: statement outlives the invocation whenever the KILL QUERY below cannot get a
#: connection (the account at its MAX_USER_CONNECTIONS, filled by the tenant).
_MY_REFUSED_SQL = re.compile(r"max_statement_time|max_execution_time|\b(?:prepare|execute|deallocate)\b",
                             re.IGNORECASE)


def _mysql_privileged(grants: list[str]) -> str | None:
    """Why an account is privileged (None: least-privileged)."""
    for line in grants:
        m = _MY_GLOBAL.match(line)
        if m and m.group(1).strip().upper() != "USAGE":
            return f"global privileges ({m.group(1).strip()[:200]})"
        if re.match(r"^GRANT PROXY ON ", line, re.IGNORECASE):
            return "a PROXY grant"
        if re.match(r"^GRANT [`'\"]?[^ ]+[`'\"]? TO ", line, re.IGNORECASE) and " ON " not in line.upper():
            return "a granted role (roles are not checked: grant privileges to the account itself)"
    return None


class MysqlConnection(_Connection):
    """An open MySQL/MariaDB session: query, execute, transaction, close."""

    _dialect = "mysql"
    _kind = "mysql"

    def __init__(self, decl: dict[str, Any]) -> None:
        _require("mysql")
        super().__init__()
        budget = _budget("connect")
        name, host, port = decl["name"], decl["host"], decl["port"]
        try:
            self._raw = pymysql.connect(
                host=host, port=port, user=decl["user"], password=decl.get("password") or "",
                database=decl["database"],
                autocommit=True, connect_timeout=max(0.1, min(budget, 30.0)),
                charset="utf8mb4", cursorclass=pymysql.cursors.DictCursor,
                local_infile=False,  # LOAD DATA LOCAL would read worker files
                # One statement per call: never CLIENT.MULTI_STATEMENTS, so the
                # server itself refuses "SELECT 1; DROP TABLE users".
                client_flag=0,
            )
        except Exception as exc:
            code = exc.args[0] if getattr(exc, "args", None) and isinstance(exc.args[0], int) else None
            if code in _MY_USER_LIMIT:
                raise NotAllowed(f"database {name!r} refused another connection ({_short(exc)}): the tenant's "
                                 "account is at its connection limit (db_connections_per_tenant)") from None
            raise ConnectError(f"cannot connect to database {name!r} (mysql at {host}:{port}): "
                               f"{_short(exc)}") from None
        if self._raw.client_flag & pymysql.constants.CLIENT.MULTI_STATEMENTS:
            self._raw.close()
            raise NotAllowed("the MySQL client negotiated multi-statements; refusing the connection")
        self._mariadb = "mariadb" in (self._raw.get_server_info() or "").lower()
        _track(self, self._raw.close)
        try:
            with self._raw.cursor(pymysql.cursors.Cursor) as cur:
                cur.execute("SHOW GRANTS FOR CURRENT_USER()")
                grants = [str(r[0]) for r in cur.fetchall()]
        except Exception as exc:
            self.close()
            raise ConnectError(f"cannot check the privileges of database {name!r}: {_short(exc)}") from None
        why = _mysql_privileged(grants)
        if why is not None:
            self.close()
            raise NotAllowed(f"database {name!r}: account {decl['user']!r} has {why} and could read or write "
                             f"files on the database host or reach other databases; {LEAST_PRIVILEGE_MY}")
        self._decl = decl
        self._thread_id = int(self._raw.thread_id())
        _report_session({"t": "db_session", "driver": "mysql", "name": name,
                         "session": self._thread_id, "started": ""})

    def _kill_abandoned(self) -> bool:
        """Our read timed out: the server may still run the statement (``SET STATEMENT
        max_statement_time=0 FOR ...`` overrides the session limit), so end it there
        with a second, short-lived connection of the same account before we give up."""
        decl = self._decl
        try:
            killer = pymysql.connect(host=decl["host"], port=decl["port"], user=decl["user"],
                                     password=decl.get("password") or "", database=decl["database"],
                                     connect_timeout=1, read_timeout=1, write_timeout=1, client_flag=0)
        except Exception:
            return False  # the supervisor still stops the session when the worker goes
        try:
            with killer.cursor() as cur:
                cur.execute("KILL QUERY %s", (self._thread_id,))
            return True
        except Exception:
            return False
        finally:
            killer.close()

    def _run(self, sql: str, params: Any, rows: bool, budget: float) -> Any:
        found = _MY_REFUSED_SQL.search(sql)
        if found:
            raise NotAllowed(f"{found.group(0)!r} is not available to scripts: the statement time limit is the "
                             "facade's (the invocation's remaining time), and dynamic SQL (PREPARE/EXECUTE) "
                             "is refused so nothing can raise it")
        raw = self._raw
        # Client side: the socket read timeout is the backstop (PyMySQL applies
        # it before every read). Server side: the statement limit, so the
        # server stops working too and the connection stays usable.
        raw._read_timeout = budget + MARGIN_MIN / 2
        with raw.cursor() as cur:
            if self._mariadb:
                cur.execute("SET SESSION max_statement_time = %s", (round(budget, 3),))
            else:
                cur.execute("SET SESSION max_execution_time = %s", (max(1, int(budget * 1000)),))
            cur.execute(sql, params if params else None)
            if rows:
                if cur.description is None:
                    return []
                fetched = _fetch_capped(cur)
                return [_row(r) for r in fetched]
            self._last_insert_id = cur.lastrowid
            return cur.rowcount

    def _translate(self, exc: Exception, budget: float) -> DatabaseError:
        msg = _short(exc)
        code = exc.args[0] if getattr(exc, "args", None) and isinstance(exc.args[0], int) else None
        if code in _MY_STATEMENT_TIMEOUT:
            return QueryTimeout(_timeout_message(budget))
        if code in _MY_LOST or isinstance(exc, (TimeoutError, OSError)):
            timed_out = "timed out" in msg.lower() or isinstance(exc, TimeoutError)
            killed = self._kill_abandoned() if timed_out else False
            self.close()
            if timed_out:
                return QueryTimeout(_timeout_message(budget) + ("; the statement was stopped on the server "
                                    "and the connection closed" if killed else
                                    "; the connection was closed (stopping the statement on the server failed)"))
            return ConnectError(msg)
        if code == _MY_DUP_ENTRY:
            return DuplicateKey(msg)
        if isinstance(exc, pymysql.err.IntegrityError):
            return IntegrityError(msg)
        if isinstance(exc, pymysql.err.OperationalError) and not self._raw.open:
            self.close()
            return ConnectError(msg)
        return DatabaseError(msg)

    def _close_raw(self) -> None:
        if self._raw.open:
            self._raw.close()


# --------------------------------------------------------------------------
# the facade objects


class _Facade:
    """Base of the three facade objects: ``connect`` plus the exception classes."""

    DatabaseError = DatabaseError
    NotAllowed = NotAllowed
    ConnectError = ConnectError
    QueryTimeout = QueryTimeout
    IntegrityError = IntegrityError
    DuplicateKey = DuplicateKey
    DataQuotaExceeded = DataQuotaExceeded

    def remaining(self) -> float:
        """Seconds left in this invocation (what the timeouts are derived from)."""
        return _remaining()


class _SqliteFacade(_Facade):
    """SQLite databases: files in the tenant's data directory."""

    def connect(self, name: str = "legacy.db") -> SqliteConnection:
        """Open (or create) ``name``: a sqlite database declared under that name, or a
        plain file in the tenant's data directory."""
        ctx = _worker_ctx()
        decl = (ctx.databases if ctx is not None else {}).get(name) if type(name) is str else None
        if decl is not None:
            if decl.get("driver") != "sqlite":
                raise NotAllowed(f"database {name!r} is a {decl.get('driver')} database: use "
                                 f"{decl.get('driver')}.connect({name!r})")
            name = decl["database"]
        _check_connection_cap(ctx)
        return SqliteConnection(name)

    def __repr__(self) -> str:
        return "<sqlite facade: connect(name='legacy.db')>"


_REFUSED_KEYS = ("host", "port", "user", "password", "dbname", "database")


class _PostgresFacade(_Facade):
    """PostgreSQL over TCP, to what the tenant may reach."""

    def connect(self, name: str | None = None, **refused: Any) -> PostgresConnection:
        """Open the declared database ``name`` (omit it when exactly one postgres database is declared)."""
        return PostgresConnection(_declared("postgres", name, refused))

    def __repr__(self) -> str:
        return "<postgres facade: connect(name)>"


class _MysqlFacade(_Facade):
    """MySQL/MariaDB over TCP, to what the tenant may reach."""

    def connect(self, name: str | None = None, **refused: Any) -> MysqlConnection:
        """Open the declared database ``name`` (omit it when exactly one mysql database is declared)."""
        return MysqlConnection(_declared("mysql", name, refused))

    def __repr__(self) -> str:
        return "<mysql facade: connect(name)>"


sqlite = _SqliteFacade()
postgres = _PostgresFacade()
mysql = _MysqlFacade()
