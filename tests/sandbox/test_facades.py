"""The stdlib facades work for ordinary script code and enforce their caps."""

from __future__ import annotations

import pytest

from tests.sandbox.helpers import error_of


def result_of(out):
    assert out["ok"], out
    return out["result"]


def test_json_round_trip_and_caps(run):
    assert result_of(run("""
        import json
        def script(callback):
            callback(None, [json.loads(json.dumps({"a": [1, None]}, sort_keys=True)),
                            json.dumps({"b": 1}, separators=(",", ":")),
                            json.loads(b'[1]')])
    """)) == [{"a": [1, None]}, '{"b":1}', [1]]
    err = error_of(run("""
        import json
        def script(callback):
            json.loads(" " * (4 * 1024 * 1024 + 1))
    """))
    assert err["name"] == "ValueError" and "limit" in err["message"]


def test_json_decode_error_is_catchable(run):
    assert result_of(run("""
        import json
        def script(callback):
            try:
                json.loads("{")
            except json.JSONDecodeError as e:
                callback(None, e.pos)
    """)) == 1


def test_time_is_read_only_clock_functions(run):
    out = result_of(run("""
        import time
        def script(callback):
            try:
                time.sleep(0)
                slept = True
            except AttributeError:
                slept = False
            callback(None, [time.time() > 0, time.monotonic() > 0, time.strftime("%Y", 0),
                            time.gmtime(0).tm_year, slept])
    """, timeout=5))
    assert out == [True, True, "1970", 1970, False]


def test_strftime_format_is_capped(run):
    assert error_of(run("""
        import time
        def script(callback):
            time.strftime("%Y" * 1000)
    """))["name"] == "ValueError"


def test_datetime_classes(run):
    assert result_of(run("""
        from datetime import datetime, timedelta, timezone, date
        def script(callback):
            d = datetime(2020, 1, 2, tzinfo=timezone.utc) + timedelta(days=1)
            callback(None, [d.isoformat(), date(2020, 1, 1).weekday(),
                            datetime.strptime("2021-03-04", "%Y-%m-%d").day])
    """)) == ["2020-01-03T00:00:00+00:00", 2, 4]


def test_math(run):
    assert result_of(run("""
        import math
        def script(callback):
            callback(None, [math.floor(2.5), math.gcd(12, 8), math.fsum([0.1] * 10), math.prod([2, 3])])
    """)) == [2, 4, 1.0, 6]


def test_regex_usage(run):
    assert result_of(run("""
        import re
        def script(callback):
            p = re.compile(r"(?P<user>[^@]+)@(\\w+)")
            m = p.match("ann@example")
            callback(None, [m.group("user"), m.groups(), m.span(), m[2],
                            re.sub(r"\\d", "#", "a1b2"), re.findall("a", "aXa"),
                            re.split(",", "a,b"), bool(re.search("B", "abc", flags=re.I)),
                            re.sub("a", lambda m: m.group(0).upper(), "banana"),
                            [m.start() for m in re.finditer("a", "banana")], re.escape("a.b"),
                            re.fullmatch("a+", "aaa") is not None])
    """)) == ["ann", ["ann", "example"], [0, 11], "example", "a#b#", ["a", "a"], ["a", "b"], True,
              "bAnAnA", [1, 3, 5], "a\\.b", True]


@pytest.mark.parametrize("call", ['re.compile("a" * 5000)', 're.match("a", "a" * 1000001)'])
def test_regex_size_caps(run, call):
    err = error_of(run(f"""
        import re
        def script(callback):
            {call}
    """))
    assert err["name"] == "ValueError" and "limit" in err["message"]


def test_hashlib_hmac_secrets_uuid_base64(run):
    out = result_of(run("""
        import hashlib, hmac, secrets, uuid, base64
        def script(callback):
            h = hashlib.sha256(b"abc")
            h.update(b"def")
            callback(None, [
                hashlib.sha256(b"abcdef").hexdigest() == h.hexdigest(),
                len(hashlib.pbkdf2_hmac("sha256", "pw", b"salt", 1000)),
                hmac.new(b"k", b"m", "sha256").hexdigest() == hmac.digest(b"k", b"m", "sha256").hex(),
                hmac.compare_digest("a", "a"),
                len(secrets.token_hex(8)), secrets.choice([7]), len(secrets.token_bytes(4)),
                str(uuid.uuid5(uuid.NAMESPACE_DNS, "example.com")),
                len(str(uuid.uuid4())),
                base64.b64decode(base64.b64encode("hi")).decode(),
                base64.urlsafe_b64encode(b"\\xff\\xfe").decode(),
            ])
    """))
    assert out == [True, 32, True, True, 16, 7, 4, "cfbff0d1-9375-5685-968c-48ce8b15ae17", 36, "hi", "__4="]


@pytest.mark.parametrize("call", ['hmac.new(b"k", b"m", "whirlpool")', 'secrets.token_hex(10**6)',
                                  'hashlib.pbkdf2_hmac("sha256", b"p", b"s", 10**9)'])
def test_crypto_limits(run, call):
    err = error_of(run(f"""
        import hashlib, hmac, secrets
        def script(callback):
            {call}
    """))
    assert err["name"] == "ValueError"
