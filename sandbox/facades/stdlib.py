"""Curated standard-library facades: what ``import json`` & co. give a script.

Each facade is a ``SimpleNamespace`` of selected functions, classes and
constants.  Rules (checked by tests/security/test_reachability.py):

* Never a module, and nothing whose public attributes reach one.  Plain
  functions defined here are fine: their ``__globals__`` is a ``_``-name the
  guard refuses.  C functions are fine: only ``__self__`` (a ``_``-name)
  leads to their module.
* Host objects with Python-level methods whose arguments could be abused
  (regex patterns and matches, HMAC objects) are wrapped in small classes
  with ``__slots__`` holding the real object under a ``_``-name.
* No mutable host containers (a script could change what other code sees).
* Inputs are coerced to exact builtin types and size-capped before they
  reach C code that cannot be interrupted.

``time`` is read-only clock functions, as the contract says: no ``sleep``.
A script that waits only holds its worker idle against its own deadline;
waiting for something belongs to the facade doing the I/O (database connect
and statement timeouts come from the invocation's remaining time).
"""

from __future__ import annotations

import base64 as _base64
import datetime as _datetime
import hashlib as _hashlib
import hmac as _hmac
import json as _json
import math as _math
import secrets as _secrets
import time as _time
import uuid as _uuid
from types import SimpleNamespace
from typing import Any, Callable

import regex as _regex

from scriptvisor.sandbox import context as _context
from scriptvisor.sandbox import guards as _guards
from scriptvisor.sandbox import policy as _policy
from scriptvisor.sandbox.facades import passwords as _passwords

__all__ = ["base64", "datetime", "hashlib", "hmac", "json", "log", "math", "re",
           "secrets", "time", "uuid"]


def _remaining(default: float) -> float:
    try:
        return _context.current().remaining()
    except RuntimeError:  # not inside an invocation (module import in tests)
        return default


def _text(value: Any, what: str, limit: int | None = None) -> str:
    if type(value) is not str:
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a string, not {type(value).__name__}")
        value = str.__str__(value)
    if limit is not None and len(value) > limit:
        raise ValueError(f"{what} is {len(value)} characters; the limit is {limit}")
    return value


def _bytes(value: Any, what: str, limit: int) -> bytes:
    """``value`` (bytes or bytearray) as exact ``bytes`` of at most ``limit`` bytes."""
    value = bytes(value)
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} bytes; the limit is {limit}")
    return value


def _binary(value: Any, what: str) -> bytes:
    if isinstance(value, str):
        value = str.__str__(value).encode("utf-8")
    elif not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")
    return _bytes(value, what, _policy.BINARY_MAX_BYTES)


# --------------------------------------------------------------------------- json


def _json_dumps(obj: Any, *, indent: Any = None, sort_keys: bool = False,
                separators: Any = None, ensure_ascii: bool = True,
                default: Callable[[Any], Any] | None = None) -> str:
    def fallback(value: Any) -> Any:
        if isinstance(value, _guards.ReadOnlyMapping):
            return _guards.thaw(value)
        if default is not None:
            return default(value)
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    text = _json.dumps(obj, indent=indent, sort_keys=bool(sort_keys), separators=separators,
                       ensure_ascii=bool(ensure_ascii), default=fallback)
    if len(text) > _policy.JSON_MAX_CHARS:
        raise ValueError(f"JSON text is {len(text)} characters; the limit is {_policy.JSON_MAX_CHARS}")
    return text


def _json_loads(text: Any) -> Any:
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    return _json.loads(_text(text, "JSON text", _policy.JSON_MAX_CHARS))


json = SimpleNamespace(dumps=_json_dumps, loads=_json_loads, JSONDecodeError=_json.JSONDecodeError)

# --------------------------------------------------------------------------- datetime

# datetime.strptime imports _strptime on first use (3.11/3.12) or on every
# call (3.13, through the caller's __import__: guards.HOST_LAZY_IMPORTS): do
# the import now, in the zygote, not after confinement.
_datetime.datetime.strptime("2000", "%Y")

