"""Database facades for action scripts: ``sqlite``, ``postgres``, ``mysql``.

A script gets one of these objects from ``import sqlite`` (etc.), never the
driver module: drivers reach ``os``, ``socket`` and files through public
attributes (``pymysql.connections.socket``), and raw sqlite3 connections can
``ATTACH`` any path or load native code.  Every facade has the same small API:

    db = sqlite.connect("legacy.db")                 # file in the tenant's data dir
    db = postgres.connect(host=..., port=5432, user=..., password=..., dbname=...)
    db = mysql.connect(host=..., port=3306, user=..., password=..., database=...)
    rows = db.query(sql, params=())   -> list of dicts (JSON-ready values)
    n = db.execute(sql, params=())    -> rows changed; db.last_insert_id after INSERT
    with db.transaction(): ...        -> BEGIN / COMMIT, ROLLBACK on an exception
    db.close()

and the exception classes a script catches by name (``except sqlite.DuplicateKey``):

    DatabaseError                      any database failure
    ├── NotAllowed                     the facade refused (path, port, ATTACH, pragma...)
    ├── ConnectError                   could not connect / the connection broke
    ├── QueryTimeout                   the statement ran into the invocation's deadline
    └── IntegrityError                 a constraint failed
        └── DuplicateKey               a UNIQUE / PRIMARY KEY constraint failed

Rules every facade enforces, and why:
- Parameterised queries only: ``sql`` is a ``str`` holding exactly one
  statement (checked here, outside quotes and comments; the drivers are the
  second line), ``params`` a list/tuple/dict of plain scalars.  Placeholders
  are the driver's own: ``?`` / ``:name`` for sqlite, ``%s`` / ``%(name)s``
  for postgres and mysql.
- Time: the connect timeout and every statement's timeout are derived from
  ``sandbox.context.current().remaining()`` minus a safety margin, so a slow
  query fails as a catchable ``QueryTimeout`` with a clear message while
  there is still time to call back, instead of the worker being killed.
- Egress: postgres/mysql connect over TCP only, to ports in the worker's
  ``allowed_ports`` (Landlock enforces the same below us).
- Lifetime: a connection can live in ``global_`` across invocations; every
  open connection is closed when the worker is recycled gracefully, and one
  that nobody references any more is closed when it is garbage collected.
- Results are capped at ``MAX_ROWS`` rows: a runaway ``SELECT *`` fails
  clearly instead of exhausting the worker's memory.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
import os
import re
import sqlite3
import time
import uuid
import weakref
from typing import Any, Callable

import psycopg
import psycopg.errors
import psycopg.rows
import pymysql
import pymysql.cursors
import pymysql.err

from scriptvisor.sandbox import context

# Workers cannot import after confinement, and the socket module encodes host
# names with the "idna" codec, imported lazily on first use: load it now (the
# zygote imports this module before it forks).
"localhost".encode("idna")

__all__ = [
    "ConnectError",
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
    if _has_second_statement(sql, dialect):
        raise NotAllowed("only one SQL statement per call (found ';' followed by more SQL)")
    return sql


def _has_second_statement(sql: str, dialect: str) -> bool:
    """True when a ``;`` outside quotes/comments is followed by more than whitespace/comments.

    A small scanner, not a parser: it only has to know where strings and
    comments start and end in each dialect (``$tag$`` quoting for postgres,
    backslash escapes, backticks and ``#`` comments for mysql).
    """
    i, n = 0, len(sql)
    seen_end = False
    while i < n:
        c = sql[i]
        if c in " \t\r\n\f":
            i += 1
            continue
        if c == "-" and sql.startswith("--", i) or (c == "#" and dialect == "mysql"):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c == "/" and sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if seen_end:
            return True
        if c == ";":
            seen_end = True
            i += 1
            continue
        if c in "'\"" or (c == "`" and dialect == "mysql"):
            i = _skip_quoted(sql, i, c, backslash=(dialect == "mysql" and c != "`"))
            continue
        if c == "$" and dialect == "postgres":
            m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])
            if m:
                j = sql.find(m.group(0), i + len(m.group(0)))
                i = n if j < 0 else j + len(m.group(0))
                continue
        i += 1
    return False


def _skip_quoted(sql: str, i: int, quote: str, backslash: bool) -> int:
    n = len(sql)
    i += 1
    while i < n:
        c = sql[i]
        if backslash and c == "\\":
            i += 2
            continue
        if c == quote:
            if i + 1 < n and sql[i + 1] == quote:  # doubled quote inside the literal
                i += 2
                continue
            return i + 1
        i += 1
    return n


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
    if os.path.dirname(os.path.realpath(path)) != base:
        raise NotAllowed(f"sqlite database {name!r} resolves outside the data directory")
    return path


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
            return sqlite3.SQLITE_OK if str(arg1).lower() in SQLITE_PRAGMAS else sqlite3.SQLITE_DENY
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


def _check_endpoint(host: object, port: object, default_port: int) -> tuple[str, int]:
    if port is None:
        port = default_port
    if type(host) is not str or not host or len(host) > 255:
        raise TypeError("host must be a non-empty str")
    if host.startswith("/") or host.startswith("@") or any(c in host for c in ", \t\n="):
        raise NotAllowed(f"host {host!r} refused: TCP host names or addresses only (no sockets, no lists)")
    if type(port) is str and port.isdigit():
        port = int(port)
    if type(port) is not int or not 0 < port < 65536:
        raise TypeError("port must be an int between 1 and 65535")
    try:
        allowed = tuple(context.worker().allowed_ports)
    except RuntimeError:
        allowed = ()
    if port not in allowed:
        shown = ", ".join(str(p) for p in allowed) or "none"
        raise NotAllowed(f"port {port} is not allowed for this tenant (allowed ports: {shown})")
    return host, port


def _opt_str(name: str, value: object) -> str | None:
    if value is None:
        return None
    if type(value) is not str or len(value) > 1024:
        raise TypeError(f"{name} must be a str")
    return value


class PostgresConnection(_Connection):
    """An open PostgreSQL session: query, execute, transaction, close."""

    _dialect = "postgres"
    _kind = "postgres"

    def __init__(self, host: str, port: int, user: str | None, password: str | None,
                 dbname: str | None) -> None:
        super().__init__()
        budget = _budget("connect")
        kwargs: dict[str, Any] = {
            "host": host, "port": port, "autocommit": True,
            "connect_timeout": max(PG_MIN_CONNECT_TIMEOUT, math.ceil(budget)),
            "application_name": "scriptvisor",
            "row_factory": psycopg.rows.dict_row,
        }
        if user is not None:
            kwargs["user"] = user
        if password is not None:
            kwargs["password"] = password
        if dbname is not None:
            kwargs["dbname"] = dbname
        try:
            self._raw = psycopg.connect(**kwargs)
        except Exception as exc:
            raise ConnectError(f"cannot connect to postgres at {host}:{port}: {_short(exc)}") from None
        _track(self, self._raw.close)

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
        return DatabaseError(msg)

    def _close_raw(self) -> None:
        self._raw.close()


# MariaDB/MySQL error numbers we translate.
_MY_DUP_ENTRY = 1062
_MY_STATEMENT_TIMEOUT = (1969, 3024)  # MariaDB max_statement_time, MySQL max_execution_time
_MY_LOST = (2006, 2013)               # server gone / lost connection (our socket timeout)


class MysqlConnection(_Connection):
    """An open MySQL/MariaDB session: query, execute, transaction, close."""

    _dialect = "mysql"
    _kind = "mysql"

    def __init__(self, host: str, port: int, user: str | None, password: str | None,
                 database: str | None) -> None:
        super().__init__()
        budget = _budget("connect")
        try:
            self._raw = pymysql.connect(
                host=host, port=port, user=user, password=password or "", database=database,
                autocommit=True, connect_timeout=max(0.1, min(budget, 30.0)),
                charset="utf8mb4", cursorclass=pymysql.cursors.DictCursor,
                local_infile=False,  # LOAD DATA LOCAL would read worker files
            )
        except Exception as exc:
            raise ConnectError(f"cannot connect to mysql at {host}:{port}: {_short(exc)}") from None
        self._mariadb = "mariadb" in (self._raw.get_server_info() or "").lower()
        _track(self, self._raw.close)

    def _run(self, sql: str, params: Any, rows: bool, budget: float) -> Any:
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
            self.close()
            if "timed out" in msg.lower() or isinstance(exc, TimeoutError):
                return QueryTimeout(_timeout_message(budget) + "; the connection was closed")
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

    def remaining(self) -> float:
        """Seconds left in this invocation (what the timeouts are derived from)."""
        return _remaining()


class _SqliteFacade(_Facade):
    """SQLite databases: files in the tenant's data directory."""

    def connect(self, name: str = "legacy.db") -> SqliteConnection:
        """Open (or create) ``name``, a plain file in the tenant's data directory."""
        return SqliteConnection(name)

    def __repr__(self) -> str:
        return "<sqlite facade: connect(name='legacy.db')>"


class _PostgresFacade(_Facade):
    """PostgreSQL over TCP, to what the tenant may reach."""

    def connect(self, host: str = "127.0.0.1", port: int = 5432, user: str | None = None,
                password: str | None = None, dbname: str | None = None,
                database: str | None = None) -> PostgresConnection:
        """Connect over TCP (``database`` is an alias of ``dbname``)."""
        host, port = _check_endpoint(host, port, 5432)
        return PostgresConnection(host, port, _opt_str("user", user), _opt_str("password", password),
                                  _opt_str("dbname", dbname if dbname is not None else database))

    def __repr__(self) -> str:
        return "<postgres facade: connect(host, port, user, password, dbname)>"


class _MysqlFacade(_Facade):
    """MySQL/MariaDB over TCP, to what the tenant may reach."""

    def connect(self, host: str = "127.0.0.1", port: int = 3306, user: str | None = None,
                password: str | None = None, database: str | None = None,
                dbname: str | None = None) -> MysqlConnection:
        """Connect over TCP (``dbname`` is an alias of ``database``)."""
        host, port = _check_endpoint(host, port, 3306)
        return MysqlConnection(host, port, _opt_str("user", user), _opt_str("password", password),
                               _opt_str("database", database if database is not None else dbname))

    def __repr__(self) -> str:
        return "<mysql facade: connect(host, port, user, password, database)>"


sqlite = _SqliteFacade()
postgres = _PostgresFacade()
mysql = _MysqlFacade()
