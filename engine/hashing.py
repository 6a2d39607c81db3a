"""Password hashes the platform itself creates and checks (the migration user store).

- New hashes are argon2id (argon2-cffi).  argon2 reads the whole password:
  unlike bcrypt, nothing after byte 72 is silently dropped.
- Hashes the store already holds from before (bcrypt ``$2a$/$2b$/$2y$``) are
  still verified; ``needs_rehash`` says so, and the login that verified one
  replaces it with an argon2id hash of the same password.  One exception: a
  password longer than 72 bytes matched against a bcrypt hash only ever
  matched on its first 72 bytes, so it is not rehashed (that would pin an
  arbitrary tail as "the" password); such a user keeps the bcrypt hash until a
  password change.
- A password is encoded as UTF-8, strictly: a string that cannot be encoded
  (a lone surrogate) is ``PasswordEncodingError``, which the connection layer
  answers with ``bad_request`` before any script or hash runs.
- ``dummy_verify`` checks a password against a fixed hash of the same
  parameters, so a login that has no hash to check (unknown user) costs what a
  wrong password costs.

Default parameters: OWASP's first argon2id configuration (m=46 MiB, t=1, p=1),
about as slow as bcrypt cost 10 (what the templates use for legacy rows), so a
migrated user's wrong password and a not-yet-migrated one cost about the same.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import argon2
import bcrypt as _bcrypt

__all__ = ["DEFAULT_HASHER", "FAST_HASHER", "Hasher", "PasswordEncodingError", "password_bytes"]

#: bcrypt uses only this many bytes of a password.
BCRYPT_MAX_BYTES = 72
#: bcrypt work factors above this are refused (a crafted row must not cost minutes).
BCRYPT_MAX_COST = 16


class PasswordEncodingError(ValueError):
    """The password is not a string that UTF-8 can encode (e.g. a lone surrogate)."""


def password_bytes(password: str) -> bytes:
    if not isinstance(password, str):
        raise PasswordEncodingError("password must be a string")
    try:
        return password.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PasswordEncodingError(f"password cannot be encoded as UTF-8 ({exc.reason})") from None


def is_bcrypt(stored: str) -> bool:
    return stored.startswith(("$2a$", "$2b$", "$2y$"))


@dataclass(frozen=True)
class Hasher:
    """argon2id parameters; ``hash``/``verify``/``needs_rehash``/``dummy_verify``."""

    time_cost: int = 1
    memory_cost: int = 47104  # KiB
    parallelism: int = 1

    @functools.cached_property
    def _ph(self) -> argon2.PasswordHasher:
        return argon2.PasswordHasher(time_cost=self.time_cost, memory_cost=self.memory_cost,
                                     parallelism=self.parallelism, type=argon2.Type.ID)

    @functools.cached_property
    def _dummy(self) -> str:
        return self._ph.hash("scriptvisor dummy password, never a real one")

    def hash(self, password: str) -> str:
        return self._ph.hash(password_bytes(password))

    def verify(self, stored: str | None, password: str) -> bool:
        """True when ``password`` matches ``stored`` (argon2 or legacy bcrypt); False for a malformed hash."""
        data = password_bytes(password)
        if not stored:
            return False
        if is_bcrypt(stored):
            try:
                cost = int(stored[4:6])
            except ValueError:
                return False
            if cost > BCRYPT_MAX_COST:
                return False
            try:
                return bool(_bcrypt.checkpw(data[:BCRYPT_MAX_BYTES], stored.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                return False
        try:
            return bool(self._ph.verify(stored, data))
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    def needs_rehash(self, stored: str, password: str) -> bool:
        if is_bcrypt(stored):
            return len(password_bytes(password)) <= BCRYPT_MAX_BYTES
        try:
            return self._ph.check_needs_rehash(stored)
        except argon2.exceptions.InvalidHashError:
            return True

    def dummy_verify(self, password: str) -> bool:
        """Cost of one verification with nothing to find; always False."""
        self.verify(self._dummy, password)
        return False


#: What the platform uses.
DEFAULT_HASHER = Hasher()
#: Cheap parameters for tests (still argon2id, still the whole password).
FAST_HASHER = Hasher(time_cost=1, memory_cost=1024, parallelism=1)