datetime = SimpleNamespace(
    date=_datetime.date, datetime=_datetime.datetime, time=_datetime.time,
    timedelta=_datetime.timedelta, timezone=_datetime.timezone,
    MINYEAR=_datetime.MINYEAR, MAXYEAR=_datetime.MAXYEAR,
)

# --------------------------------------------------------------------------- time


def _strftime(fmt: Any, seconds: Any = None) -> str:
    fmt = _text(fmt, "format", _policy.STRFTIME_MAX_FORMAT)
    return _time.strftime(fmt, _gmtime(seconds))


def _gmtime(seconds: Any = None) -> Any:
    return _time.gmtime(None if seconds is None else float(seconds))


def _remaining_public() -> float:
    """Seconds left before this invocation's hard deadline."""
    return _remaining(float("inf"))


time = SimpleNamespace(
    time=_time.time, time_ns=_time.time_ns, monotonic=_time.monotonic,
    perf_counter=_time.perf_counter, gmtime=_gmtime, strftime=_strftime,
    remaining=_remaining_public,
)

# --------------------------------------------------------------------------- math


def _fsum(iterable: Any) -> float:
    return _math.fsum(_guards.guarded_getiter(iterable))


def _prod(iterable: Any, *, start: Any = 1) -> Any:
    return _math.prod(_guards.guarded_getiter(iterable), start=start)


_MATH_FUNCTIONS = (
    "acos acosh asin asinh atan atan2 atanh ceil comb copysign cos cosh degrees dist erf erfc "
    "exp expm1 fabs factorial floor fmod frexp gamma gcd hypot isclose isfinite isinf isnan "
    "isqrt lcm ldexp lgamma log log10 log1p log2 modf perm pow radians remainder sin sinh "
    "sqrt tan tanh trunc"
).split()

math = SimpleNamespace(
    **{name: getattr(_math, name) for name in _MATH_FUNCTIONS},
    fsum=_fsum, prod=_prod, pi=_math.pi, e=_math.e, tau=_math.tau, inf=_math.inf, nan=_math.nan,
)

# --------------------------------------------------------------------------- re


def _match_timeout() -> float:
    left = _remaining(_policy.REGEX_DEFAULT_TIMEOUT)
    margin = max(_policy.REGEX_DEADLINE_MARGIN, left * _policy.REGEX_DEADLINE_FRACTION)
    return max(_policy.REGEX_MIN_TIMEOUT, (left - margin) * _policy.REGEX_OVERSHOOT_FACTOR)


