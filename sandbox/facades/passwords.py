"""The ``passwords`` facade: verify the password hashes legacy systems store.

Migration scripts read a user's row from an old system and must check the
typed password against whatever that system stored: Django, WordPress, Linux
``crypt``, LDAP, a PHP app's bcrypt, an argon2 table.  Scripts get plain
functions, never a library object::

    passwords.verify(password, stored_hash, scheme=None) -> bool
    passwords.identify(stored_hash) -> str | None
    passwords.schemes() -> list of scheme names
    passwords.hash(password, scheme="argon2id", rounds=None) -> str
    passwords.verify_salted(password, digest, salt, algorithm="sha256",
                            salt_position="suffix", encoding="hex") -> bool
    passwords.verify_hmac(password, digest, key, algorithm="sha256", encoding="hex") -> bool

What is behind it: libpass (the maintained fork of passlib) for the
modular-crypt, phpass and LDAP formats; argon2-cffi for argon2 (called with
one thread: the lanes of the hash are computed in turn, so a ``p=8`` hash
never starts eight threads on a shared node); the ``bcrypt`` package through
the bcrypt facade; ``hashlib`` (OpenSSL) for scrypt, PBKDF2 and digests.

Why the checks before any work:

* **Cost caps per tenant.**  The cost of a verification is written in the
  stored hash (bcrypt's ``$12$``, PBKDF2's rounds, argon2's ``m=,t=,p=``,
  scrypt's ``ln=,r=,p=``), so a hostile or corrupt row could pin a worker in C
  code where no deadline check runs.  Every tunable scheme's parameters are
  read and compared with the tenant's ``hash_*`` limits
  (``sandbox.wire.WorkerLimits``) *before* anything is computed; a hash
  beyond them raises ``HashTooExpensive`` at once.  The defaults accept what
  the reference libraries produce by default today.
* **The invocation's clock.**  The estimated time of the work (from measured
  rates, ``_RATES``) is compared with the invocation's remaining time; work
  that cannot finish before the kill raises ``HashTooExpensive`` instead of
  starting.
* **Malformed input never escapes as a crash.**  An unrecognised, truncated or
  corrupted hash verifies as ``False``; ``identify`` says ``None``.  Bad
  argument types and passwords that cannot be encoded (a lone surrogate) raise
  ``PasswordError``, a ``ValueError`` a script can catch by name.
* **Bare digests are ambiguous** (is 32 hex digits MD5 or half of something
  else?), so they verify only with an explicit ``scheme``.
"""

from __future__ import annotations

import base64 as _base64
import dataclasses
import hashlib as _hashlib
import hmac as _hmac
import re
from dataclasses import dataclass
from typing import Any, Callable

from argon2 import low_level as _argon2
from passlib import hash as _ph

from scriptvisor.sandbox import context as _context
from scriptvisor.sandbox.facades import crypto as _crypto
from scriptvisor.sandbox.wire import WorkerLimits

__all__ = ["HashTooExpensive", "PasswordError", "UnknownScheme", "passwords", "reference_markdown"]

#: Longest password accepted (characters); anything longer is a mistake or an attack.
MAX_PASSWORD_CHARS = 4096
#: Longest stored hash looked at (characters); real ones are under 300.
MAX_HASH_CHARS = 1024
#: Time kept free for the script after the hash work (seconds).
SAFETY_MARGIN = 0.05

#: Default per-tenant caps: the ``hash_*`` fields of ``WorkerLimits`` (where
#: each has its reason), which ``TenantLimits`` exposes under the same names.
DEFAULT_CAPS: dict[str, int] = {f.name: getattr(WorkerLimits(), f.name)
                                for f in dataclasses.fields(WorkerLimits) if f.name.startswith("hash_")}

#: Work units per second on one core of the 2-core reference VM (measured
#: there with time.perf_counter around one hash of each kind).  Used only to refuse work that
#: cannot finish before the invocation's deadline.
_RATES = {
    "bcrypt": 7_500.0,          # 2**cost rounds per second (cost 10: 0.136 s)
    "pbkdf2": 1_400_000.0,      # PBKDF2 iterations per second (SHA-256)
    "sha_crypt": 1_700_000.0,   # sha256/sha512-crypt rounds per second
    "phpass": 2_000_000.0,      # MD5 rounds per second
    "argon2": 780_000.0,        # KiB of memory passes (t * m) per second
    "scrypt": 2_300_000.0,      # N * r * p per second
}


class PasswordError(ValueError):
    """A bad argument: wrong type, a password that cannot be encoded, a bad parameter."""


