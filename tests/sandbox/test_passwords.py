"""The ``passwords`` facade: known-answer vectors, cost caps, bad input.

The vectors (``data/password_vectors.json``) were made by the reference
implementations named in each entry's ``source`` (OpenSSL, the argon2 CLI,
htpasswd, coreutils, Django; libpass only where no other tool here writes the
format), so the facade is checked against code other than what it wraps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest

from scriptvisor.sandbox import context
from scriptvisor.sandbox.facades.passwords import DEFAULT_CAPS as HASH_CAPS
from scriptvisor.sandbox.facades.passwords import passwords
from scriptvisor.sandbox.wire import WorkerLimits
from tests.sandbox.helpers import error_of, invoke, make_runner

VECTORS = json.loads((Path(__file__).parent / "data" / "password_vectors.json").read_text("utf-8"))["vectors"]
#: The schemes issue 18 names, each of which must have at least one vector.
REQUIRED = {
    "bcrypt", "argon2i", "argon2d", "argon2id", "scrypt", "pbkdf2_sha1", "pbkdf2_sha256",
    "pbkdf2_sha512", "django_pbkdf2_sha256", "django_bcrypt_sha256", "phpass", "md5_crypt",
    "sha256_crypt", "sha512_crypt", "ldap_salted_sha1", "ldap_sha1", "ldap_salted_md5", "ldap_md5",
}


def _explicit(vector: dict[str, str]) -> str | None:
    return vector["scheme"] if vector["scheme"].startswith("hex_") else None


def _id(vector: dict[str, str]) -> str:
    return f"{vector['scheme']}:{vector['source'].split()[0]}:{vector['password'][:6]}"


def test_every_required_scheme_has_vectors_and_is_listed():
    assert REQUIRED <= {v["scheme"] for v in VECTORS}
    assert REQUIRED <= set(passwords.schemes())


@pytest.mark.parametrize("vector", VECTORS, ids=_id)
def test_known_answer_vectors(vector):
    scheme = _explicit(vector)
    assert passwords.verify(vector["password"], vector["hash"], scheme) is True
    assert passwords.verify(vector["password"] + "x", vector["hash"], scheme) is False
    if scheme is None:
        assert passwords.identify(vector["hash"]) == vector["scheme"]
    else:  # bare digests are ambiguous: never recognised on their own
        assert passwords.identify(vector["hash"]) is None
        assert passwords.verify(vector["password"], vector["hash"]) is False


def _corruptions(stored: str) -> list[str]:
    flipped = stored[:-2] + ("0" if stored[-2] != "0" else "1") + stored[-1]
    out = [stored[: len(stored) // 2], stored[:-1], flipped, stored + "$", stored.replace("$", "#", 1)]
    return [bad for bad in out if bad != stored]


#: One vector per scheme (the first one), corrupted five ways.
FIRST_OF_EACH = list({v["scheme"]: v for v in reversed(VECTORS)}.values())


@pytest.mark.parametrize("vector", FIRST_OF_EACH, ids=_id)
def test_corrupted_or_truncated_hashes_are_false_never_an_exception(vector):
    for bad in _corruptions(vector["hash"]):
        assert passwords.verify(vector["password"], bad, _explicit(vector)) is False, bad


@pytest.mark.parametrize("scheme", sorted(set(passwords.schemes()) - {"django_argon2", "django_bcrypt",
                                                                       "django_scrypt"}))
def test_hash_then_verify_round_trips(scheme):
    cheap = {"bcrypt": 4, "django_bcrypt_sha256": 4, "phpass": 8, "argon2id": 1, "argon2i": 1,
             "argon2d": 1, "scrypt": 10}
    rounds = cheap.get(scheme)
    if rounds is None and ("pbkdf2" in scheme or "sha256_crypt" in scheme or "sha512_crypt" in scheme):
        rounds = 1000
    made = passwords.hash("pässword", scheme, rounds)
    explicit = scheme if scheme.startswith("hex_") else None
    assert passwords.verify("pässword", made, explicit) is True
    assert passwords.verify("password", made, explicit) is False
    if explicit is None:
        assert passwords.identify(made) == scheme


def test_default_hash_is_argon2id_with_rfc9106_parameters():
    made = passwords.hash("s3cret")
    assert made.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert passwords.verify("s3cret", made)


# --------------------------------------------------------------------------- cost caps

#: A hash over the default cap for every tunable scheme (the salt/digest parts
#: are well-formed, so only the parameters are wrong).
OVER_COST = {
    "bcrypt cost": "$2b$17$" + "a" * 53,
    "django bcrypt_sha256 cost": "bcrypt_sha256$$2b$20$" + "a" * 53,
    "pbkdf2-sha256 rounds": "$pbkdf2-sha256$2000001$c2FsdHNhbHQ$" + "A" * 43,
    "django pbkdf2 rounds": "pbkdf2_sha256$50000000$salt$" + "A" * 44,
    "sha512-crypt rounds": "$6$rounds=999999999$saltsalt$" + "a" * 86,
    "phpass cost": "$P$" + "J" + "saltsalt" + "a" * 22,  # 'J' = log2 21
    "argon2 memory": "$argon2id$v=19$m=4194304,t=3,p=4$c2FsdHNhbHRzYWx0$" + "A" * 43,
    "argon2 time": "$argon2id$v=19$m=65536,t=1000,p=4$c2FsdHNhbHRzYWx0$" + "A" * 43,
    "argon2 lanes": "$argon2id$v=19$m=65536,t=3,p=255$c2FsdHNhbHRzYWx0$" + "A" * 43,
    "django argon2 memory": "argon2$argon2id$v=19$m=4194304,t=2,p=8$c2FsdHNhbHRzYWx0$" + "A" * 43,
    "scrypt memory": "$scrypt$ln=22,r=8,p=1$c2FsdHNhbHRzYWx0$" + "A" * 43,
    "scrypt parallelism": "$scrypt$ln=14,r=8,p=64$c2FsdHNhbHRzYWx0$" + "A" * 43,
    "django scrypt memory": "scrypt$4194304$salt$8$1$" + "A" * 86 + "==",
}


@pytest.mark.parametrize("label", sorted(OVER_COST))
def test_cant_pin_a_worker_with_an_over_cost_hash(label):
    """Layer: the facade's cost cap, read from the hash before any work."""
    started = time.perf_counter()
    with pytest.raises(passwords.HashTooExpensive) as info:
        passwords.verify("pw", OVER_COST[label])
    elapsed = time.perf_counter() - started
    assert "cap" in str(info.value) and "tenant.toml" in str(info.value)
    # Refused on parsing alone; a generous bound that no real computation meets.
    assert elapsed < 0.5, elapsed


