"""Validation of what ``login`` and ``get_user`` return: the profile contract.

The hosted anchor accepts whatever a script hands back and silently creates
duplicate users when ``user_id`` is missing or unstable.  Here a broken
profile is a ``ContractViolation`` whose ``field`` names what is wrong, so the
tenant sees the mistake on the first call instead of in their user list.

Normalisation (what callers get back):
- ``id`` is accepted as an alias of ``user_id``; ``metadata`` of ``app_metadata``.
- ``user_id`` becomes a string (numbers are allowed; ``7`` and ``"7"`` are the
  same user), because the platform store and ``delete`` work with strings.
"""

from __future__ import annotations

import math
from typing import Any

from scriptvisor.engine.errors import ContractViolation

__all__ = ["MAX_USER_ID_CHARS", "check_same_user", "normalize_profile"]

#: Longest accepted user_id (it becomes part of the platform's own ids).
MAX_USER_ID_CHARS = 255
#: Deepest nesting accepted inside a profile (metadata objects).
MAX_DEPTH = 16
#: Optional profile fields that must be strings when present (None is allowed).
STRING_FIELDS = ("email", "username", "name", "nickname", "given_name", "family_name", "picture")
#: Optional profile fields that must be objects when present.
OBJECT_FIELDS = ("user_metadata", "app_metadata")


def _violation(script: str, field: str, message: str, **details: Any) -> ContractViolation:
    return ContractViolation(f"{script}: {message}", field=field, script=script, **details)


def _normal_id(script: str, field: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise _violation(script, field, f"{field} must be a string or a number, not {_kind(value)}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise _violation(script, field, f"{field} must be a string or a whole number, not {value!r}")
        return str(int(value))
    if isinstance(value, str):
        if not value.strip():
            raise _violation(script, field, f"{field} must not be empty")
        if len(value) > MAX_USER_ID_CHARS:
            raise _violation(script, field, f"{field} longer than {MAX_USER_ID_CHARS} characters")
        return value
    raise _violation(script, field, f"{field} must be a string or a number, not {_kind(value)}")


def _kind(value: Any) -> str:
    return {type(None): "null", bool: "a boolean", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__)


def _check_json(script: str, path: str, value: Any, depth: int = 0) -> None:
    """JSON types only, finite numbers, string keys, bounded depth."""
    if depth > MAX_DEPTH:
        raise _violation(script, path, f"{path} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _violation(script, path, f"{path} is {value!r}, which is not a JSON value")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(script, f"{path}[{i}]", item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _violation(script, path, f"{path} has a non-string key {key!r}")
            _check_json(script, f"{path}.{key}", item, depth + 1)
        return
    raise _violation(script, path, f"{path} is a {type(value).__name__}, which is not a JSON value")


def normalize_profile(value: Any, *, script: str) -> dict[str, Any]:
    """The validated, normalised profile, or ``ContractViolation`` naming the field."""
    if not isinstance(value, dict):
        raise _violation(script, "profile", f"expected a profile object, got {_kind(value)}")
    profile = dict(value)
    for key in profile:
        if not isinstance(key, str):
            raise _violation(script, "profile", f"profile has a non-string key {key!r}")

    if "id" in profile:
        alias = _normal_id(script, "id", profile.pop("id"))
        if "user_id" in profile and _normal_id(script, "user_id", profile["user_id"]) != alias:
            raise _violation(script, "id", "both id and user_id are set, to different values")
        profile.setdefault("user_id", alias)
    if "user_id" not in profile:
        raise _violation(script, "user_id", "the profile has no user_id (or id)")
    profile["user_id"] = _normal_id(script, "user_id", profile["user_id"])

    if "metadata" in profile:
        legacy = profile.pop("metadata")
        if "app_metadata" in profile and profile["app_metadata"] != legacy:
            raise _violation(script, "metadata", "both metadata and app_metadata are set, to different values")
        profile.setdefault("app_metadata", legacy)

    for key in STRING_FIELDS:
        if profile.get(key) is not None and not isinstance(profile[key], str):
            raise _violation(script, key, f"{key} must be a string, not {_kind(profile[key])}")
    for key in OBJECT_FIELDS:
        if key in profile and profile[key] is None:
            del profile[key]
        elif key in profile and not isinstance(profile[key], dict):
            raise _violation(script, key, f"{key} must be an object, not {_kind(profile[key])}")
    if "email_verified" in profile and not isinstance(profile["email_verified"], bool):
        raise _violation(script, "email_verified",
                         f"email_verified must be true or false, not {_kind(profile['email_verified'])}")
    for key, item in profile.items():
        _check_json(script, key, item, 1)
    return profile


def check_same_user(email: str, user_id: str, script: str, seen: tuple[str, str] | None) -> None:
    """Raise when ``seen`` (user_id, script) for this email disagrees with ``user_id``."""
    if seen is None:
        return
    seen_id, seen_script = seen
    if seen_id != user_id:
        raise _violation(
            script, "user_id",
            f"returned user_id {user_id!r} for {email!r}, but {seen_script} returned {seen_id!r} "
            "for the same email; user_id must be stable or the platform duplicates users",
            email=email, user_id=user_id, previous_user_id=seen_id, previous_script=seen_script,
        )
