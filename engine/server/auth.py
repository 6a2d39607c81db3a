"""Bearer tokens: only their hashes are stored, compared in constant time.

A token is ``svt_`` + 43 url-safe characters (256 random bits).  With that much
entropy a plain SHA-256 is the right hash: a slow password hash would protect
nothing more and cost milliseconds on every request.  tenant.toml stores
``sha256:<hex>``; the token itself is printed once by ``create_token`` and never
written anywhere.

Decisions, per request for tenant T:

* no ``Authorization: Bearer`` header, or a token nobody knows  -> 401
* the operator's admin token                                   -> allowed
* a token listed by T                                          -> allowed
* a token listed by another tenant only                        -> 403

The admin token comes from the server's environment (``SCRIPTVISOR_ADMIN_TOKEN``,
or ``SCRIPTVISOR_ADMIN_TOKEN_HASH`` to keep even that as a hash).

Every comparison goes through ``hmac.compare_digest`` and the loops never stop
early, so the time taken does not depend on which hash matched or how much of it.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import hmac
import os
import secrets
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping

from scriptvisor.engine.tenants import TENANT_NAME, TOKEN_HASH, TenantConfigError

from .files import write_atomic

__all__ = [
    "ADMIN_TOKEN_ENV",
    "ADMIN_TOKEN_HASH_ENV",
    "Decision",
    "admin_hash_from_env",
    "bearer_token",
    "create_token",
    "decide",
    "hash_token",
    "list_tokens",
    "revoke_token",
]

ADMIN_TOKEN_ENV = "SCRIPTVISOR_ADMIN_TOKEN"
ADMIN_TOKEN_HASH_ENV = "SCRIPTVISOR_ADMIN_TOKEN_HASH"
TOKEN_PREFIX = "svt_"
#: Longest Authorization header value considered at all.
MAX_TOKEN_CHARS = 512


class Decision(enum.Enum):
    ALLOW = 200
    UNAUTHENTICATED = 401
    FORBIDDEN = 403


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not header or len(header) > MAX_TOKEN_CHARS:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _matches_any(presented: str, hashes: Iterable[str]) -> bool:
    found = False
    for stored in hashes:
        # no early exit: every stored hash is compared
        found |= hmac.compare_digest(stored.encode(), presented.encode())
    return found


def decide(
    token: str | None,
    tenant: str,
    tenant_hashes: Mapping[str, Iterable[str]],
    admin_hash: str | None = None,
) -> Decision:
    """Whether ``token`` may act for ``tenant``.

    ``tenant_hashes`` maps every loaded tenant to its token hashes, so that a
    valid token of another tenant is told apart (403) from garbage (401).
    """
    if token is None:
        return Decision.UNAUTHENTICATED
    presented = hash_token(token)
    is_admin = admin_hash is not None and _matches_any(presented, [admin_hash])
    mine = False
    elsewhere = False
    for name, hashes in tenant_hashes.items():
        hit = _matches_any(presented, hashes)
        if name == tenant:
            mine |= hit
        else:
            elsewhere |= hit
    if is_admin or mine:
        return Decision.ALLOW
    if elsewhere:
        return Decision.FORBIDDEN
    return Decision.UNAUTHENTICATED


def admin_hash_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    hashed = env.get(ADMIN_TOKEN_HASH_ENV)
    if hashed:
        if not TOKEN_HASH.match(hashed):
            raise ValueError(f'{ADMIN_TOKEN_HASH_ENV} must look like "sha256:<64 lowercase hex>"')
        return hashed
    plain = env.get(ADMIN_TOKEN_ENV)
    return hash_token(plain) if plain else None


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(tenants_dir: str | os.PathLike[str], tenant: str, *, name: str | None = None) -> str:
    """Make a token for ``tenant``, store only its hash in tenant.toml, return it.

    The file is rewritten atomically (temp file + rename, mode preserved) and
    re-parsed before it replaces the old one, so a failure leaves it untouched.
    A running server picks the new hash up on the tenant's next request.
    """
    file, text, data = _read_tenant_toml(tenants_dir, tenant)
    existing = data.get("tokens")
    if existing is not None and (not isinstance(existing, list) or any(not isinstance(x, dict) for x in existing)):
        raise TenantConfigError(
            file, "tokens", "is an inline array; convert it to [[tokens]] tables (hash = \"...\") to add tokens"
        )
    token = new_token()
    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = f'\n[[tokens]]\nhash = "{hash_token(token)}"\ncreated = "{created}"\n'
    if name is not None:
        entry += f"name = {_toml_string(name)}\n"
    if text and not text.endswith("\n"):
        text += "\n"
    new_text = text + entry
    tomllib.loads(new_text)  # never write a file we cannot read back
    write_atomic(file, new_text, mode=None)
    return token


def _read_tenant_toml(tenants_dir: str | os.PathLike[str], tenant: str) -> tuple[Path, str, dict[str, Any]]:
    """``(path, text, parsed)`` of a tenant's tenant.toml; ``TenantConfigError`` saying what is wrong."""
    if not TENANT_NAME.match(tenant):
        raise TenantConfigError(Path(tenants_dir) / tenant, None, "not a valid tenant name")
    file = Path(tenants_dir) / tenant / "tenant.toml"
    try:
        text = file.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise TenantConfigError(file, None, "missing: is this a tenant folder?") from None
    except tomllib.TOMLDecodeError as exc:
        raise TenantConfigError(file, None, f"invalid TOML: {exc}") from None
    return file, text, data