class UnknownScheme(PasswordError):
    """``scheme`` names nothing ``passwords.schemes()`` lists."""


class HashTooExpensive(PasswordError):
    """The stored hash's work factor is over this tenant's cap, or the work
    cannot finish before the invocation's deadline.  Nothing was computed."""


# --------------------------------------------------------------------------- arguments


def _password(value: Any) -> bytes:
    if type(value) is not str:
        raise PasswordError("password must be a str")
    if len(value) > MAX_PASSWORD_CHARS:
        raise PasswordError(f"password longer than {MAX_PASSWORD_CHARS} characters")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise PasswordError("password is not valid text (it holds a lone surrogate)") from None


def _stored(value: Any) -> str | None:
    """The stored hash as text, or None when it cannot be a hash (verify: False)."""
    if type(value) is bytes:
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if type(value) is not str:
        if value is None:
            return None
        raise PasswordError("stored_hash must be a str")
    value = value.strip()
    if not value or len(value) > MAX_HASH_CHARS or not value.isascii():
        return None
    return value


def _caps() -> dict[str, int]:
    """This tenant's caps: its limits where set, else the defaults."""
    try:
        limits = _context.worker().limits
    except RuntimeError:  # used outside a worker (tests, tools)
        return DEFAULT_CAPS
    get = limits.get if isinstance(limits, dict) else (lambda k, d: getattr(limits, k, d))
    return {key: int(get(key, default)) for key, default in DEFAULT_CAPS.items()}


def _spend(kind: str, units: float, what: str) -> None:
    """Refuse work that cannot finish before the deadline (estimated from ``_RATES``)."""
    seconds = units / _RATES[kind]
    try:
        left = _context.current().remaining()
    except RuntimeError:  # no invocation (tests, tools): nothing to protect
        return
    if seconds > left - SAFETY_MARGIN:
        raise HashTooExpensive(f"{what} needs about {seconds:.2f} s of CPU; the invocation has "
                               f"{left:.2f} s left")


def _cap(value: int, key: str, what: str, caps: dict[str, int]) -> None:
    if value > caps[key]:
        raise HashTooExpensive(f"{what} {value} is above this tenant's cap {caps[key]} "
                               f"(limits.{key} in tenant.toml)")


# --------------------------------------------------------------------------- schemes


@dataclass(frozen=True)
class _Scheme:
    name: str
    summary: str          # one line for the facade reference
    example: str          # what the stored value looks like
    pattern: re.Pattern[str] | None   # None: only with an explicit scheme
    verify: Callable[[bytes, str, dict[str, int]], bool]
    hash: Callable[[bytes, int | None, dict[str, int]], str] | None
    valid: Callable[[str], bool]      # well-formed (parses), no work done


def _b64decode_loose(text: str) -> bytes:
    """Base64 without padding (argon2, scrypt encodings)."""
    return _base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


# ----- bcrypt family

_BCRYPT = re.compile(r"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")


def _bcrypt_cost(stored: str, caps: dict[str, int]) -> None:
    m = _BCRYPT.match(stored)
    if m is None:
        raise ValueError("not a bcrypt hash")
    cost = int(m.group(1))
    _cap(cost, "hash_bcrypt_max_cost", "bcrypt cost", caps)
    _spend("bcrypt", 2.0 ** cost, f"bcrypt cost {cost}")


def _bcrypt_check(password: bytes, stored: str, caps: dict[str, int]) -> bool:
    try:
        _bcrypt_cost(stored, caps)
    except ValueError as exc:
        if isinstance(exc, PasswordError):
            raise
        return False
    # bcrypt reads 72 bytes at most; legacy systems truncated silently, and
    # the stored hash was made from those 72 bytes.
    try:
        return bool(_crypto._bcrypt.checkpw(password[:_crypto.MAX_PASSWORD_BYTES], stored.encode("ascii")))
    except ValueError:
        return False


def _bcrypt_hash(password: bytes, rounds: int | None, caps: dict[str, int]) -> str:
    cost = _crypto.DEFAULT_ROUNDS if rounds is None else rounds
    if not _crypto.MIN_ROUNDS <= cost <= min(caps["hash_bcrypt_max_cost"], 31):
        raise PasswordError(f"bcrypt rounds must be {_crypto.MIN_ROUNDS}..{caps['hash_bcrypt_max_cost']}")
    _spend("bcrypt", 2.0 ** cost, f"bcrypt cost {cost}")
    salt = _crypto._bcrypt.gensalt(cost)
    return _crypto._bcrypt.hashpw(password[:_crypto.MAX_PASSWORD_BYTES], salt).decode("ascii")


