import subprocess
import sys

from scriptvisor import engine


def test_public_names_resolve_and_are_sorted():
    assert engine.__all__ == sorted(engine.__all__)
    for name in engine.__all__:
        assert getattr(engine, name) is not None


def test_worker_side_imports_stay_small():
    """A worker imports engine.protocol; that must not pull the API, asyncio or subprocess."""
    code = ("import sys, engine.protocol, engine.errors\n"
            "bad = [m for m in ('scriptvisor.engine.api', 'asyncio', 'subprocess', 'psutil') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
