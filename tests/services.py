"""Tests that need PostgreSQL, MariaDB or nginx skip only where none can be had.

``scripts/test.sh`` (the README's test command, and CI) installs and starts
those services and sets ``SCRIPTVISOR_REQUIRE_SERVICES=1``: there a missing
service fails the test instead of skipping it, so a broken start can never
turn into a green run with the database tests silently skipped.
"""

import os

import pytest


def unavailable(reason: str) -> None:
    if os.environ.get("SCRIPTVISOR_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (SCRIPTVISOR_REQUIRE_SERVICES=1: services are required here)")
    pytest.skip(reason)
