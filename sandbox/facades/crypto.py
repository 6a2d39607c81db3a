"""The ``bcrypt`` facade: password hashing for action scripts.

Scripts compare plain-text passwords with the hashes stored in their legacy
databases and hash new ones on signup.  They get two functions, never the
``bcrypt`` module:

    bcrypt.hash(password, rounds=10) -> str   "$2b$10$..."
    bcrypt.check(password, hashed) -> bool    False for a malformed hash too

Why the limits:
- ``rounds`` is clamped to ``MIN_ROUNDS..MAX_ROUNDS``: below 4 bcrypt refuses,
  above 14 one hash takes seconds and eats the invocation's wall clock.
- bcrypt only ever uses the first 72 bytes of a password.  The bcrypt package
  (>= 5) raises on longer input; legacy systems silently truncated, so we
  truncate the same way to keep their hashes verifiable.
- ``$2y$`` (PHP) and ``$2a$`` hashes are accepted by ``check``.
"""

from __future__ import annotations

import re

import bcrypt as _bcrypt

__all__ = ["bcrypt", "hash_password", "check_password"]

#: bcrypt's own minimum work factor.
MIN_ROUNDS = 4
#: ~1 s per hash on a current core; more would starve the invocation deadline.
MAX_ROUNDS = 14
#: Work factor of the shipped templates and the platform user store.
DEFAULT_ROUNDS = 10
#: bcrypt ignores everything after this many bytes of password.
MAX_PASSWORD_BYTES = 72
#: Longest accepted input string (anything longer is a mistake or an attack).
MAX_INPUT_CHARS = 4096
#: Highest work factor ``check`` accepts in a stored hash. The cost is read
#: from the hash itself, so clamping ``rounds`` in ``hash`` is not enough: a
#: "$2b$31$..." hash makes checkpw run 2**31 rounds (days) in C, where no
#: deadline check runs; the worker would sit on a core until the supervisor's
#: SIGKILL. 16 (~4 s) still verifies legacy hashes made above our own maximum.
MAX_CHECK_ROUNDS = 16
_COST = re.compile(rb"^\$2[abxy]?\$(\d\d)\$")


def _password_bytes(password: object) -> bytes:
    if type(password) not in (str, bytes):
        raise TypeError("password must be a str")
    if len(password) > MAX_INPUT_CHARS:
        raise ValueError("password too long")
    data = password.encode("utf-8") if type(password) is str else password
    return data[:MAX_PASSWORD_BYTES]


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """bcrypt hash of ``password`` (str) with ``rounds`` clamped to 4..14."""
    if type(rounds) is not int:
        raise TypeError("rounds must be an int")
    rounds = min(MAX_ROUNDS, max(MIN_ROUNDS, rounds))
    hashed = _bcrypt.hashpw(_password_bytes(password), _bcrypt.gensalt(rounds))
    return hashed.decode("ascii")


def check_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches ``hashed``; False also for a malformed hash."""
    data = _password_bytes(password)
    if type(hashed) is str:
        try:
            hashed_b = hashed.encode("ascii")
        except UnicodeEncodeError:
            return False
    elif type(hashed) is bytes:
        hashed_b = hashed
    elif hashed is None:
        return False
    else:
        raise TypeError("hashed must be a str")
    cost = _COST.match(hashed_b)
    if cost is not None and int(cost.group(1)) > MAX_CHECK_ROUNDS:
        raise ValueError(f"bcrypt hash work factor {int(cost.group(1))} is above the maximum "
                         f"{MAX_CHECK_ROUNDS} this platform verifies")
    try:
        return bool(_bcrypt.checkpw(data, hashed_b))
    except ValueError:  # not a bcrypt hash ("Invalid salt")
        return False


class _BcryptFacade:
    """What ``import bcrypt`` gives a script. Only plain functions, no module."""

    __slots__ = ()

    MIN_ROUNDS = MIN_ROUNDS
    MAX_ROUNDS = MAX_ROUNDS
    DEFAULT_ROUNDS = DEFAULT_ROUNDS

    def hash(self, password: str, rounds: int = DEFAULT_ROUNDS) -> str:
        """bcrypt hash of ``password``; ``rounds`` clamped to 4..14 (default 10)."""
        return hash_password(password, rounds)

    def check(self, password: str, hashed: str) -> bool:
        """True when ``password`` matches the bcrypt hash ``hashed``."""
        return check_password(password, hashed)

    def __repr__(self) -> str:
        return "<bcrypt facade: hash(password, rounds=10), check(password, hashed)>"


bcrypt = _BcryptFacade()
