"""Regenerate password_vectors.json from the reference implementations.

Not run by the test suite (it needs tools the tests do not): each vector
records the program that made it, so the facade is checked against
implementations other than the one it wraps wherever one exists.

Needs: Debian's ``php-cli``, ``argon2`` (the reference C implementation's CLI),
``apache2-utils`` (htpasswd), ``openssl``, coreutils' ``md5sum``/``sha*sum``,
and a Python with Django, bcrypt and argon2-cffi (``DJANGO_PYTHON``), plus
libpass in this interpreter for the formats no other tool here writes
(phpass, the passlib PHC forms).

    DJANGO_PYTHON=/tmp/djv/bin/python python tests/sandbox/data/make_password_vectors.py
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

OUT = Path(__file__).with_name("password_vectors.json")
PASSWORDS = ["correct horse battery staple", "wonderland", "pässwörd-ünïcode"]


def sh(cmd: str, stdin: bytes | None = None) -> str:
    return subprocess.run(["bash", "-c", cmd], input=stdin, capture_output=True, check=True).stdout.decode().strip()


def main() -> None:
    vectors: list[dict[str, str]] = []

    def add(scheme: str, password: str, hashed: str, source: str) -> None:
        vectors.append({"scheme": scheme, "password": password, "hash": hashed, "source": source})

    for pw in PASSWORDS:
        q = pw.replace("'", "'\\''")
        ver = sh("openssl version")
        add("md5_crypt", pw, sh(f"openssl passwd -1 -salt s4ltS4lt '{q}'"), f"{ver}: openssl passwd -1")
        add("apr_md5_crypt", pw, sh(f"openssl passwd -apr1 -salt s4ltS4lt '{q}'"), f"{ver}: openssl passwd -apr1")
        add("sha256_crypt", pw, sh(f"openssl passwd -5 -salt s4ltS4ltS4lt '{q}'"), f"{ver}: openssl passwd -5")
        add("sha512_crypt", pw, sh(f"openssl passwd -6 -salt s4ltS4ltS4lt '{q}'"), f"{ver}: openssl passwd -6")
        add("bcrypt", pw, sh(f"htpasswd -nbBC 10 '' '{q}' | cut -d: -f2"), "apache2-utils htpasswd -B ($2y$)")
        php = sh("php -r 'echo PHP_VERSION;'")
        add("bcrypt", pw, sh(f"php -r 'echo password_hash($argv[1], PASSWORD_BCRYPT);' '{q}'"),
            f"PHP {php} password_hash(PASSWORD_BCRYPT)")
        add("sha512_crypt", pw, sh(f"php -r 'echo crypt($argv[1], \"\\$6\\$rounds=5000\\$phpsaltphpsalt\\$\");' '{q}'"),
            f"PHP {php} crypt() SHA512")
        for variant, flag in (("argon2id", "-id"), ("argon2i", "-i"), ("argon2d", "-d")):
            add(variant, pw, sh(f"printf '%s' '{q}' | argon2 somesaltsomesalt {flag} -t 3 -k 65536 -p 4 -e"),
                "argon2 CLI (reference C implementation, Debian argon2 0~20171227)")
        if pw == PASSWORDS[0]:  # default costs are slow: one vector each is enough
            add("argon2id", pw, sh(f"printf '%s' '{q}' | argon2 saltsaltsaltsalt -id -t 2 -k 102400 -p 8 -e"),
                "argon2 CLI, Django's default parameters m=102400 t=2 p=8")
        data = pw.encode()
        for algo, label in (("sha1", "SHA"), ("md5", "MD5")):
            add(f"ldap_{algo if algo == 'md5' else 'sha1'}", pw,
                "{" + label + "}" + sh(f"printf '%s' '{q}' | openssl dgst -{algo} -binary | base64"),
                f"{ver}: base64(openssl dgst -{algo}) per RFC 2307")
        salt = b"\x01\x02saltyNaCl"
        for algo, label, scheme in (("sha1", "SSHA", "ldap_salted_sha1"), ("md5", "SMD5", "ldap_salted_md5"),
                                    ("sha256", "SSHA256", "ldap_salted_sha256"),
                                    ("sha512", "SSHA512", "ldap_salted_sha512")):
            digest = subprocess.run(["openssl", "dgst", f"-{algo}", "-binary"], input=data + salt,
                                    capture_output=True, check=True).stdout
            add(scheme, pw, "{" + label + "}" + base64.b64encode(digest + salt).decode(),
                f"{ver}: base64(openssl dgst -{algo}(password+salt) + salt), OpenLDAP's layout")
        for algo in ("md5", "sha1", "sha256", "sha512"):
            add(f"hex_{algo}", pw, sh(f"printf '%s' '{q}' | {algo}sum | cut -d' ' -f1"), f"coreutils {algo}sum")
        add("ldap_sha512_crypt", pw, "{CRYPT}" + sh(f"openssl passwd -6 -salt s4ltS4ltS4lt '{q}'"),
            f"{ver}: openssl passwd -6 with the {{CRYPT}} label")

    django_py = os.environ.get("DJANGO_PYTHON", "/tmp/djv/bin/python")
    django_code = r'''
import json, sys, django
from django.conf import settings
settings.configure(PASSWORD_HASHERS=[
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.BCryptPasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
])
django.setup()
from django.contrib.auth.hashers import make_password
out = []
for pw in json.loads(sys.argv[1]):
    for scheme, hasher in (("django_pbkdf2_sha256", "pbkdf2_sha256"), ("django_pbkdf2_sha1", "pbkdf2_sha1"),
                           ("django_argon2", "argon2"), ("django_bcrypt_sha256", "bcrypt_sha256"),
                           ("django_bcrypt", "bcrypt"), ("django_scrypt", "scrypt")):
        out.append({"scheme": scheme, "password": pw, "hash": make_password(pw, hasher=hasher),
                    "source": f"Django {django.__version__} make_password(hasher={hasher!r})"})
print(json.dumps(out))
'''
    # Django's default costs (1,000,000 PBKDF2 rounds, argon2 m=100 MiB) take
    # most of a second each: one password per hasher.
    vectors += json.loads(subprocess.run([django_py, "-c", django_code, json.dumps(PASSWORDS[:1])],
                                         capture_output=True, check=True, text=True).stdout)

    from passlib import hash as ph  # libpass
    import importlib.metadata as md

    libpass = f"libpass {md.version('libpass')}"
    for pw in PASSWORDS:
        add("phpass", pw, ph.phpass.using(rounds=8).hash(pw), f"{libpass} phpass (WordPress cost 8, $P$)")
        add("phpass", pw, ph.phpass.using(rounds=11, ident="H").hash(pw), f"{libpass} phpass (phBB cost 11, $H$)")
        add("scrypt", pw, ph.scrypt.hash(pw), f"{libpass} scrypt (ln=16, r=8, p=1)")
        for scheme in ("pbkdf2_sha1", "pbkdf2_sha256", "pbkdf2_sha512"):
            add(scheme, pw, getattr(ph, scheme).hash(pw), f"{libpass} {scheme}")
        add("ldap_salted_sha1", pw, ph.ldap_salted_sha1.hash(pw), f"{libpass} ldap_salted_sha1")
    OUT.write_text(json.dumps({"generated_by": "tests/sandbox/data/make_password_vectors.py",
                               "vectors": vectors}, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(vectors)} vectors -> {OUT}")


if __name__ == "__main__":
    main()
