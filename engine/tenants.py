"""Tenant folders: load and validate ``TENANTS/<tenant>/tenant.toml``.

Layout (fixed, shared with ``engine.connections``)::

    TENANTS/<tenant>/tenant.toml     settings, secrets (or env references), limits, token hashes
    TENANTS/<tenant>/scripts/*.py    action scripts, read fresh on every invocation
    TENANTS/<tenant>/data/           the tenant's data directory (sqlite files live here)

``tenant.toml``::

    import_users = false                      # connection mode (see action-scripts.md)
    allowed_ports = [5432]                    # extra egress ports (declared databases' ports are added)
    [configuration]                           # passed to scripts as `configuration`
    DB_FILE = "legacy.sqlite3"
    DB_PASSWORD = { env = "ACME_DB_PASSWORD" }  # resolved from the server's environment
    [limits]                                  # any field of engine.config.TenantLimits
    timeout = 5.0
    max_concurrency = 2
    [[tokens]]                                # API tokens: hashes only, never the token
    hash = "sha256:<64 hex>"
    [editing]                                 # saving scripts through the API (engine.server.scriptstore)
    enabled = false                           # default: the folder stays the operator's source of truth
    versions = 20                             # previous versions kept per script for rollback
    [[http]]                                  # HTTP endpoints scripts may request (``import http``)
    name = "legacy_api"
    base_url = "https://api.example.com/v1/"  # scheme, host, port, path prefix
    ca_bundle = "/etc/scriptvisor/acme-ca.pem"  # optional: verify TLS against this CA bundle

    [[databases]]                             # the databases scripts may open (engine.databases)
    name = "legacy"                           # postgres.connect("legacy")
    driver = "postgres"                       # sqlite | postgres | mysql
    host = "127.0.0.1"
    port = 5432
    database = "acme_legacy"
    user = "acme_legacy"
    password_file = "/etc/scriptvisor/secrets/acme.legacy.password"  # or password_env = "VAR"

Declared HTTP hosts are resolved when the tenant is loaded; the workers
connect only to those addresses (``Tenant.http``), and ``Tenant.egress``
lists the (host, port) pairs the OS egress rules allow. The ports of the
declared endpoints are added to ``allowed_ports``.

Why validation is strict: a typo in a limit name would otherwise silently leave
a tenant on the defaults.  Every error names the file and the key.

This is the engine's core: ``scriptvisor run --tenant-dir``, ``connection``,
``doctor``, ``db setup`` and embedders load a folder with ``load_tenant`` and
never import the HTTP server.  The server's registry of all tenants under one
folder (hot reload, broken tenants answered 503) is ``engine/server/tenants.py``,
built on this module.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from scriptvisor.engine import names as _names
from scriptvisor.engine.config import TenantLimits
from scriptvisor.sandbox.facades import web as _web
from scriptvisor.engine.databases import DatabaseDecl, DeclarationError, parse_databases

__all__ = [
    "SCRIPT_NAME",
    "TENANT_NAME",
    "Tenant",
    "TenantConfigError",
    "file_stamp",
    "load_tenant",
]

#: Tenant folder names: they appear in URLs, metrics labels and uids (engine.names: one rule everywhere).
TENANT_NAME = _names.TENANT_NAME
#: Script names: a Python identifier, so ``scripts/<name>.py`` defines ``<name>``.
SCRIPT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: How token hashes are written in tenant.toml.
TOKEN_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")

TOP_LEVEL_KEYS = frozenset(
    {"import_users", "configuration", "limits", "allowed_ports", "tokens", "description", "editing", "http",
     "databases"}
)
#: Previous versions kept per script when [editing] does not say (and the most it may say).
DEFAULT_KEPT_VERSIONS = 20
MAX_KEPT_VERSIONS = 200
_LIMIT_FIELDS = {f.name: f for f in dataclasses.fields(TenantLimits)}
#: Configuration values kept small: they travel to the worker with every call.
MAX_CONFIGURATION_BYTES = 64 * 1024


class TenantConfigError(Exception):
    """A tenant folder that cannot be served. ``str()`` names the file and key."""

    def __init__(self, file: Path | str, key: str | None, message: str) -> None:
        self.file = str(file)
        self.key = key
        self.message = message
        where = f"{self.file}: {key}" if key else self.file
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Tenant:
    """One validated tenant folder. Immutable: a reload builds a new one."""

    name: str
    root: Path
    import_users: bool
    configuration: Mapping[str, Any]
    limits: TenantLimits
    token_hashes: tuple[str, ...]
    #: (mtime_ns, size, inode) of tenant.toml when it was read: the reload key.
    stamp: tuple[int, int, int]
    #: ``[editing] enabled``: PUT /v1/tenants/{t}/scripts/{s} may write scripts/.
    editing: bool = False
    #: ``[editing] versions``: previous versions kept per script.
    editing_versions: int = DEFAULT_KEPT_VERSIONS
    #: ``[[http]]`` endpoints, host names resolved at load (the only addresses workers connect to).
    http: tuple[_web.Endpoint, ...] = ()

    #: ``[[databases]]``: the only databases its scripts may open (engine.databases).
    databases: tuple[DatabaseDecl, ...] = ()

    @property
    def egress(self) -> tuple[tuple[str, int], ...]:
        """The (host, port) pairs this tenant's scripts may connect to, for the OS egress rules
        (``engine.egress``): each declared database's endpoint and each ``[[http]]``
        endpoint's resolved addresses (a host name is resolved when the tenant is
        loaded, so a name that resolves elsewhere later is not followed).
        """
        pairs: list[tuple[str, int]] = []
        for decl in self.databases:
            if decl.endpoint is not None and decl.endpoint not in pairs:
                pairs.append(decl.endpoint)
        for ep in self.http:
            for address in ep.addresses:
                if (address, ep.port) not in pairs:
                    pairs.append((address, ep.port))
        return tuple(pairs)

    def http_policy(self) -> tuple[_web.Endpoint, ...]:
        """The declared HTTP endpoints as the worker's policy carries them (``wire.HttpEndpoint``)."""
        return self.http

    @property
    def scripts_dir(self) -> Path:
        return self.root / "scripts"

    @property
    def data_dir(self) -> Path:
        """Scripts' data (the legacy SQLite file): writable by the tenant's workers."""
        return self.root / "data"

    @property
    def state_dir(self) -> Path:
        """The platform's own files for this tenant (the migrated-user store).

        A sibling of ``data/``, never inside it: workers can write ``data/``
        (Landlock grants it), so a script that escaped the language layer could
        otherwise rewrite the password hashes of migrated users.
        """
        return self.root / "state"

    @property
    def config_file(self) -> Path:
        return self.root / "tenant.toml"

    def engine_settings(self) -> dict[str, Any]:
        """Keyword arguments of ``Engine.configure_tenant`` for this tenant.

        One place for what a tenant's workers get (limits, data directory, and
        whatever the engine learns to confine by), shared by the server,
        ``scriptvisor connection`` and ``scriptvisor run --tenant-dir``.
        """
        return {"limits": self.limits, "data_dir": str(self.data_dir), "http": self.http_policy(),
                "databases": self.databases, "egress": self.egress}

    def script_path(self, script: str) -> Path | None:
        """``scripts/<script>.py`` if the name is valid and the file exists."""
        if not SCRIPT_NAME.match(script):
            return None
        path = self.scripts_dir / f"{script}.py"
        return path if path.is_file() else None