def _django_bcrypt_sha256_check(password: bytes, stored: str, caps: dict[str, int]) -> bool:
    inner = stored[len("bcrypt_sha256$"):]
    digest = _hashlib.sha256(password).hexdigest().encode("ascii")
    return _bcrypt_check(digest, inner, caps)


def _django_bcrypt_sha256_hash(password: bytes, rounds: int | None, caps: dict[str, int]) -> str:
    digest = _hashlib.sha256(password).hexdigest().encode("ascii")
    cost = 12 if rounds is None else rounds  # Django's BCryptSHA256PasswordHasher.rounds
    return "bcrypt_sha256$" + _bcrypt_hash(digest, cost, caps)


def _django_bcrypt_check(password: bytes, stored: str, caps: dict[str, int]) -> bool:
    return _bcrypt_check(password, stored[len("bcrypt$"):], caps)


# ----- argon2 (computed on one thread whatever the hash's lanes)

_ARGON2 = re.compile(r"^\$argon2(id|i|d)\$(?:v=(\d+)\$)?m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")
_ARGON2_TYPES = {"i": _argon2.Type.I, "d": _argon2.Type.D, "id": _argon2.Type.ID}


def _argon2_raw(password: bytes, salt: bytes, t: int, m: int, p: int, length: int,
                kind: Any, version: int) -> bytes:
    ffi = _argon2.ffi
    out = ffi.new("uint8_t[]", length)
    pwd = ffi.new("uint8_t[]", password) if password else ffi.NULL
    csalt = ffi.new("uint8_t[]", salt)
    ctx = ffi.new("argon2_context *", {
        "out": out, "outlen": length, "pwd": pwd, "pwdlen": len(password),
        "salt": csalt, "saltlen": len(salt), "secret": ffi.NULL, "secretlen": 0,
        "ad": ffi.NULL, "adlen": 0, "t_cost": t, "m_cost": m, "lanes": p,
        "threads": 1,  # the point: never start threads in a worker
        "version": version, "allocate_cbk": ffi.NULL, "free_cbk": ffi.NULL, "flags": 0,
    })
    rc = _argon2.core(ctx, kind.value)
    if rc != 0:
        raise ValueError(_argon2.error_to_str(rc))
    return bytes(ffi.buffer(out, length))


def _argon2_params(stored: str, caps: dict[str, int]) -> tuple[Any, int, int, int, int, bytes, bytes]:
    m = _ARGON2.match(stored)
    if m is None:
        raise ValueError("not an argon2 hash")
    kind = _ARGON2_TYPES[m.group(1)]
    version = int(m.group(2)) if m.group(2) else 0x10
    memory, time_cost, lanes = int(m.group(3)), int(m.group(4)), int(m.group(5))
    salt, digest = _b64decode_loose(m.group(6)), _b64decode_loose(m.group(7))
    if version not in (0x10, 0x13) or lanes < 1 or time_cost < 1 or memory < 8 * lanes \
            or len(salt) < 8 or len(digest) < 4:
        raise ValueError("argon2 parameters out of range")
    _cap(memory, "hash_argon2_max_memory_kib", "argon2 memory (KiB)", caps)
    _cap(time_cost, "hash_argon2_max_time_cost", "argon2 time cost", caps)
    _cap(lanes, "hash_argon2_max_parallelism", "argon2 parallelism", caps)
    _spend("argon2", float(memory) * time_cost, f"argon2 m={memory},t={time_cost}")
    return kind, version, memory, time_cost, lanes, salt, digest


def _argon2_check(password: bytes, stored: str, caps: dict[str, int]) -> bool:
    try:
        kind, version, memory, time_cost, lanes, salt, digest = _argon2_params(stored, caps)
    except PasswordError:
        raise
    except ValueError:
        return False
    try:
        computed = _argon2_raw(password, salt, time_cost, memory, lanes, len(digest), kind, version)
    except ValueError:
        return False
    return _hmac.compare_digest(computed, digest)


def _argon2_hasher(variant: str) -> Callable[[bytes, int | None, dict[str, int]], str]:
    def make(password: bytes, rounds: int | None, caps: dict[str, int]) -> str:
        # RFC 9106's second recommended option, argon2-cffi's default.
        time_cost, memory, lanes = (3 if rounds is None else rounds), 65_536, 4
        _cap(time_cost, "hash_argon2_max_time_cost", "argon2 time cost", caps)
        if time_cost < 1:
            raise PasswordError("argon2 rounds (time cost) must be at least 1")
        _spend("argon2", float(memory) * time_cost, f"argon2 m={memory},t={time_cost}")
        salt = _secrets_bytes(16)
        raw = _argon2_raw(password, salt, time_cost, memory, lanes, 32, _ARGON2_TYPES[variant], 0x13)
        b64 = lambda b: _base64.b64encode(b).decode("ascii").rstrip("=")  # noqa: E731
        return f"$argon2{variant}$v=19$m={memory},t={time_cost},p={lanes}${b64(salt)}${b64(raw)}"
    return make