#: Shortest token id prefix ``token revoke`` accepts.
MIN_ID_CHARS = 8


def _read_tokens(tenants_dir: str | os.PathLike[str], tenant: str) -> tuple[Path, str, list[dict[str, str]]]:
    file, text, data = _read_tenant_toml(tenants_dir, tenant)
    raw = data.get("tokens", [])
    if not isinstance(raw, list):
        raise TenantConfigError(file, "tokens", "must be an array of [[tokens]] tables")
    rows = []
    for item in raw:
        entry = item if isinstance(item, dict) else {"hash": item}
        hashed = str(entry.get("hash", ""))
        rows.append({"id": hashed.removeprefix("sha256:")[:12], "hash": hashed,
                     "name": str(entry.get("name", "")), "created": str(entry.get("created", "")),
                     "inline": "no" if isinstance(item, dict) else "yes"})
    return file, text, rows


def list_tokens(tenants_dir: str | os.PathLike[str], tenant: str) -> list[dict[str, str]]:
    """``[{id, name, created}]`` of the tenant's tokens, in file order.

    ``id`` is the first 12 hex digits of the token's SHA-256: it names the
    token for ``revoke_token`` and reveals nothing about the token itself.
    """
    _, _, rows = _read_tokens(tenants_dir, tenant)
    return [{"id": r["id"], "name": r["name"], "created": r["created"]} for r in rows]


def revoke_token(tenants_dir: str | os.PathLike[str], tenant: str, token_id: str) -> dict[str, str]:
    """Remove the token whose id starts with ``token_id`` from tenant.toml; returns its row.

    Only that ``[[tokens]]`` table is cut from the file (comments and the
    other sections stay as written); the result is re-parsed and compared
    before it atomically replaces the file.  A running server refuses the
    token from its next request on (the file is re-read when it changes).
    """
    token_id = token_id.strip().lower().removeprefix("sha256:")
    file, text, rows = _read_tokens(tenants_dir, tenant)
    if len(token_id) < MIN_ID_CHARS or any(c not in "0123456789abcdef" for c in token_id):
        raise TenantConfigError(file, "tokens", f"give at least {MIN_ID_CHARS} hex digits of a token id "
                                "(see `scriptvisor token list`)")
    hits = [r for r in rows if r["hash"].removeprefix("sha256:").startswith(token_id)]
    if not hits:
        known = ", ".join(r["id"] for r in rows) or "none"
        raise TenantConfigError(file, "tokens", f"no token with id {token_id} (ids: {known})")
    if len(hits) > 1:
        raise TenantConfigError(file, "tokens", f"id {token_id} matches {len(hits)} tokens: give more digits")
    victim = hits[0]
    if victim["inline"] == "yes":
        raise TenantConfigError(file, "tokens", "is an inline array; convert it to [[tokens]] tables to revoke")
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    block: list[str] | None = None

    def flush() -> None:
        if block is None:
            return
        if not any(victim["hash"] in line for line in block):
            out.extend(block)
            return
        # keep the blank and comment lines after the table's last key: they
        # belong to whatever follows
        last = max(i for i, line in enumerate(block) if line.strip() and not line.strip().startswith("#"))
        out.extend(block[last + 1:])

    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            flush()
            block = [line] if stripped.replace(" ", "") == "[[tokens]]" else None
            if block is None:
                out.append(line)
        elif block is not None:
            block.append(line)
        else:
            out.append(line)
    flush()
    new_text = "".join(out)
    before = tomllib.loads(text)
    after = tomllib.loads(new_text)
    expected = [t for t in before.get("tokens", []) if t.get("hash") != victim["hash"]]
    if after.get("tokens", []) != expected or {k: v for k, v in after.items() if k != "tokens"} != {
            k: v for k, v in before.items() if k != "tokens"}:
        raise TenantConfigError(file, "tokens", "could not cut the token's table out cleanly; edit the file by hand")
    write_atomic(file, new_text, mode=None)
    return {"id": victim["id"], "name": victim["name"], "created": victim["created"]}


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c >= " " and c != "\x7f" else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'