def test_caps_come_from_the_tenants_limits():
    stored = passwords.hash("pw", "bcrypt", 6)
    ctx = context.WorkerContext(tenant="t", limits=WorkerLimits(hash_bcrypt_max_cost=5))
    context.set_worker(ctx)
    try:
        with pytest.raises(passwords.HashTooExpensive, match="above this tenant's cap 5"):
            passwords.verify("pw", stored)
        with pytest.raises(passwords.PasswordError):
            passwords.hash("pw", "bcrypt", 6)
    finally:
        context.set_worker(None)
    assert passwords.verify("pw", stored) is True


def test_work_that_cannot_finish_before_the_deadline_is_refused_before_it_starts():
    stored = passwords.hash("pw", "pbkdf2_sha256", 1_000_000)
    ctx = context.WorkerContext(tenant="t")
    context.set_worker(ctx)
    context.set_current(context.Invocation(worker=ctx, deadline=time.monotonic() + 0.1, log=lambda s: None))
    try:
        with pytest.raises(passwords.HashTooExpensive, match="s left"):
            passwords.verify("pw", stored)
    finally:
        context.set_current(None)
        context.set_worker(None)


def test_limits_know_every_cap():
    from scriptvisor.engine.config import TenantLimits

    limits = TenantLimits().to_dict()
    assert {k: limits[k] for k in HASH_CAPS} == HASH_CAPS


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("password", ["\ud800", 5, None, b"bytes", "x" * 5000])
def test_bad_passwords_are_a_password_error(password):
    with pytest.raises(passwords.PasswordError):
        passwords.verify(password, "$2b$04$" + "a" * 53)


@pytest.mark.parametrize("stored", [None, "", "   ", "nonsense", "$9$what", "é" * 20, b"\xff\xfe", "{SSHA}!!!"])
def test_unrecognised_hashes_verify_false(stored):
    assert passwords.verify("pw", stored) is False
    assert passwords.identify(stored) is None


def test_unknown_scheme_is_named():
    with pytest.raises(passwords.UnknownScheme, match="passwords.schemes"):
        passwords.verify("pw", "abc", "md4_of_doom")
    with pytest.raises(passwords.UnknownScheme, match="not written"):
        passwords.hash("pw", "django_argon2")


# --------------------------------------------------------------------------- salted and keyed digests

