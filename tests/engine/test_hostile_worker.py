"""A worker with full code execution writes garbage to its channel.

The supervisor must stay up, kill and replace that worker with
``protocol_error`` and keep serving everyone else.  The attacks run through
``debug_exec`` (plain Python inside a worker), i.e. as if RestrictedPython had
already been escaped.
"""

import struct

import pytest

from scriptvisor.engine import protocol

from .conftest import NOOP

WRITE = (
    "import os, struct\n"
    "def w(b):\n"
    "    while b:\n"
    "        b = b[os.write(channel_fd, b):]\n"
)


@pytest.mark.parametrize(
    "payload, reason",
    [
        ("w(b'XXXXXXXXXXXX')", "bad_magic"),
        ("w(b'SV' + bytes([9, 74]) + struct.pack('>I', 2) + b'{}')", "bad_version"),
        ("w(b'SV' + bytes([1, 74]) + struct.pack('>I', 2**31))", "too_large"),
        ("w(b'SV' + bytes([1, 74]) + struct.pack('>I', 5) + b'\\xff\\xfe\\xfd{}')", "bad_json"),
        ("w(b'SV' + bytes([1, 74]) + struct.pack('>I', 4) + b'[12]')", "bad_message"),
        ("import json\np = json.dumps({'t': 'result', 'id': 10**9, 'ok': True}).encode()\n"
         "w(b'SV' + bytes([1, 74]) + struct.pack('>I', len(p)) + p)", None),
        ("import json\np = json.dumps({'t': 'ready', 'pid': 1}).encode()\n"
         "w(b'SV' + bytes([1, 74]) + struct.pack('>I', len(p)) + p)", None),
        ("import json\np = json.dumps({'t': 'result', 'id': 0, 'ok': False, 'error': "
         "{'code': 'timeout', 'name': 'x', 'message': 'y'}}).encode()\n"
         "w(b'SV' + bytes([1, 74]) + struct.pack('>I', len(p)) + p)", "bad_message"),
    ],
)
def test_cant_crash_the_supervisor_with_bad_frames(shared_engine, payload, reason):
    res = shared_engine.debug_exec("hostile", WRITE + payload + "\nimport time\ntime.sleep(30)\n", timeout=5)
    assert res.code == "protocol_error", res.to_dict()
    if reason:
        assert res.error["reason"] == reason
    # the supervisor kept serving: the same tenant and another one
    assert shared_engine.invoke("hostile", source=NOOP, path="noop.py").ok
    assert shared_engine.invoke("bystander", source=NOOP, path="noop.py").ok


def test_cant_hang_the_supervisor_with_a_never_ending_frame(shared_engine):
    code = WRITE + "w(b'SV' + bytes([1, 74]) + struct.pack('>I', 1000) + b'{\"t\"')\nimport time\ntime.sleep(30)\n"
    res = shared_engine.debug_exec("hostile", code, timeout=0.3)
    assert res.code == "timeout"
    assert shared_engine.invoke("hostile", source=NOOP, path="noop.py").ok


def test_cant_flood_the_supervisor_with_endless_bytes(shared_engine):
    code = WRITE + "while True:\n    w(b'SV' + bytes([1, 74]) + struct.pack('>I', 3) + b'{}}')\n"
    res = shared_engine.debug_exec("hostile", code, timeout=5)
    assert res.code == "protocol_error"
    assert shared_engine.invoke("bystander", source=NOOP, path="noop.py").ok


def test_cant_keep_the_job_by_closing_the_socket(shared_engine):
    code = "import os, time\nos.close(channel_fd)\ntime.sleep(30)\n"
    res = shared_engine.debug_exec("hostile", code, timeout=5)
    assert res.code == "crash"
    assert res.error.get("signal_name") == "SIGKILL"
    assert shared_engine.invoke("hostile", source=NOOP, path="noop.py").ok
