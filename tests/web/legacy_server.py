"""Start the reference legacy API (``engine.legacy_api``) on loopback for a test session.

A subprocess (the test process never serves it from a thread: the engine's
zygote must not be forked from a threaded process); it binds port 0 and
prints the bound address on its first line, which we read (no polling).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.request
from dataclasses import dataclass


@dataclass
class LegacyServer:
    proc: subprocess.Popen
    base_url: str       # http://127.0.0.1:PORT/api/
    port: int
    api_key: str

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        """One request to the API from the test (behind the scripts' backs)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def reset(self) -> None:
        assert self.call("POST", "_reset")[0] == 200

    def calls(self) -> dict[str, int]:
        return self.call("GET", "_calls")[1]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def make_tls_files(folder) -> dict[str, str]:
    """A throwaway CA and a server certificate for ``localhost`` signed by it (openssl CLI)."""
    folder.mkdir(parents=True, exist_ok=True)
    f = {name: str(folder / name) for name in ("ca.pem", "ca.key", "srv.pem", "srv.key", "srv.csr", "ext.cnf",
                                               "other-ca.pem", "other-ca.key")}
    (folder / "ext.cnf").write_text("subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                                    "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    for ca in ("ca", "other-ca"):
        subprocess.run(["openssl", "req", "-x509", *ec, "-keyout", f[f"{ca}.key"], "-out", f[f"{ca}.pem"],
                        "-days", "2", "-subj", f"/CN=scriptvisor test {ca}", *ca_ext], check=True, capture_output=True)
    subprocess.run(["openssl", "req", *ec, "-keyout", f["srv.key"], "-out", f["srv.csr"], "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", f["srv.csr"], "-CA", f["ca.pem"], "-CAkey", f["ca.key"],
                    "-CAcreateserial", "-out", f["srv.pem"], "-days", "2", "-extfile", f["ext.cnf"]],
                   check=True, capture_output=True)
    return f


def start_legacy_server(host: str = "127.0.0.1", certfile: str = "", keyfile: str = "") -> LegacyServer:
    key = secrets.token_urlsafe(16)
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from scriptvisor.engine.legacy_api import serve; "
         "serve(sys.argv[1], host=sys.argv[2], port=0, rounds=4, test_routes=True, "
         "certfile=sys.argv[3] or None, keyfile=sys.argv[4] or None)", key, host, certfile, keyfile],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()  # "legacy API on http://127.0.0.1:PORT/api/"
    if not line.startswith("legacy API on "):  # noqa: SIM102
        proc.kill()
        raise RuntimeError(f"legacy API did not start: {line!r} {proc.stderr.read()[-2000:]}")
    base = line.removeprefix("legacy API on ")
    port = int(base.rsplit(":", 1)[1].split("/")[0])
    return LegacyServer(proc, base, port, key)