def _django_argon2_check(password: bytes, stored: str, caps: dict[str, int]) -> bool:
    return _argon2_check(password, stored[len("argon2"):], caps)


# ----- scrypt

#: Django's ScryptPasswordHasher always derives 64 bytes.
_DJANGO_SCRYPT_BYTES = 64
_SCRYPT_DJANGO = re.compile(r"^scrypt\$(\d+)\$([^$]+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)$")


def _scrypt_guard(n: int, r: int, p: int, caps: dict[str, int]) -> None:
    if n < 2 or n & (n - 1) or r < 1 or p < 1:
        raise ValueError("scrypt parameters out of range")
    memory_mb = 128 * n * r // (1024 * 1024)
    _cap(memory_mb, "hash_scrypt_max_memory_mb", "scrypt memory (MiB)", caps)
    _cap(p, "hash_scrypt_max_parallelism", "scrypt parallelism", caps)
    _spend("scrypt", float(n) * r * p, f"scrypt N={n},r={r},p={p}")


def check_scrypt_cost(n: int, r: int, p: int) -> None:
    """The scrypt cost checks, for the ``hashlib.scrypt`` facade function."""
    try:
        _scrypt_guard(n, r, p, _caps())
    except PasswordError:
        raise
    except ValueError as exc:
        raise PasswordError(f"{exc} (n must be a power of 2 above 1; r, p at least 1)") from None


def check_pbkdf2_cost(iterations: int, blocks: int) -> None:
    """The PBKDF2 cost checks, for the ``hashlib.pbkdf2_hmac`` facade function: the
    iterations run once per output block, so a long ``dklen`` multiplies the work."""
    work = iterations * blocks
    _cap(work, "hash_pbkdf2_max_rounds", "PBKDF2 work (iterations x output blocks)", _caps())
    _spend("pbkdf2", float(work), f"PBKDF2 {iterations} rounds x {blocks} blocks")


def scrypt_derive(password: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    """hashlib.scrypt with a memory ceiling that fits the parameters (checked by the caller)."""
    return _hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=length,
                           maxmem=128 * n * r * 2 + 1024 * 1024)


def _django_scrypt_check(password: bytes, stored: str, caps: dict[str, int]) -> bool:
    m = _SCRYPT_DJANGO.match(stored)
    if m is None:
        return False
    n, salt, r, p = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    try:
        digest = _base64.b64decode(m.group(5), validate=True)
        if len(digest) != _DJANGO_SCRYPT_BYTES:  # a cut digest would match its own prefix
            return False
        _scrypt_guard(n, r, p, caps)
    except PasswordError:
        raise
    except ValueError:
        return False
    computed = scrypt_derive(password, salt.encode("ascii"), n, r, p, len(digest))
    return _hmac.compare_digest(computed, digest)


# ----- libpass-backed formats

def _libpass(handler: Any, cost: Callable[[Any, dict[str, int]], None], prefix: str = "",
             handler_sees_prefix: bool = False
             ) -> tuple[Callable[..., bool], Callable[..., str], Callable[[str], bool]]:
    """verify/hash functions over a libpass handler, checking the cost first.

    ``prefix`` (an LDAP ``{LABEL}``, matched case-insensitively) is stripped
    before the handler sees the hash, or normalised to upper case when the
    handler's own format includes it (``handler_sees_prefix``).
    """

    def check(password: bytes, stored: str, caps: dict[str, int]) -> bool:
        inner = stored
        if prefix and stored[:len(prefix)].upper() == prefix.upper():
            inner = (prefix if handler_sees_prefix else "") + stored[len(prefix):]
        try:
            parsed = handler.from_string(inner)
        except (ValueError, TypeError):
            return False
        cost(parsed, caps)
        try:
            return bool(handler.verify(password, inner))
        except (ValueError, TypeError):
            return False

    def valid(stored: str) -> bool:
        inner = stored
        if prefix and stored[:len(prefix)].upper() == prefix.upper():
            inner = (prefix if handler_sees_prefix else "") + stored[len(prefix):]
        try:
            handler.from_string(inner)
        except (ValueError, TypeError):
            return False
        return True

    def make(password: bytes, rounds: int | None, caps: dict[str, int]) -> str:
        try:
            configured = handler if rounds is None else handler.using(rounds=rounds)
        except (ValueError, TypeError) as exc:
            raise PasswordError(f"rounds: {exc}") from None
        settings = getattr(configured, "default_rounds", None)
        if settings is not None:
            cost(_Rounds(settings), caps)
        try:
            value = configured.hash(password)
        except (ValueError, TypeError) as exc:
            raise PasswordError(str(exc)) from None
        return prefix + value if prefix and not handler_sees_prefix else value

    return check, make, valid