#: Made with OpenSSL 3: printf 'wonderland' 'NaCl' | openssl dgst -sha256 (and -sha1, -hmac).
SALTED = [
    ("sha256", "suffix", "hex", hashlib.sha256(b"wonderlandNaCl").hexdigest()),
    ("sha1", "prefix", "hex", hashlib.sha1(b"NaClwonderland").hexdigest()),
]


def test_salted_digests_with_the_salt_where_the_script_says():
    assert passwords.verify_salted("wonderland", "4d9a8f3b0d3b36c3a4c1c15c2d3c4b0b5d6e2b3c9e1cf1e8f5d1f0a3b6c7d8e9",
                                   "NaCl") is False
    for algorithm, position, encoding, digest in SALTED:
        assert passwords.verify_salted("wonderland", digest, "NaCl", algorithm, position, encoding) is True
        assert passwords.verify_salted("wonderlanD", digest, "NaCl", algorithm, position, encoding) is False
        other = "prefix" if position == "suffix" else "suffix"
        assert passwords.verify_salted("wonderland", digest, "NaCl", algorithm, other, encoding) is False
    b64 = "K6Q5cQqhzeYb2IJg7Ozo5MEVbGZqHVn4nUxC5MyBgVA="  # not the digest: malformed-ish but valid base64
    assert passwords.verify_salted("wonderland", b64, "NaCl", "sha256", "suffix", "base64") is False
    with pytest.raises(passwords.PasswordError):
        passwords.verify_salted("wonderland", "00", "NaCl", "crc32")


def test_hmac_digests():
    digest = hmac.new(b"pepper", b"wonderland", "sha256").hexdigest()
    assert passwords.verify_hmac("wonderland", digest, "pepper") is True
    assert passwords.verify_hmac("wonderland", digest, "salt") is False
    assert passwords.verify_hmac("wonderland", "zz-not-hex", "pepper") is False


# --------------------------------------------------------------------------- from a script


def _script_result(source: str, *args: Any) -> Any:
    outcome = invoke(make_runner(), source, *args, fn="main")
    assert outcome["ok"], outcome
    return outcome["result"]


def test_a_script_verifies_identifies_and_catches_errors_by_name():
    django = next(v for v in VECTORS if v["scheme"] == "django_pbkdf2_sha256")
    source = """
        import passwords

        def main(password, stored, callback):
            try:
                passwords.verify(password, "$2b$31$" + "a" * 53)
                refused = False
            except passwords.HashTooExpensive:
                refused = True
            callback(None, {"ok": passwords.verify(password, stored),
                            "scheme": passwords.identify(stored),
                            "refused": refused,
                            "n": len(passwords.schemes())})
    """
    result = _script_result(source, django["password"], django["hash"])
    assert result == {"ok": True, "scheme": "django_pbkdf2_sha256", "refused": True,
                      "n": len(passwords.schemes())}


def test_an_uncaught_password_error_is_a_script_error_not_a_crash():
    source = """
        import passwords

        def main(callback):
            passwords.verify("\\ud800", "$2b$04$" + "a" * 53)
    """
    err = error_of(invoke(make_runner(), source, fn="main"))
    assert err["code"] == "script_error" and "surrogate" in err["message"]


def test_the_scheme_reference_page_matches_the_code():
    from scriptvisor.sandbox.facades.passwords import reference_markdown

    page = (Path(__file__).parents[2] / "docs" / "password-hashes.md").read_text("utf-8")
    table = page.split("<!-- schemes:begin -->\n", 1)[1].split("<!-- schemes:end -->", 1)[0]
    assert table == reference_markdown(), "regenerate: python -m scriptvisor.sandbox.facades.passwords"


# --------------------------------------------------------------------------- hashlib.new / hashlib.scrypt


def test_hashlib_facade_has_new_and_a_capped_scrypt():
    source = """
        import hashlib

        def main(callback):
            out = [hashlib.new("sha256", b"abc").hexdigest(),
                   hashlib.scrypt(b"pw", salt=b"NaCl", n=1024, r=8, p=1, dklen=16).hex()]
            try:
                hashlib.scrypt(b"pw", salt=b"NaCl", n=2 ** 22, r=8, p=1)
            except ValueError as exc:
                out.append(str(exc))
            callback(None, out)
    """
    digest, derived, refused = _script_result(source)
    assert digest == hashlib.sha256(b"abc").hexdigest()
    assert derived == hashlib.scrypt(b"pw", salt=b"NaCl", n=1024, r=8, p=1, dklen=16).hex()
    assert "hash_scrypt_max_memory_mb" in refused
