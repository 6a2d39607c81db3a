"""The one tenant-name rule, shared by ``run``, ``init``, the engine and the server.

A tenant name is a folder name under the server's tenants folder, a URL path
segment, a Prometheus label value and part of a worker's uid mapping, so it is
kept to what is safe in all of them: lowercase letters, digits, ``-`` and
``_``, starting with a letter or digit, at most 63 characters.
"""

from __future__ import annotations

import re

__all__ = ["TENANT_NAME", "TENANT_NAME_RULE", "tenant_name_problem"]

TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
TENANT_NAME_RULE = "lowercase letters, digits, '-' and '_', starting with a letter or digit, at most 63 characters"


def tenant_name_problem(name: object) -> str | None:
    """None when ``name`` is a valid tenant name, else a message saying what to do."""
    if isinstance(name, str) and TENANT_NAME.match(name):
        return None
    hint = ""
    if isinstance(name, str) and name and TENANT_NAME.match(name.lower().replace(".", "-")):
        hint = f" (e.g. {name.lower().replace('.', '-')!r})"
    return f"invalid tenant name {name!r}: use {TENANT_NAME_RULE}{hint}"