class _Rounds:
    """Stand-in for a parsed hash when only the rounds are known (hashing)."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.block_size = 8
        self.parallelism = 1


def _pbkdf2_cost(parsed: Any, caps: dict[str, int]) -> None:
    _cap(int(parsed.rounds), "hash_pbkdf2_max_rounds", "PBKDF2 rounds", caps)
    _spend("pbkdf2", float(parsed.rounds), f"PBKDF2 {parsed.rounds} rounds")


def _sha_crypt_cost(parsed: Any, caps: dict[str, int]) -> None:
    _cap(int(parsed.rounds), "hash_sha_crypt_max_rounds", "sha-crypt rounds", caps)
    _spend("sha_crypt", float(parsed.rounds), f"sha-crypt {parsed.rounds} rounds")


def _phpass_cost(parsed: Any, caps: dict[str, int]) -> None:
    _cap(int(parsed.rounds), "hash_phpass_max_cost", "phpass cost (log2)", caps)
    _spend("phpass", 2.0 ** parsed.rounds, f"phpass cost {parsed.rounds}")


def _scrypt_cost(parsed: Any, caps: dict[str, int]) -> None:
    try:
        _scrypt_guard(2 ** int(parsed.rounds), int(parsed.block_size), int(parsed.parallelism), caps)
    except PasswordError:
        raise
    except ValueError as exc:
        raise PasswordError(str(exc)) from None


def _no_cost(parsed: Any, caps: dict[str, int]) -> None:
    """Fixed, cheap work (one digest, or md5-crypt's 1000 rounds)."""


# ----- bare, salted and keyed digests

_DIGESTS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")


def _hex_digest(algorithm: str) -> tuple[Callable[..., bool], Callable[..., str]]:
    size = _hashlib.new(algorithm).digest_size * 2

    def check(password: bytes, stored: str, caps: dict[str, int]) -> bool:
        computed = _hashlib.new(algorithm, password).hexdigest()
        return len(stored) == size and _hmac.compare_digest(computed, stored.lower())

    def make(password: bytes, rounds: int | None, caps: dict[str, int]) -> str:
        return _hashlib.new(algorithm, password).hexdigest()

    return check, make


def _secrets_bytes(n: int) -> bytes:
    import secrets as _secrets  # noqa: PLC0415 - stdlib, already imported by the stdlib facade

    return _secrets.token_bytes(n)


def _build() -> dict[str, _Scheme]:
    out: dict[str, _Scheme] = {}

    def add(name: str, summary: str, example: str, pattern: str | None,
            check: Callable[..., bool], make: Callable[..., str] | None,
            valid: Callable[[str], bool] | None = None) -> None:
        compiled = re.compile(pattern) if pattern else None
        out[name] = _Scheme(name, summary, example, compiled, check, make,
                            valid or (lambda stored: compiled is None or compiled.match(stored) is not None))

    add("bcrypt", "bcrypt ($2a$, $2b$, $2y$: PHP, Ruby, Node, Spring)", "$2b$12$<53 characters>",
        r"^\$2[abxy]\$\d\d\$", _bcrypt_check, _bcrypt_hash, lambda h: _BCRYPT.match(h) is not None)
    for variant in ("id", "i", "d"):
        add(f"argon2{variant}", f"argon2{variant} (PHC string; m, t, p read from the hash)",
            f"$argon2{variant}$v=19$m=65536,t=3,p=4$<salt>$<hash>",
            rf"^\$argon2{variant}\$", _argon2_check, _argon2_hasher(variant), lambda h: _ARGON2.match(h) is not None)
    scrypt_check, scrypt_make, scrypt_valid = _libpass(_ph.scrypt, _scrypt_cost)
    add("scrypt", "scrypt, passlib/libpass PHC form", "$scrypt$ln=16,r=8,p=1$<salt>$<hash>",
        r"^\$scrypt\$", scrypt_check, scrypt_make, scrypt_valid)
    for name, prefix, handler in (("pbkdf2_sha1", r"^\$pbkdf2\$", _ph.pbkdf2_sha1),
                                  ("pbkdf2_sha256", r"^\$pbkdf2-sha256\$", _ph.pbkdf2_sha256),
                                  ("pbkdf2_sha512", r"^\$pbkdf2-sha512\$", _ph.pbkdf2_sha512)):
        check, make, valid = _libpass(handler, _pbkdf2_cost)
        add(name, f"PBKDF2-{name.split('_')[1].upper()}, modular crypt form",
            f"{prefix[2:-2].replace(chr(92), '')}$<rounds>$<salt>$<hash>", prefix, check, make, valid)
    for name, handler in (("django_pbkdf2_sha256", _ph.django_pbkdf2_sha256),
                          ("django_pbkdf2_sha1", _ph.django_pbkdf2_sha1)):
        check, make, valid = _libpass(handler, _pbkdf2_cost)
        algo = name[len("django_"):]
        add(name, f"Django {algo} (Django's default hasher)", f"{algo}$1000000$<salt>$<base64>",
            rf"^{algo}\$", check, make, valid)
    add("django_bcrypt_sha256", "Django BCryptSHA256PasswordHasher", "bcrypt_sha256$$2b$12$<...>",
        r"^bcrypt_sha256\$\$2", _django_bcrypt_sha256_check, _django_bcrypt_sha256_hash,
        lambda h: _BCRYPT.match(h[len("bcrypt_sha256$"):]) is not None)
    add("django_bcrypt", "Django BCryptPasswordHasher", "bcrypt$$2b$12$<...>",
        r"^bcrypt\$\$2", _django_bcrypt_check, None, lambda h: _BCRYPT.match(h[len("bcrypt$"):]) is not None)
    add("django_argon2", "Django Argon2PasswordHasher", "argon2$argon2id$v=19$m=102400,t=2,p=8$<...>",
        r"^argon2\$argon2(id|i|d)\$", _django_argon2_check, None,
        lambda h: _ARGON2.match(h[len("argon2"):]) is not None)
    add("django_scrypt", "Django ScryptPasswordHasher", "scrypt$16384$<salt>$8$1$<base64>",
        r"^scrypt\$\d+\$", _django_scrypt_check, None, lambda h: _SCRYPT_DJANGO.match(h) is not None)
    check, make, valid = _libpass(_ph.phpass, _phpass_cost)
    add("phpass", "phpass portable hashes (WordPress $P$, phpBB $H$)", "$P$B<salt><hash>",
        r"^\$[PH]\$", check, make, valid)
    for name, pattern, handler, cost in (
            ("md5_crypt", r"^\$1\$", _ph.md5_crypt, _no_cost),
            ("apr_md5_crypt", r"^\$apr1\$", _ph.apr_md5_crypt, _no_cost),
            ("sha256_crypt", r"^\$5\$", _ph.sha256_crypt, _sha_crypt_cost),
            ("sha512_crypt", r"^\$6\$", _ph.sha512_crypt, _sha_crypt_cost)):
        check, make, valid = _libpass(handler, cost)
        add(name, {"md5_crypt": "MD5-crypt ($1$, Linux shadow, Cisco)",
                   "apr_md5_crypt": "Apache htpasswd MD5 ($apr1$)",
                   "sha256_crypt": "SHA256-crypt ($5$, Linux shadow)",
                   "sha512_crypt": "SHA512-crypt ($6$, Linux shadow)"}[name],
            f"{pattern[2:-2].replace(chr(92), '')}$<salt>$<hash>", pattern, check, make, valid)
    for name, label, handler in (("ldap_salted_sha1", "SSHA", _ph.ldap_salted_sha1),
                                 ("ldap_salted_sha256", "SSHA256", _ph.ldap_salted_sha256),
                                 ("ldap_salted_sha512", "SSHA512", _ph.ldap_salted_sha512),
                                 ("ldap_sha1", "SHA", _ph.ldap_sha1),
                                 ("ldap_salted_md5", "SMD5", _ph.ldap_salted_md5),
                                 ("ldap_md5", "MD5", _ph.ldap_md5)):
        check, make, valid = _libpass(handler, _no_cost, prefix="{" + label + "}", handler_sees_prefix=True)
        add(name, f"LDAP {{{label}}} (OpenLDAP userPassword)", f"{{{label}}}<base64>",
            r"^(?i:\{" + label + r"\})", check, make, valid)
    for name, label, handler, cost in (("ldap_md5_crypt", "$1$", _ph.md5_crypt, _no_cost),
                                       ("ldap_sha256_crypt", "$5$", _ph.sha256_crypt, _sha_crypt_cost),
                                       ("ldap_sha512_crypt", "$6$", _ph.sha512_crypt, _sha_crypt_cost)):
        check, make, valid = _libpass(handler, cost, prefix="{CRYPT}")
        add(name, f"LDAP {{CRYPT}}{label} (crypt(3) in userPassword)", f"{{CRYPT}}{label}<salt>$<hash>",
            r"^(?i:\{CRYPT\})" + re.escape(label), check, make, valid)
    for algorithm in ("md5", "sha1", "sha256", "sha512"):
        check, make = _hex_digest(algorithm)
        add(f"hex_{algorithm}", f"unsalted hex {algorithm.upper()} digest (explicit scheme only)",
            "<hex digits>", None, check, make)
    return out


_SCHEMES = _build()
#: identify's order: most specific first (Django's "bcrypt$$2" before "$2",
#: "{CRYPT}$6$" before "$6$" cannot clash since prefixes differ).
_IDENTIFY_ORDER = tuple(s for s in _SCHEMES.values() if s.pattern is not None)


def _identify(stored: str) -> _Scheme | None:
    for scheme in _IDENTIFY_ORDER:
        if scheme.pattern.match(stored):  # type: ignore[union-attr]
            return scheme if scheme.valid(stored) else None
    return None


def _scheme(name: Any) -> _Scheme:
    if type(name) is not str:
        raise PasswordError("scheme must be a str")
    try:
        return _SCHEMES[name]
    except KeyError:
        raise UnknownScheme(f"unknown scheme {name!r}; passwords.schemes() lists "
                            f"{len(_SCHEMES)} supported ones") from None


# --------------------------------------------------------------------------- public functions


def verify(password: Any, stored_hash: Any, scheme: Any = None) -> bool:
    """True when ``password`` matches ``stored_hash``; False for a wrong password
    and for a hash that is malformed, truncated or of no supported scheme."""
    data = _password(password)
    stored = _stored(stored_hash)
    if stored is None:
        return False
    found = _scheme(scheme) if scheme is not None else _identify(stored)
    if found is None:
        return False
    return found.verify(data, stored, _caps())


def identify(stored_hash: Any) -> str | None:
    """The scheme name of ``stored_hash``, or None (bare digests: always None)."""
    stored = _stored(stored_hash)
    if stored is None:
        return None
    found = _identify(stored)
    return found.name if found is not None else None


def schemes() -> list[str]:
    """Every supported scheme name, sorted."""
    return sorted(_SCHEMES)


def hash_password(password: Any, scheme: Any = "argon2id", rounds: Any = None) -> str:
    """A new hash of ``password`` in ``scheme``; ``rounds`` is the scheme's work
    factor (bcrypt cost, PBKDF2/sha-crypt rounds, argon2 time cost, phpass log2)."""
    data = _password(password)
    found = _scheme(scheme)
    if rounds is not None and type(rounds) is not int:
        raise PasswordError("rounds must be an int")
    if found.hash is None:
        raise UnknownScheme(f"{found.name} can be verified but not written; use "
                            f"'argon2id', 'bcrypt' or 'django_pbkdf2_sha256'")
    return found.hash(data, rounds, _caps())


def _decode_digest(digest: Any, encoding: Any) -> bytes:
    if type(digest) is bytes:
        return digest
    if type(digest) is not str:
        raise PasswordError("digest must be a str")
    try:
        if encoding == "hex":
            return bytes.fromhex(digest.strip())
        if encoding == "base64":
            return _base64.b64decode(digest.strip(), validate=True)
    except ValueError:
        return b""  # malformed: never equal to a real digest
    raise PasswordError("encoding must be 'hex' or 'base64'")


def _algorithm(name: Any) -> str:
    if name not in _DIGESTS:
        raise PasswordError(f"algorithm must be one of {', '.join(_DIGESTS)}")
    return name


def _salt(salt: Any) -> bytes:
    if type(salt) is bytes:
        return salt
    if type(salt) is not str:
        raise PasswordError("salt must be a str or bytes")
    return _password(salt)


def verify_salted(password: Any, digest: Any, salt: Any, algorithm: Any = "sha256",
                  salt_position: Any = "suffix", encoding: Any = "hex") -> bool:
    """True when ``algorithm(password + salt)`` (``salt_position="suffix"``) or
    ``algorithm(salt + password)`` (``"prefix"``) equals ``digest``."""
    data, salt_b = _password(password), _salt(salt)
    if salt_position == "suffix":
        material = data + salt_b
    elif salt_position == "prefix":
        material = salt_b + data
    else:
        raise PasswordError("salt_position must be 'prefix' or 'suffix'")
    expected = _decode_digest(digest, encoding)
    return _hmac.compare_digest(_hashlib.new(_algorithm(algorithm), material).digest(), expected)


def verify_hmac(password: Any, digest: Any, key: Any, algorithm: Any = "sha256",
                encoding: Any = "hex") -> bool:
    """True when ``HMAC(key, password)`` with ``algorithm`` equals ``digest``."""
    data, key_b = _password(password), _salt(key)
    expected = _decode_digest(digest, encoding)
    computed = _hmac.new(key_b, data, _algorithm(algorithm)).digest()
    return _hmac.compare_digest(computed, expected)


class _PasswordsFacade:
    """What ``import passwords`` gives a script: plain functions and error classes."""

    __slots__ = ()

    PasswordError = PasswordError
    UnknownScheme = UnknownScheme
    HashTooExpensive = HashTooExpensive

    def verify(self, password: str, stored_hash: str, scheme: str | None = None) -> bool:
        """True when ``password`` matches ``stored_hash`` (scheme recognised from the hash)."""
        return verify(password, stored_hash, scheme)

    def identify(self, stored_hash: str) -> str | None:
        """The scheme of ``stored_hash``, or None when unrecognised."""
        return identify(stored_hash)

    def schemes(self) -> list[str]:
        """Every supported scheme name."""
        return schemes()

    def hash(self, password: str, scheme: str = "argon2id", rounds: int | None = None) -> str:
        """A new hash of ``password`` (default argon2id, m=64 MiB t=3 p=4)."""
        return hash_password(password, scheme, rounds)

    def verify_salted(self, password: str, digest: str, salt: str, algorithm: str = "sha256",
                      salt_position: str = "suffix", encoding: str = "hex") -> bool:
        """True when algorithm(password+salt) (or salt+password) equals ``digest``."""
        return verify_salted(password, digest, salt, algorithm, salt_position, encoding)

    def verify_hmac(self, password: str, digest: str, key: str, algorithm: str = "sha256",
                    encoding: str = "hex") -> bool:
        """True when HMAC(key, password) equals ``digest``."""
        return verify_hmac(password, digest, key, algorithm, encoding)

    def __repr__(self) -> str:
        return "<passwords facade: verify, identify, schemes, hash, verify_salted, verify_hmac>"


def _warm() -> None:
    """Load every backend now (in the zygote): libpass picks its backends and
    imports helpers lazily on first use, which a confined worker must not do."""
    for scheme in _SCHEMES.values():
        if scheme.hash is None:
            continue
        cheap = {"bcrypt": 4, "django_bcrypt_sha256": 4, "phpass": 7, "sha256_crypt": 1000,
                 "sha512_crypt": 1000, "ldap_sha256_crypt": 1000, "ldap_sha512_crypt": 1000,
                 "pbkdf2_sha1": 1000, "pbkdf2_sha256": 1000, "pbkdf2_sha512": 1000,
                 "django_pbkdf2_sha256": 1000, "django_pbkdf2_sha1": 1000, "scrypt": 4}.get(scheme.name)
        if scheme.name.startswith("argon2"):
            continue  # argon2 is plain CFFI, nothing lazy; 64 MiB is not worth it here
        made = scheme.hash(b"warm", cheap, DEFAULT_CAPS)
        scheme.verify(b"warm", made, DEFAULT_CAPS)
    _django_scrypt_check(b"warm", "scrypt$2$c2FsdA$1$1$AAAA", DEFAULT_CAPS)


def reference_markdown() -> str:
    """The scheme table of ``docs/password-hashes.md`` (a test keeps them equal)."""
    caps = "\n".join(f"| `{key}` | {value:,} |" for key, value in DEFAULT_CAPS.items())
    rows = "\n".join(
        f"| `{s.name}` | {s.summary} | `{s.example}` | {'yes' if s.pattern else 'explicit scheme only'} "
        f"| {'yes' if s.hash else 'no'} |"
        for s in sorted(_SCHEMES.values(), key=lambda s: s.name))
    return ("| scheme | what | stored value looks like | recognised | `hash()` |\n"
            "|---|---|---|---|---|\n" + rows + "\n\n"
            "Per-tenant caps (`[limits]` in tenant.toml; defaults):\n\n"
            "| limit | default |\n|---|---|\n" + caps + "\n")


_warm()
passwords = _PasswordsFacade()

if __name__ == "__main__":  # python -m scriptvisor.sandbox.facades.passwords > table
    print(reference_markdown(), end="")