def file_stamp(path: Path) -> tuple[int, int, int]:
    """(mtime_ns, size, inode) of ``path``: what ``Tenant.stamp`` records. Raises ``OSError``."""
    st = path.stat()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _check_plain_value(file: Path, key: str, value: Any, depth: int = 0) -> Any:
    """Configuration values must be JSON-compatible (they travel as JSON)."""
    if depth > 8:
        raise TenantConfigError(file, key, "nested too deeply")
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TenantConfigError(file, key, "must be a finite number")
        return value
    if isinstance(value, list):
        return [_check_plain_value(file, f"{key}[{i}]", v, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _check_plain_value(file, f"{key}.{k}", v, depth + 1) for k, v in value.items()}
    raise TenantConfigError(
        file, key, f"unsupported value type {type(value).__name__} (use a string, number, boolean, array or table)"
    )


def _resolve_configuration(file: Path, raw: Any, environ: Mapping[str, str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise TenantConfigError(file, "configuration", "must be a table")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"configuration.{key}"
        if isinstance(value, dict) and "env" in value:
            extra = set(value) - {"env", "default"}
            if extra:
                raise TenantConfigError(file, full, f"unknown keys {sorted(extra)} beside 'env'")
            var = value["env"]
            if not isinstance(var, str) or not var:
                raise TenantConfigError(file, f"{full}.env", "must name an environment variable")
            if var in environ:
                out[key] = environ[var]
            elif "default" in value:
                out[key] = _check_plain_value(file, f"{full}.default", value["default"])
            else:
                raise TenantConfigError(
                    file, full, f"environment variable {var} is not set on the server"
                )
        else:
            out[key] = _check_plain_value(file, full, value)
    return out


def _check_ports(file: Path, key: str, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list):
        raise TenantConfigError(file, key, "must be an array of port numbers")
    ports = []
    for i, port in enumerate(raw):
        if type(port) is not int or not 1 <= port <= 65535:
            raise TenantConfigError(file, f"{key}[{i}]", "must be an integer port 1..65535")
        ports.append(port)
    return tuple(sorted(set(ports)))


def _build_limits(file: Path, raw: Any, ports: tuple[int, ...] | None, defaults: TenantLimits) -> TenantLimits:
    if not isinstance(raw, dict):
        raise TenantConfigError(file, "limits", "must be a table")
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"limits.{key}"
        spec = _LIMIT_FIELDS.get(key)
        if spec is None:
            raise TenantConfigError(file, full, f"unknown limit (known: {', '.join(sorted(_LIMIT_FIELDS))})")
        if key == "allowed_ports":
            if ports is not None:
                raise TenantConfigError(file, full, "set either allowed_ports or limits.allowed_ports, not both")
            changes[key] = _check_ports(file, full, value)
            continue
        default = getattr(defaults, key)
        if isinstance(default, float):
            if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
                raise TenantConfigError(file, full, "must be a positive number")
            changes[key] = float(value)
        else:
            if type(value) is not int or value < 0 or (value == 0 and key != "max_queue"):
                raise TenantConfigError(file, full, "must be a positive integer")
            changes[key] = value
    if ports is not None:
        changes["allowed_ports"] = ports
    return dataclasses.replace(defaults, **changes)


def _token_hashes(file: Path, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise TenantConfigError(file, "tokens", 'must be an array of "sha256:..." strings or [[tokens]] tables')
    out = []
    for i, item in enumerate(raw):
        key = f"tokens[{i}]"
        if isinstance(item, dict):
            extra = set(item) - {"hash", "name", "created"}
            if extra:
                raise TenantConfigError(file, key, f"unknown keys {sorted(extra)}")
            item = item.get("hash")
            key += ".hash"
        if not isinstance(item, str) or not TOKEN_HASH.match(item):
            raise TenantConfigError(
                file, key, 'must be a token hash "sha256:<64 lowercase hex>" (never the token itself)'
            )
        out.append(item)
    return tuple(out)


def _editing(file: Path, raw: Any) -> tuple[bool, int]:
    if not isinstance(raw, dict):
        raise TenantConfigError(file, "editing", "must be a table")
    extra = set(raw) - {"enabled", "versions"}
    if extra:
        raise TenantConfigError(file, f"editing.{sorted(extra)[0]}", "unknown key (known: enabled, versions)")
    enabled = raw.get("enabled", False)
    if type(enabled) is not bool:
        raise TenantConfigError(file, "editing.enabled", "must be true or false")
    versions = raw.get("versions", DEFAULT_KEPT_VERSIONS)
    if type(versions) is not int or not 1 <= versions <= MAX_KEPT_VERSIONS:
        raise TenantConfigError(file, "editing.versions", f"must be an integer 1..{MAX_KEPT_VERSIONS}")
    return enabled, versions

def _http_endpoints(file: Path, raw: Any,
                    resolve: Callable[[str, int], tuple[str, ...]]) -> tuple[_web.Endpoint, ...]:
    """``[[http]]`` tables: name, base_url, optional ca_bundle; hosts resolved now."""
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise TenantConfigError(file, "http", "must be [[http]] tables (name, base_url, optional ca_bundle)")
    if len(raw) > _web.MAX_ENDPOINTS:
        raise TenantConfigError(file, "http", f"more than {_web.MAX_ENDPOINTS} endpoints")
    out: list[_web.Endpoint] = []
    for i, item in enumerate(raw):
        key = f"http[{i}]"
        extra = set(item) - {"name", "base_url", "ca_bundle"}
        if extra:
            raise TenantConfigError(file, key, f"unknown keys {sorted(extra)} (known: base_url, ca_bundle, name)")
        name = item.get("name")
        if not isinstance(name, str) or not SCRIPT_NAME.match(name):
            raise TenantConfigError(file, f"{key}.name", "must be a name of letters, digits and '_'")
        if any(ep.name == name for ep in out):
            raise TenantConfigError(file, f"{key}.name", f"endpoint {name!r} is declared twice")
        base_url = item.get("base_url")
        try:
            scheme, host, port, prefix = _web.parse_base_url(base_url)
        except ValueError as exc:
            raise TenantConfigError(file, f"{key}.base_url", str(exc)) from None
        ca_pem = None
        if "ca_bundle" in item:
            ca_pem = _read_ca_bundle(file, f"{key}.ca_bundle", item["ca_bundle"], scheme)
        try:
            addresses = resolve(host, port)
        except OSError as exc:
            raise TenantConfigError(file, f"{key}.base_url",
                                    f"host {host} does not resolve ({exc}); declared hosts are resolved "
                                    "when the tenant is loaded") from None
        out.append(_web.Endpoint(name=name, base_url=base_url, scheme=scheme, host=host, port=port,
                                 prefix=prefix, addresses=tuple(addresses), ca_pem=ca_pem))
    return tuple(out)


def _read_ca_bundle(file: Path, key: str, path: Any, scheme: str) -> str:
    if scheme != "https":
        raise TenantConfigError(file, key, "a CA bundle only applies to an https:// base_url")
    if not isinstance(path, str) or not os.path.isabs(path):
        raise TenantConfigError(file, key, "must be an absolute path to a PEM file")
    try:
        with open(path, "rb") as fh:
            data = fh.read(_web.MAX_CA_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise TenantConfigError(file, key, f"cannot read {path}: {exc.strerror}") from None
    if len(data) > _web.MAX_CA_BUNDLE_BYTES:
        raise TenantConfigError(file, key, f"{path} is larger than {_web.MAX_CA_BUNDLE_BYTES} bytes")
    try:
        pem = data.decode("ascii")
        _web.check_ca_pem(pem)
    except (UnicodeDecodeError, ValueError) as exc:
        raise TenantConfigError(file, key, f"{path}: {exc}") from None
    return pem


def load_tenant(
    root: Path, *, defaults: TenantLimits | None = None, environ: Mapping[str, str] | None = None,
    resolve: Callable[[str, int], tuple[str, ...]] = _web.resolve_host,
) -> Tenant:
    """Read and validate one tenant folder. Raises ``TenantConfigError``.

    ``resolve(host, port)`` turns a declared HTTP host into its addresses
    (the system resolver; tests pass their own).
    """
    root = Path(root)
    name = root.name
    file = root / "tenant.toml"
    if not TENANT_NAME.match(name):
        raise TenantConfigError(root, None, f"tenant folder name: use {_names.TENANT_NAME_RULE}")
    try:
        stamp = file_stamp(file)
        with open(file, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise TenantConfigError(file, None, "missing") from None
    except OSError as exc:
        raise TenantConfigError(file, None, f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TenantConfigError(file, None, f"invalid TOML: {exc}") from None
    if not (root / "scripts").is_dir():
        raise TenantConfigError(root / "scripts", None, "missing scripts folder")

    unknown = set(data) - TOP_LEVEL_KEYS
    if unknown:
        raise TenantConfigError(file, sorted(unknown)[0], f"unknown key (known: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    import_users = data.get("import_users", False)
    if type(import_users) is not bool:
        raise TenantConfigError(file, "import_users", "must be true or false")
    configuration = _resolve_configuration(file, data.get("configuration", {}), os.environ if environ is None else environ)
    if len(repr(configuration)) > MAX_CONFIGURATION_BYTES:
        raise TenantConfigError(file, "configuration", f"larger than {MAX_CONFIGURATION_BYTES} bytes")
    ports = _check_ports(file, "allowed_ports", data["allowed_ports"]) if "allowed_ports" in data else None
    try:
        databases = parse_databases(data.get("databases", []), root, os.environ if environ is None else environ)
    except DeclarationError as exc:
        raise TenantConfigError(file, exc.key, exc.message) from None
    limits = _build_limits(file, data.get("limits", {}), ports, defaults or TenantLimits())
    http = _http_endpoints(file, data.get("http", []), resolve)
    if http:  # the Landlock port rule (and the db facades' port check) must let them through
        limits = dataclasses.replace(
            limits, allowed_ports=tuple(sorted(set(limits.allowed_ports) | {ep.port for ep in http})))
    declared_ports = {d.port for d in databases if d.endpoint is not None}
    if declared_ports - set(limits.allowed_ports):
        # Landlock's port rule (the fallback egress layer) must let the declared ports through.
        limits = dataclasses.replace(
            limits, allowed_ports=tuple(sorted(set(limits.allowed_ports) | declared_ports)))
    tokens = _token_hashes(file, data.get("tokens", []))
    editing, editing_versions = _editing(file, data.get("editing", {}))
    (root / "data").mkdir(exist_ok=True)
    return Tenant(
        name=name,
        root=root.resolve(),
        import_users=import_users,
        configuration=MappingProxyType(configuration),
        limits=limits,
        token_hashes=tokens,
        stamp=stamp,
        editing=editing,
        editing_versions=editing_versions,
        http=http,
        databases=databases,
    )