def _subject(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return _bytes(value, "regex input", _policy.REGEX_MAX_INPUT)
    return _text(value, "regex input", _policy.REGEX_MAX_INPUT)


class Match:
    """A regex match: groups and positions; no way back to the compiled pattern."""

    __slots__ = ("_m",)

    def __init__(self, m: Any) -> None:
        self._m = m

    def group(self, *groups: Any) -> Any:
        return self._m.group(*groups)

    def groups(self, default: Any = None) -> tuple[Any, ...]:
        return self._m.groups(default)

    def groupdict(self, default: Any = None) -> dict[str, Any]:
        return self._m.groupdict(default)

    def start(self, group: Any = 0) -> int:
        return self._m.start(group)

    def end(self, group: Any = 0) -> int:
        return self._m.end(group)

    def span(self, group: Any = 0) -> tuple[int, int]:
        return self._m.span(group)

    def __getitem__(self, group: Any) -> Any:
        return self._m[group]

    def __repr__(self) -> str:
        return f"<Match span={self._m.span()!r} match={self._m.group(0)!r}>"


def _wrap(m: Any) -> Match | None:
    return None if m is None else Match(m)


class Pattern:
    """A compiled regular expression whose every search carries a timeout."""

    __slots__ = ("_p",)

    def __init__(self, pattern: Any, flags: int = 0) -> None:
        if isinstance(pattern, Pattern):
            self._p = pattern._p
            return
        if isinstance(pattern, (bytes, bytearray)):
            pattern = _bytes(pattern, "regex pattern", _policy.REGEX_MAX_PATTERN)
        else:
            pattern = _text(pattern, "regex pattern", _policy.REGEX_MAX_PATTERN)
        self._p = _regex.compile(pattern, int(flags) | _regex.VERSION0)

    @property
    def pattern(self) -> Any:
        return self._p.pattern

    @property
    def flags(self) -> int:
        return self._p.flags

    @property
    def groups(self) -> int:
        return self._p.groups

    def match(self, string: Any, pos: int = 0) -> Match | None:
        return _wrap(self._p.match(_subject(string), int(pos), timeout=_match_timeout()))

    def fullmatch(self, string: Any, pos: int = 0) -> Match | None:
        return _wrap(self._p.fullmatch(_subject(string), int(pos), timeout=_match_timeout()))

    def search(self, string: Any, pos: int = 0) -> Match | None:
        return _wrap(self._p.search(_subject(string), int(pos), timeout=_match_timeout()))

    def findall(self, string: Any) -> list[Any]:
        return self._p.findall(_subject(string), timeout=_match_timeout())

    def finditer(self, string: Any) -> list[Match]:
        # a list, not a lazy iterator: the timeout covers the whole scan now
        return [Match(m) for m in self._p.finditer(_subject(string), timeout=_match_timeout())]

    def split(self, string: Any, maxsplit: int = 0) -> list[Any]:
        return self._p.split(_subject(string), int(maxsplit), timeout=_match_timeout())

    def sub(self, repl: Any, string: Any, count: int = 0) -> Any:
        return self._p.sub(_replacement(repl), _subject(string), int(count), timeout=_match_timeout())

    def subn(self, repl: Any, string: Any, count: int = 0) -> tuple[Any, int]:
        return self._p.subn(_replacement(repl), _subject(string), int(count), timeout=_match_timeout())

    def __repr__(self) -> str:
        return f"re.compile({self._p.pattern!r})"


def _replacement(repl: Any) -> Any:
    if isinstance(repl, (str, bytes, bytearray)):
        return repl if type(repl) in (str, bytes) else (str.__str__(repl) if isinstance(repl, str) else bytes(repl))
    if callable(repl):
        return lambda m: repl(Match(m))  # the script's function never sees the raw match
    raise TypeError("replacement must be a string or a function")


def _re_function(method: str) -> Callable[..., Any]:
    def call(pattern: Any, *args: Any, flags: int = 0, **kwargs: Any) -> Any:
        return getattr(Pattern(pattern, flags), method)(*args, **kwargs)

    call.__name__ = call.__qualname__ = method
    return call


def _escape(text: Any) -> Any:
    if isinstance(text, (bytes, bytearray)):
        return _regex.escape(bytes(text))
    return _regex.escape(_text(text, "text", _policy.REGEX_MAX_INPUT))


re = SimpleNamespace(
    compile=Pattern, escape=_escape,
    **{name: _re_function(name) for name in
       ("match", "fullmatch", "search", "findall", "finditer", "split", "sub", "subn")},
    IGNORECASE=int(_regex.IGNORECASE), I=int(_regex.IGNORECASE),
    MULTILINE=int(_regex.MULTILINE), M=int(_regex.MULTILINE),
    DOTALL=int(_regex.DOTALL), S=int(_regex.DOTALL),
    VERBOSE=int(_regex.VERBOSE), X=int(_regex.VERBOSE),
    ASCII=int(_regex.ASCII), A=int(_regex.ASCII),
    UNICODE=int(_regex.UNICODE), U=int(_regex.UNICODE),
    error=_regex.error, Pattern=Pattern, Match=Match,
)

# --------------------------------------------------------------------------- hashlib / hmac

_DIGESTS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512", "blake2b", "blake2s",
            "sha3_256", "sha3_512")


def _hash_constructor(name: str) -> Callable[..., Any]:
    real = getattr(_hashlib, name)

    def new(data: Any = b"") -> Any:
        return real(_binary(data, "data"))  # C hash objects: update/digest/hexdigest/copy

    new.__name__ = new.__qualname__ = name
    return new


