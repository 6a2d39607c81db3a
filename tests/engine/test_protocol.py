"""The wire protocol refuses every malformed frame before acting on it."""

import json
import struct

import pytest

from scriptvisor.engine import protocol
from scriptvisor.engine.protocol import FrameDecoder, FrameError, encode, parse_worker_message


def frame(payload: bytes, magic=b"SV", version=protocol.VERSION, kind=ord("J"), length=None):
    n = len(payload) if length is None else length
    return struct.pack(">2sBBI", magic, version, kind, n) + payload


def test_roundtrip_survives_byte_by_byte_delivery():
    data = encode({"t": "ready", "pid": 7}) + encode({"t": "result", "id": 1, "ok": True, "result": "é"})
    dec = FrameDecoder()
    out = []
    for i in range(len(data)):
        out.extend(dec.feed(data[i:i + 1]))
    assert out == [{"t": "ready", "pid": 7}, {"t": "result", "id": 1, "ok": True, "result": "é"}]
    assert dec.pending == 0


@pytest.mark.parametrize(
    "raw, reason",
    [
        (frame(b'{"t":"x"}', magic=b"XX"), "bad_magic"),
        (frame(b'{"t":"x"}', version=99), "bad_version"),
        (frame(b'{"t":"x"}', kind=ord("P")), "bad_kind"),
        (frame(b"", length=0), "empty"),
        (frame(b"\xff\xfe", length=2), "bad_json"),
        (frame(b"{not json"), "bad_json"),
        (frame(b"[1,2]"), "bad_message"),
        (frame(b'{"no_type":1}'), "bad_message"),
        (frame(b"[" * 100000 + b"]" * 100000), "bad_json"),
    ],
)
def test_bad_frames_raise_frame_error(raw, reason):
    with pytest.raises(FrameError) as info:
        FrameDecoder(max_frame=1 << 20).feed(raw)
    assert info.value.reason == reason


def test_oversized_frame_is_refused_from_its_header_alone():
    dec = FrameDecoder(max_frame=1024)
    with pytest.raises(FrameError) as info:
        dec.feed(struct.pack(">2sBBI", b"SV", protocol.VERSION, ord("J"), 10**9))
    assert info.value.reason == "too_large"
    assert dec.pending <= protocol.HEADER.size  # nothing of the claimed payload was buffered


def test_encode_refuses_non_json_and_oversized():
    with pytest.raises(FrameError):
        encode({"t": "x", "v": object()})
    with pytest.raises(FrameError):
        encode({"t": "x", "v": float("nan")})
    with pytest.raises(FrameError):
        encode({"t": "x", "v": "a" * 100}, max_frame=50)


@pytest.mark.parametrize(
    "msg",
    [
        {"t": "result", "id": "1", "ok": True},
        {"t": "result", "id": 1, "ok": 1},
        {"t": "result", "id": 1, "ok": True, "error": {"code": "stall"}},
        {"t": "result", "id": 1, "ok": False, "error": {"code": "timeout", "name": "T", "message": "m"}},
        {"t": "result", "id": 1, "ok": False, "error": {"code": "crash", "name": "T", "message": "m"}},
        {"t": "result", "id": 1, "ok": False, "error": {"code": "stall", "name": 1, "message": "m"}},
        {"t": "result", "id": 1, "ok": False, "error": "boom"},
        {"t": "result", "id": 1, "ok": True, "logs": [1, 2]},
        {"t": "result", "id": 1, "ok": True, "stats": {"cpu": "x"}},
        {"t": "ready", "pid": "1"},
        {"t": "spawned", "pid": 1},
    ],
)
def test_worker_messages_are_validated(msg):
    with pytest.raises(FrameError):
        parse_worker_message(msg)


def test_a_worker_cannot_claim_supervisor_codes():
    ok = parse_worker_message({"t": "result", "id": 3, "ok": False, "result": None,
                               "error": {"code": "stall", "name": "Stall", "message": "m"}})
    assert ok.error["code"] == "stall"
    assert json.dumps(ok.error)


def test_terminal_states_cannot_be_left():
    import socket

    from scriptvisor.engine.worker import Channel, IllegalTransition, Job, JobState, WorkerHandle, WorkerState

    job = Job("t", "p.py", "", "", "f", "[]", "{}", 1.0)
    job.transition(JobState.DONE)
    with pytest.raises(IllegalTransition):
        job.transition(JobState.RUNNING)
    a, b = socket.socketpair()
    try:
        w = WorkerHandle("t", Channel(a, 1024), {})
        with pytest.raises(IllegalTransition):
            w.transition(WorkerState.BUSY)  # SPAWNING -> BUSY skips IDLE
        w.transition(WorkerState.DEAD)
        with pytest.raises(IllegalTransition):
            w.transition(WorkerState.IDLE)
    finally:
        a.close()
        b.close()


def test_a_worker_policy_survives_the_wire_with_every_field():
    import dataclasses
    import json

    from scriptvisor.sandbox import wire

    ep = wire.HttpEndpoint(name="api", base_url="https://api.example/v1/", scheme="https",
                           host="api.example", port=443, prefix="/v1/", addresses=("192.0.2.7",),
                           ca_pem="-----BEGIN CERTIFICATE-----\n")
    policy = wire.WorkerPolicy(
        tenant="acme", worker_id=9, uid=300001, gid=300001, scratch_dir="/s", data_dir="/d",
        allowed_ports=(5432, 443), http=(ep,), limits=wire.WorkerLimits(memory_mb=300),
        confine=False, debug_exec=True, max_frame=1 << 20, standby=False,
        databases=({"name": "legacy", "driver": "postgres", "host": "127.0.0.1", "port": 5432},))
    data = json.loads(json.dumps(policy.to_wire()))  # what travels in a spawn frame
    assert set(data) == {f.name for f in dataclasses.fields(wire.WorkerPolicy)}
    assert set(data["limits"]) == {f.name for f in dataclasses.fields(wire.WorkerLimits)}
    assert wire.WorkerPolicy.from_wire(data) == policy
