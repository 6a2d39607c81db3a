"""The error classes every action script can use without importing them.

They mirror the hosted anchor's ``WrongUsernameOrPasswordError``,
``ValidationError`` and ``UnauthorizedError`` (see action-scripts.md).  They
are ordinary ``Exception`` subclasses so a script may ``raise`` them or hand
them to ``callback(err)``; either way ``describe()`` turns one into the
JSON-safe fields of a ``script_error``.

Instances carry only JSON-friendly public attributes (``message``, ``code``,
``email_or_id``): nothing here refers to host objects, so the injected
classes are safe to expose (checked by tests/security/test_reachability.py).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "INJECTED_ERRORS",
    "UnauthorizedError",
    "ValidationError",
    "WrongUsernameOrPasswordError",
    "describe",
    "json_scalar",
]

#: Longest message kept in a structured error (characters). A script can put
#: megabytes into an exception; the caller only needs the start of it.
MESSAGE_CHARS = 8192


def json_scalar(value: Any) -> Any:
    """``value`` itself when it is a JSON scalar of an exact builtin type, else ``str(value)``."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    return _text(value)


def _text(value: Any) -> str:
    """``str(value)`` that never raises and never returns a huge string."""
    try:
        text = str(value)
    except Exception as exc:  # a facade exception with a broken __str__
        text = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
    if type(text) is not str:  # a str subclass: keep only its characters
        text = str.__str__(text)
    if len(text) > MESSAGE_CHARS:
        text = text[:MESSAGE_CHARS] + f"... [{len(text) - MESSAGE_CHARS} characters cut]"
    return text


class WrongUsernameOrPasswordError(Exception):
    """Bad credentials. A truthy ``email_or_id`` means "the user exists, wrong password"."""

    def __init__(self, email_or_id: Any = None, message: Any = None) -> None:
        self.email_or_id = email_or_id
        self.message = "Wrong email or password." if message is None else message
        super().__init__(self.message)


class ValidationError(Exception):
    """A refused operation with a machine-readable ``code`` (e.g. ``"user_exists"``)."""

    def __init__(self, code: Any = None, message: Any = None) -> None:
        self.code = code
        self.message = code if message is None else message
        super().__init__(self.message)


class UnauthorizedError(Exception):
    """A refusal whose ``message`` is meant for the end user."""

    def __init__(self, message: Any = None) -> None:
        self.message = "Unauthorized." if message is None else message
        super().__init__(self.message)


#: Name -> class, exactly as injected into every script's globals.
INJECTED_ERRORS: dict[str, type[Exception]] = {
    "WrongUsernameOrPasswordError": WrongUsernameOrPasswordError,
    "ValidationError": ValidationError,
    "UnauthorizedError": UnauthorizedError,
}


def describe(err: Any) -> dict[str, Any]:
    """``name``, ``message`` and the class-specific fields of an error a script reported.

    ``err`` may be anything a script passed to ``callback``: an exception
    (its class name and ``str``), or a plain value such as a string, which
    the hosted anchor also accepts and which becomes a generic ``Error``.
    """
    if not isinstance(err, BaseException):
        return {"name": "Error", "message": _text(err)}
    out: dict[str, Any] = {"name": _text(type(err).__name__), "message": _text(err)}
    if isinstance(err, ValidationError):
        out["validation_code"] = json_scalar(getattr(err, "code", None))
    if isinstance(err, WrongUsernameOrPasswordError):
        email_or_id = getattr(err, "email_or_id", None)
        out["email_or_id"] = json_scalar(email_or_id) if email_or_id else None
        out["user_known"] = bool(email_or_id)
    return out
