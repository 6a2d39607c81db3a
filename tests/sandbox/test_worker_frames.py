"""The worker's result frames: its fast path writes the bytes ``wire.encode`` writes.

``sandbox.worker._result_frame`` builds the frame of a successful call piece
by piece; for every outcome it must give exactly the frame of the general
path (the whole message through ``wire.encode``), or that path's fallback.
"""

from __future__ import annotations

from typing import Any

import pytest

from scriptvisor.sandbox import wire
from scriptvisor.sandbox.worker import _result_frame

MAX = wire.DEFAULT_MAX_FRAME


def _general(job_id: Any, outcome: dict[str, Any], stats: dict[str, Any]) -> bytes:
    return wire.encode({
        "t": "result", "id": job_id, "ok": bool(outcome.get("ok")), "result": outcome.get("result"),
        "error": outcome.get("error"), "logs": outcome.get("logs") or [], "stats": stats,
    }, MAX)


RESULTS = [1, 0, -3, 10 ** 40, 1.5, -0.0, 1e-7, True, False, None, "", "plain",
           "q\"b\\s\n\x00\u2028é\U0001F600", [1, "a", None], {"user_id": "1", "email": "a@b.c",
                                                                 "nested": {"l": [1.25, False]}}]
STATS = [{"cpu_ms": 0.317, "maxrss_kb": 22884}, {"cpu_ms": 0.0, "maxrss_kb": 0},
         {"cpu_ms": 12.5, "maxrss_kb": 1, "compile_ms": 0.2683}, {"maxrss_kb": 1, "cpu_ms": 2.0}]


@pytest.mark.parametrize("result", RESULTS)
@pytest.mark.parametrize("logs", [[], ["one line"], ["é", ""]])
@pytest.mark.parametrize("stats", STATS)
def test_ok_frame_is_the_general_frame(result, logs, stats):
    outcome = {"ok": True, "result": result, "error": None, "logs": logs}
    assert _result_frame(7, outcome, stats, MAX) == _general(7, outcome, stats)


def test_failed_outcome_frame_is_the_general_frame():
    outcome = {"ok": False, "result": None, "logs": ["x"],
               "error": wire.worker_error("stall", "Stall", "the function returned without calling callback")}
    stats = STATS[0]
    assert _result_frame(3, outcome, stats, MAX) == _general(3, outcome, stats)


@pytest.mark.parametrize("outcome", [
    {"ok": True, "result": "\ud800", "error": None, "logs": []},
    {"ok": True, "result": 1, "error": None, "logs": ["\udfff"]},
    {"ok": True, "result": float("nan"), "error": None, "logs": []},
])
def test_unencodable_ok_outcome_falls_back_like_the_general_path(outcome):
    frame = _result_frame(5, outcome, STATS[0], MAX)
    message = wire.FrameDecoder(MAX).feed(frame)[0]
    assert message["ok"] is False and message["id"] == 5
    assert message["error"]["code"] == "invalid_result"
    assert message["error"]["message"].startswith("result could not be sent: message is not JSON-serialisable")


def test_oversized_ok_outcome_falls_back_to_an_error_frame():
    outcome = {"ok": True, "result": "x" * 2000, "error": None, "logs": ["l"] * 60}
    frame = _result_frame(9, outcome, STATS[0], 1000)
    message = wire.FrameDecoder(MAX).feed(frame)[0]
    assert message["ok"] is False and message["error"]["code"] == "invalid_result"
    assert "exceeds 1000" in message["error"]["message"]
    assert message["logs"] == ["l"] * 50


# --------------------------------------------------------------------------- decoding
# FrameDecoder parses a payload with the JSON scanner directly and falls back
# to json.loads; it accepts and refuses exactly what json.loads does.


@pytest.mark.parametrize("payload", [
    '{"t":"x"}', ' {"t":"x"} ', '{"t":"x"}\n', '\ufeff{"t":"x"}', '{"t":"x"}x', '{"t":"x"}{}',
    '{"t":', '{"t":"x","t":"y"}', '{"t":1e400}', '{"t":"x","n":NaN}', '[1]', '"t"',
    '{"t":"\\ud800"}', "[" * 100000 + "]" * 100000,
])
def test_decoder_accepts_what_json_loads_accepts(payload):
    import json
    import struct

    raw = payload.encode("utf-8", "surrogatepass")
    frame = struct.pack(">2sBBI", b"SV", wire.VERSION, ord("J"), len(raw)) + raw
    try:
        expected: Any = json.loads(payload)
    except (ValueError, RecursionError):
        expected = "bad_json"
    if expected != "bad_json" and (type(expected) is not dict or type(expected.get("t")) is not str):
        expected = "bad_message"
    try:
        got: Any = wire.FrameDecoder(1 << 20).feed(frame)[0]
    except wire.FrameError as exc:
        got = exc.reason
    assert got == expected