def _digest_name(digestmod: Any) -> str:
    name = _text(digestmod, "digest name").lower().replace("-", "_")
    if name not in _DIGESTS:
        raise ValueError(f"unsupported digest {digestmod!r}; use one of {', '.join(_DIGESTS)}")
    return name


def _pbkdf2_hmac(hash_name: Any, password: Any, salt: Any, iterations: Any, dklen: Any = None) -> bytes:
    """``hashlib.pbkdf2_hmac`` under the tenant's PBKDF2 cap (``limits.hash_pbkdf2_max_rounds``)
    and the invocation's remaining time, checked before any work, as ``passwords.verify`` does."""
    iterations = int(iterations)
    if not 1 <= iterations <= _policy.PBKDF2_MAX_ITERATIONS:
        raise ValueError(f"iterations must be between 1 and {_policy.PBKDF2_MAX_ITERATIONS}")
    name = _digest_name(hash_name)
    size = getattr(_hashlib, name)().digest_size
    dklen = None if dklen is None else int(dklen)
    if dklen is not None and dklen < 1:
        raise ValueError("dklen must be at least 1")
    _passwords.check_pbkdf2_cost(iterations, -(-(dklen or size) // size))
    return _hashlib.pbkdf2_hmac(name, _binary(password, "password"), _binary(salt, "salt"), iterations, dklen)


def _hash_new(name: Any, data: Any = b"") -> Any:
    """``hashlib.new(name, data)`` over the same allowlist as the named constructors."""
    return getattr(_hashlib, _digest_name(name))(_binary(data, "data"))


def _scrypt(password: Any, *, salt: Any, n: Any, r: Any, p: Any, dklen: Any = 64) -> bytes:
    """``hashlib.scrypt`` under the tenant's scrypt caps (``limits.hash_scrypt_*``),
    checked before any work, as the ``passwords`` facade checks stored hashes."""
    for value, what in ((n, "n"), (r, "r"), (p, "p"), (dklen, "dklen")):
        if type(value) is not int:
            raise TypeError(f"{what} must be an int")
    if not 1 <= dklen <= 1024:
        raise ValueError("dklen must be between 1 and 1024")
    _passwords.check_scrypt_cost(n, r, p)
    return _passwords.scrypt_derive(_binary(password, "password"), _binary(salt, "salt"), n, r, p, dklen)


hashlib = SimpleNamespace(
    **{name: _hash_constructor(name) for name in _DIGESTS},
    new=_hash_new,
    pbkdf2_hmac=_pbkdf2_hmac,
    scrypt=_scrypt,
    algorithms_available=tuple(_DIGESTS),
)


class Hmac:
    """An HMAC in progress (the host's ``hmac.HMAC`` stays behind a ``_``-name)."""

    __slots__ = ("_h",)

    def __init__(self, h: Any) -> None:
        self._h = h

    @property
    def name(self) -> str:
        return self._h.name

    @property
    def digest_size(self) -> int:
        return self._h.digest_size

    def update(self, data: Any) -> None:
        self._h.update(_binary(data, "data"))

    def digest(self) -> bytes:
        return self._h.digest()

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def copy(self) -> "Hmac":
        return Hmac(self._h.copy())


def _hmac_new(key: Any, msg: Any = None, digestmod: Any = "sha256") -> Hmac:
    return Hmac(_hmac.new(_binary(key, "key"), None if msg is None else _binary(msg, "msg"),
                          _digest_name(digestmod)))


def _hmac_digest(key: Any, msg: Any, digest: Any) -> bytes:
    return _hmac.digest(_binary(key, "key"), _binary(msg, "msg"), _digest_name(digest))


def _compare_digest(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return _hmac.compare_digest(str.__str__(a).encode("utf-8"), str.__str__(b).encode("utf-8"))
    return _hmac.compare_digest(_binary(a, "a"), _binary(b, "b"))


hmac = SimpleNamespace(new=_hmac_new, digest=_hmac_digest, compare_digest=_compare_digest)

# --------------------------------------------------------------------------- secrets


def _nbytes(nbytes: Any) -> int:
    nbytes = 32 if nbytes is None else int(nbytes)
    if not 0 <= nbytes <= _policy.TOKEN_MAX_BYTES:
        raise ValueError(f"token size must be between 0 and {_policy.TOKEN_MAX_BYTES} bytes")
    return nbytes


def _choice(sequence: Any) -> Any:
    items = tuple(_guards.guarded_getiter(sequence))
    if not items:
        raise IndexError("cannot choose from an empty sequence")
    return items[_secrets.randbelow(len(items))]


secrets = SimpleNamespace(
    token_hex=lambda nbytes=None: _secrets.token_hex(_nbytes(nbytes)),
    token_urlsafe=lambda nbytes=None: _secrets.token_urlsafe(_nbytes(nbytes)),
    token_bytes=lambda nbytes=None: _secrets.token_bytes(_nbytes(nbytes)),
    randbelow=lambda n: _secrets.randbelow(int(n)),
    compare_digest=_compare_digest,
    choice=_choice,
)

# --------------------------------------------------------------------------- uuid


def _uuid5(namespace: Any, name: Any) -> _uuid.UUID:
    if not isinstance(namespace, _uuid.UUID):
        raise TypeError("namespace must be a UUID (e.g. uuid.NAMESPACE_DNS)")
    return _uuid.uuid5(namespace, _text(name, "name", 65536))


def _uuid3(namespace: Any, name: Any) -> _uuid.UUID:
    if not isinstance(namespace, _uuid.UUID):
        raise TypeError("namespace must be a UUID (e.g. uuid.NAMESPACE_DNS)")
    return _uuid.uuid3(namespace, _text(name, "name", 65536))


uuid = SimpleNamespace(
    uuid4=_uuid.uuid4, uuid5=_uuid5, uuid3=_uuid3, UUID=_uuid.UUID,
    NAMESPACE_DNS=_uuid.NAMESPACE_DNS, NAMESPACE_URL=_uuid.NAMESPACE_URL,
    NAMESPACE_OID=_uuid.NAMESPACE_OID, NAMESPACE_X500=_uuid.NAMESPACE_X500,
)

# --------------------------------------------------------------------------- base64


def _codec(fn: Callable[[bytes], bytes]) -> Callable[[Any], bytes]:
    def code(data: Any) -> bytes:
        return fn(_binary(data, "data"))

    code.__name__ = code.__qualname__ = fn.__name__
    return code


base64 = SimpleNamespace(
    b64encode=_codec(_base64.b64encode), b64decode=_codec(_base64.b64decode),
    urlsafe_b64encode=_codec(_base64.urlsafe_b64encode),
    urlsafe_b64decode=_codec(_base64.urlsafe_b64decode),
    b32encode=_codec(_base64.b32encode), b32decode=_codec(_base64.b32decode),
    b16encode=_codec(_base64.b16encode), b16decode=_codec(_base64.b16decode),
)

# --------------------------------------------------------------------------- log


def _logger(level: str) -> Callable[..., None]:
    def write(*parts: Any) -> None:
        invocation = _context.require_current("log")  # no invocation: no caller to log to
        message = " ".join(str(part) for part in parts)
        invocation.log(f"[{level}] {message}")

    write.__name__ = write.__qualname__ = level.lower()
    return write


log = SimpleNamespace(debug=_logger("DEBUG"), info=_logger("INFO"),
                      warning=_logger("WARNING"), error=_logger("ERROR"))

# --------------------------------------------------------------------------- one-line docs
# The facade reference (docs/facades.md, `scriptvisor facades`) is generated
# from these docstrings; the wrappers above are built by small factories or
# lambdas, so their lines are set here in one place.


def _describe(fn: Any, text: str) -> None:
    getattr(fn, "fget", fn).__doc__ = text


for _fn, _text_line in [
    (_json_dumps, "JSON text of a value (dicts, lists, strings, numbers, booleans, None); at most "
                  f"{_policy.JSON_MAX_CHARS} characters."),
    (_json_loads, f"The value of a JSON text (str or UTF-8 bytes; at most {_policy.JSON_MAX_CHARS} characters)."),
    (_gmtime, "UTC struct_time of a Unix time (default: now)."),
    (_strftime, "Format a Unix time (default: now) as UTC text with a strftime format."),
    (_fsum, "Accurate floating-point sum of an iterable."),
    (_prod, "Product of an iterable's numbers (times `start`)."),
    (_escape, "Escape every regex metacharacter in a string or bytes."),
    (_pbkdf2_hmac, "PBKDF2 key derivation with HMAC-`hash_name` under the tenant's PBKDF2 cap "
                   "(`limits.hash_pbkdf2_max_rounds`, iterations x output blocks), checked before any work."),
    (_hmac_new, "Start an HMAC of `msg` with `key` (digestmod: a hashlib name, default sha256)."),
    (_hmac_digest, "HMAC of `msg` with `key` in one call (digest: a hashlib name)."),
    (_compare_digest, "Constant-time equality of two str or two bytes values (for secrets and MACs)."),
    (_choice, "A random element of a non-empty sequence (CSPRNG)."),
    (_uuid3, "Name-based UUID (MD5) in a namespace such as uuid.NAMESPACE_DNS."),
    (_uuid5, "Name-based UUID (SHA-1) in a namespace such as uuid.NAMESPACE_DNS."),
    (secrets.token_hex, "Random text of 2*nbytes hex digits (default 32 bytes)."),
    (secrets.token_urlsafe, "Random URL-safe text from nbytes random bytes (default 32)."),
    (secrets.token_bytes, "nbytes random bytes (default 32)."),
    (secrets.randbelow, "A random int in [0, n)."),
    (Match.group, "The text of one or more groups (0: the whole match)."),
    (Match.groups, "All groups as a tuple (`default` for groups that did not take part)."),
    (Match.groupdict, "Named groups as a dict."),
    (Match.start, "Start index of a group."),
    (Match.end, "End index of a group."),
    (Match.span, "(start, end) of a group."),
    (Pattern.pattern, "The pattern text."),
    (Pattern.flags, "The flags it was compiled with."),
    (Pattern.groups, "Number of capturing groups."),
    (Pattern.match, "A Match at the start of the string (from pos), or None."),
    (Pattern.fullmatch, "A Match when the whole string matches, or None."),
    (Pattern.search, "The first Match anywhere in the string, or None."),
    (Pattern.findall, "Every non-overlapping match (strings, or tuples of groups)."),
    (Pattern.finditer, "Every non-overlapping match as a list of Match objects."),
    (Pattern.split, "Split the string at each match."),
    (Pattern.sub, "The string with matches replaced by `repl` (text or a function of a Match)."),
    (Pattern.subn, "Like sub, plus the number of replacements."),
    (Hmac.name, "The HMAC's algorithm name."),
    (Hmac.digest_size, "Size of the MAC in bytes."),
    (Hmac.update, "Feed more data (bytes or str)."),
    (Hmac.digest, "The MAC so far, as bytes."),
    (Hmac.hexdigest, "The MAC so far, as hex text."),
    (Hmac.copy, "An independent copy of this HMAC."),
]:
    _describe(_fn, _text_line)

for _name in ("match", "fullmatch", "search", "findall", "finditer", "split", "sub", "subn"):
    _describe(getattr(re, _name), f"`re.compile(pattern, flags).{_name}(...)` in one call: "
              + (getattr(Pattern, _name).__doc__ or ""))
for _name in _DIGESTS:
    _describe(getattr(hashlib, _name), f"A new {_name} hash of `data` (bytes or str): update(), digest(), "
              "hexdigest(), copy().")
for _name, _fn in vars(base64).items():
    _describe(_fn, ("Decode " if "decode" in _name else "Encode ") + "bytes or str "
              + ("from " if "decode" in _name else "to ") + _name.replace("encode", "").replace("decode", "")
              + " (result: bytes).")
for _name, _fn in vars(log).items():
    _describe(_fn, f"Add a `[{_name.upper()}]` line (the arguments joined by spaces) to the invocation's logs.")
del _fn, _text_line, _name
