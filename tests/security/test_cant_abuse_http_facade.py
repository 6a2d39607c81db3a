"""The ``http`` facade: what a script cannot do with ``import http``.

Two layers are tested: the facade in-process (exact exception, nothing sent),
and the same refusals through the real engine (zygote, confined worker of a
tenant whose ``[[http]]`` declaration was loaded by ``load_tenant``), where
the script catches the facade's exception by name and the call still ends
``ok`` well before the deadline. The target is the reference legacy API
(engine.legacy_api) with its test routes, on loopback.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from scriptvisor.engine import Engine, EngineConfig, TenantLimits  # noqa: E402
from scriptvisor.engine.tenants import TenantConfigError, load_tenant  # noqa: E402
from scriptvisor.sandbox import context  # noqa: E402
from scriptvisor.sandbox.facades import web  # noqa: E402
from scriptvisor.sandbox.facades.web import http  # noqa: E402
from tests.web.legacy_server import start_legacy_server  # noqa: E402

BIG = web.MAX_RESPONSE_BYTES + 1024 * 1024


@pytest.fixture(scope="module")
def api():
    server = start_legacy_server()
    yield server
    server.stop()


def make_tenant_dir(root, base_url: str, **resolve) -> "object":
    (root / "scripts").mkdir(parents=True)
    (root / "tenant.toml").write_text(
        f'import_users = false\n\n[[http]]\nname = "legacy_api"\nbase_url = "{base_url}"\n\n'
        '[limits]\ntimeout = 10.0\n')
    return load_tenant(root, **resolve)


@pytest.fixture
def worker(api, tmp_path):
    """In-process worker context whose policy declares the API; ``worker(seconds)`` starts an invocation."""
    tenant = make_tenant_dir(tmp_path / "webcant", api.base_url)
    ctx = context.WorkerContext(tenant="webcant", http=tenant.http_policy())
    context.set_worker(ctx)

    def start(seconds: float = 5.0):
        context.set_current(context.Invocation(worker=ctx, deadline=time.monotonic() + seconds,
                                               log=lambda line: None))
    start()
    yield start
    ctx.run_cleanups()
    context.set_current(None)
    context.set_worker(None)


def auth(api):
    return {"Authorization": f"Bearer {api.api_key}"}


def other_host(api, path="api/login"):
    return f"http://127.0.0.2:{api.port}/{path}"


# --------------------------------------------------------------------------- in-process


def test_declared_endpoint_answers_as_a_plain_dict(api, worker):
    r = http.get(api.base_url + "users", params={"email": "alice@example.com"}, headers=auth(api))
    assert r["status"] == 200 and r["json"]["email"] == "alice@example.com"
    assert type(r) is dict and type(r["headers"]) is dict and type(r["text"]) is str
    assert set(r) == {"status", "headers", "text", "json", "url"}
    with pytest.raises(http.HttpError) as err:
        http.get(api.base_url + "users", params={"email": "nobody@example.com"}, headers=auth(api))
    assert err.value.status == 404 and "user_not_found" in err.value.body


@pytest.mark.parametrize("url", [
    "http://127.0.0.2:{port}/api/login",          # another host on the same port
    "http://localhost:{port}/api/login",          # a name that resolves to the declared address, but not declared
    "http://127.0.0.1:{port}/other/login",        # outside the path prefix
    "http://127.0.0.1:{port}/api/../other",       # dot segments
    "http://127.0.0.1:{port}/api/%2e%2e/other",   # encoded dot segments
    "https://127.0.0.1:{port}/api/login",         # another scheme
    "http://127.0.0.1:{other}/api/login",         # another port
    "http://user:pw@127.0.0.1:{port}/api/login",  # credentials in the URL
    "file:///etc/passwd",
    "gopher://127.0.0.1:{port}/api/",
])
def test_cant_request_an_undeclared_url(api, worker, url):
    url = url.format(port=api.port, other=api.port + 1)
    with pytest.raises(http.NotAllowed) as err:
        http.post(url, json={"email": "probe@example.com", "password": "x"}, headers=auth(api))
    assert f"declared: legacy_api = {api.base_url}" in str(err.value)
    assert "login probe@example.com" not in api.calls()  # nothing reached the API


def test_prefix_without_slash_is_the_endpoint(api, worker):
    with pytest.raises(http.HttpError) as err:  # reached the API (which has no route there)
        http.get(f"http://127.0.0.1:{api.port}/api", headers=auth(api))
    assert err.value.status == 404


def test_cant_request_anything_without_a_declaration(api):
    ctx = context.WorkerContext(tenant="bare")
    context.set_worker(ctx)
    context.set_current(context.Invocation(worker=ctx, deadline=time.monotonic() + 5, log=lambda s: None))
    try:
        with pytest.raises(http.NotAllowed, match=r"declares no HTTP endpoints \(\[\[http\]\] in tenant.toml\)"):
            http.get(api.base_url + "users")
    finally:
        context.set_current(None)
        context.set_worker(None)


def test_cant_follow_a_redirect_to_an_undeclared_host(api, worker):
    for target in (other_host(api), "http://localhost:%d/api/users" % api.port,
                   f"http://127.0.0.1:{api.port}/other/users", "/other/users"):
        with pytest.raises(http.NotAllowed, match="redirect from .* is not under an HTTP endpoint") as err:
            http.get(api.base_url + "_redirect", params={"to": target}, headers=auth(api))
        assert "declared: legacy_api" in str(err.value)
    # control: a redirect within the declared base URL is followed
    r = http.get(api.base_url + "_redirect", params={"to": api.base_url + "users?email=bob@example.com"},
                 headers=auth(api))
    assert r["status"] == 200 and r["json"]["email"] == "bob@example.com"


@pytest.mark.parametrize("how", [{"chunked": "0"}, {"chunked": "1"}, {"gzip": "1"}],
                         ids=["content-length", "chunked", "gzip-bomb"])
def test_cant_receive_a_huge_body(api, worker, how):
    with pytest.raises(http.ResponseTooLarge, match=f"the limit is {web.MAX_RESPONSE_BYTES}|over {web.MAX_RESPONSE_BYTES} bytes"):
        http.get(api.base_url + "_big", params={"bytes": BIG, **how}, headers=auth(api))
    r = http.get(api.base_url + "_big", params={"bytes": 1000, **how}, headers=auth(api))
    assert r["text"] == "x" * 1000  # control: a body under the cap arrives whole (decoded)


@pytest.mark.parametrize("route", ["_slow", "_drip"])
def test_cant_outlast_the_invocation_with_a_slow_api(api, worker, route):
    worker(1.0)
    with pytest.raises(http.HttpTimeout, match="stopped before the invocation's deadline"):
        http.get(api.base_url + route, params={"seconds": 30}, headers=auth(api))
    # (the API would answer after 30 s; the facade gave up at the invocation's deadline minus its margin)


def test_cant_set_the_host_header(api, worker):
    with pytest.raises(http.NotAllowed, match="header Host is set by the http facade"):
        http.get(api.base_url + "users", headers={"Host": "internal.example"})


def test_cant_follow_a_name_that_resolves_elsewhere_later(api, tmp_path):
    """The name is resolved when the tenant loads; the worker only ever connects to those addresses.

    ``legacy.invalid`` resolves (for the loader) to 127.0.0.1; the worker has no
    way to resolve it at all, so the answer proves the pinned address was used,
    and the address it might resolve to later (127.0.0.2) is refused.
    """
    tenant = make_tenant_dir(tmp_path / "pinned", f"http://legacy.invalid:{api.port}/api/",
                             resolve=lambda host, port: ("127.0.0.1",))
    assert tenant.egress == (("127.0.0.1", api.port),)
    assert api.port in tenant.limits.allowed_ports
    ctx = context.WorkerContext(tenant="pinned", http=tenant.http_policy())
    context.set_worker(ctx)
    context.set_current(context.Invocation(worker=ctx, deadline=time.monotonic() + 5, log=lambda s: None))
    try:
        r = http.get(f"http://legacy.invalid:{api.port}/api/users", params={"email": "alice@example.com"},
                     headers=auth(api))
        assert r["json"]["id"] == 1
        with pytest.raises(http.NotAllowed):
            http.get(f"http://127.0.0.2:{api.port}/api/users", headers=auth(api))
    finally:
        ctx.run_cleanups()
        context.set_current(None)
        context.set_worker(None)


def test_cant_load_a_declaration_that_does_not_resolve(tmp_path):
    def nowhere(host, port):
        raise OSError("Name or service not known")
    with pytest.raises(TenantConfigError, match=r"http\[0\].base_url: host legacy.invalid does not resolve"):
        make_tenant_dir(tmp_path / "nowhere", "http://legacy.invalid:8931/api/", resolve=nowhere)


@pytest.mark.parametrize("base_url,message", [
    ("ftp://127.0.0.1/api/", "only http:// and https:// URLs"),
    ("http://u:p@127.0.0.1/api/", "user:password@"),
    ("http://127.0.0.1/api/?x=1", "no query or fragment"),
    ("http://127.0.0.1/a/../b/", "'.' or '..' segments"),
    ("/api/", "only http:// and https:// URLs"),
])
def test_cant_declare_a_malformed_base_url(tmp_path, base_url, message):
    with pytest.raises(TenantConfigError, match=r"http\[0\].base_url: .*" + message.replace("?", r"\?").replace(".", r"\.")):
        make_tenant_dir(tmp_path / "bad", base_url)


# --------------------------------------------------------------------------- through the engine


@pytest.fixture(scope="module")
def eng(api, tmp_path_factory):
    tenant = make_tenant_dir(tmp_path_factory.mktemp("t") / "webeng", api.base_url)
    cfg = EngineConfig(limits=TenantLimits(timeout=10.0), spares_per_tenant=0,
                       state_dir=str(tmp_path_factory.mktemp("state")))
    with Engine(cfg) as engine:
        engine.configure_tenant("webeng", limits=tenant.limits, data_dir=str(tenant.data_dir),
                                http=tenant.http_policy())
        yield engine


def run(eng, source, *args, timeout=None):
    return eng.invoke("webeng", path="/tenants/webeng/script.py", source=source, function="script",
                      args=list(args), configuration={}, timeout=timeout)


CATCH = """
import http
def script(url, headers, callback):
    started = http.remaining()
    try:
        http.get(url, headers=headers)
    except http.{name} as error:
        callback(None, {{"caught": "{name}", "message": str(error), "left": http.remaining()}})
        return
    callback(None, {{"caught": None}})
"""


@pytest.mark.parametrize("route", ["_slow?seconds=30", "_drip"])
def test_cant_outlast_the_deadline_with_a_slow_api_in_a_worker(api, eng, route):
    res = run(eng, CATCH.format(name="HttpTimeout"), api.base_url + route, auth(api), timeout=2.0)
    # ok: the script caught HttpTimeout and called back before the supervisor's kill (else: a timeout error)
    assert res.ok, res.error
    assert res.result["caught"] == "HttpTimeout"
    assert "stopped before the invocation's deadline" in res.result["message"]


@pytest.mark.parametrize("case", ["host", "redirect"])
def test_cant_reach_an_undeclared_host_from_a_worker(api, eng, case):
    url = other_host(api) if case == "host" else f"{api.base_url}_redirect?to={other_host(api, 'api/users')}"
    res = run(eng, CATCH.format(name="NotAllowed"), url, auth(api))
    assert res.ok, res.error
    assert res.result["caught"] == "NotAllowed"
    assert f"declared: legacy_api = {api.base_url}" in res.result["message"]


def test_cant_receive_a_huge_body_in_a_worker(api, eng):
    res = run(eng, CATCH.format(name="ResponseTooLarge"), f"{api.base_url}_big?bytes={BIG}&chunked=1", auth(api))
    assert res.ok, res.error
    assert res.result["caught"] == "ResponseTooLarge"


@pytest.mark.parametrize("expr", [
    "http._state", "http.get.__self__", "http.request.__globals__", "http.HttpError.__init__",
    "http.__class__", "http.get.__func__",
])
def test_cant_reach_the_client_or_transport_by_name(eng, expr):
    res = run(eng, f"import http\ndef script(url, headers, callback):\n    callback(None, str({expr}))\n", "", {})
    assert res.ok is False and res.error["code"] == "compile_error"  # the language layer refuses the name


@pytest.mark.parametrize("name", ["_state", "_transport", "_client", "__dict__", "_pool"])
def test_cant_reach_the_client_or_transport_with_getattr(eng, name):
    res = run(eng, f"import http\ndef script(url, headers, callback):\n    callback(None, str(getattr(http, {name!r})))\n",
              "", {})
    assert res.ok is False and res.error["code"] == "script_error"
    assert res.error["name"] in ("SandboxError", "AttributeError"), res.error


def test_answers_hold_plain_values_only(api, eng):
    """What a worker's script gets back survives a JSON round trip unchanged: plain values, no objects."""
    source = """
import http
import json
def script(url, headers, callback):
    r = http.get(url, headers=headers)
    callback(None, {"same": json.loads(json.dumps(r)) == r, "keys": sorted(r), "user": r["json"]})
"""
    res = run(eng, source, api.base_url + "users?email=alice@example.com", auth(api))
    assert res.ok, res.error
    assert res.result["same"] is True and res.result["keys"] == ["headers", "json", "status", "text", "url"]
    assert res.result["user"]["email"] == "alice@example.com"


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_api(tmp_path_factory):
    from tests.web.legacy_server import make_tls_files

    files = make_tls_files(tmp_path_factory.mktemp("tls"))
    server = start_legacy_server(certfile=files["srv.pem"], keyfile=files["srv.key"])
    server.files = files
    yield server
    server.stop()


def tls_tenant(tmp_path, api, base_url, ca_bundle=None):
    root = tmp_path / "tls"
    (root / "scripts").mkdir(parents=True)
    ca = f'ca_bundle = "{ca_bundle}"\n' if ca_bundle else ""
    (root / "tenant.toml").write_text(f'[[http]]\nname = "legacy_api"\nbase_url = "{base_url}"\n{ca}')
    tenant = load_tenant(root, resolve=lambda host, port: ("127.0.0.1",))
    ctx = context.WorkerContext(tenant="tls", http=tenant.http_policy())
    context.set_worker(ctx)
    context.set_current(context.Invocation(worker=ctx, deadline=time.monotonic() + 5, log=lambda s: None))
    return ctx


def _tls_get(api, url):
    return http.get(url + "users", params={"email": "alice@example.com"}, headers=auth(api))


@pytest.fixture
def cleanup_ctx():
    yield
    context.set_current(None)
    context.set_worker(None)


def test_tls_verified_against_the_endpoints_ca_bundle(tls_api, tmp_path, cleanup_ctx):
    base = f"https://localhost:{tls_api.port}/api/"
    ctx = tls_tenant(tmp_path, tls_api, base, tls_api.files["ca.pem"])
    try:
        assert _tls_get(tls_api, base)["json"]["id"] == 1
    finally:
        ctx.run_cleanups()


@pytest.mark.parametrize("case", ["no ca_bundle", "another CA", "name not in the certificate"])
def test_cant_skip_tls_verification(tls_api, tmp_path, cleanup_ctx, case):
    host = "127.0.0.1" if case == "name not in the certificate" else "localhost"
    base = f"https://{host}:{tls_api.port}/api/"
    ca = {"no ca_bundle": None, "another CA": tls_api.files["other-ca.pem"]}.get(case, tls_api.files["ca.pem"])
    ctx = tls_tenant(tmp_path, tls_api, base, ca)
    try:
        with pytest.raises(http.ConnectError, match="TLS verification of .* failed"):
            _tls_get(tls_api, base)
    finally:
        ctx.run_cleanups()


def test_cant_declare_a_ca_bundle_that_is_not_one(tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(TenantConfigError, match=r"http\[0\].ca_bundle: .*not a PEM CA bundle"):
        tls_tenant(tmp_path, None, "https://localhost:8443/api/", str(bogus))


def test_cant_request_outside_an_invocation(api, worker):
    context.set_current(None)  # the worker context stays: code run after its call ended
    with pytest.raises(http.NotAllowed, match="no HTTP requests outside an invocation"):
        http.get(api.base_url + "users", headers=auth(api))


def test_tls_from_a_confined_worker(tls_api, tmp_path):
    """The CA bundle travels in the policy (workers cannot read the operator's file): TLS works in a worker."""
    root = tmp_path / "webtls"
    (root / "scripts").mkdir(parents=True)
    base = f"https://localhost:{tls_api.port}/api/"
    (root / "tenant.toml").write_text(f'[[http]]\nname = "legacy_api"\nbase_url = "{base}"\n'
                                      f'ca_bundle = "{tls_api.files["ca.pem"]}"\n')
    tenant = load_tenant(root, resolve=lambda host, port: ("127.0.0.1",))
    cfg = EngineConfig(limits=TenantLimits(timeout=10.0), spares_per_tenant=0, state_dir=str(tmp_path / "state"))
    with Engine(cfg) as engine:
        engine.configure_tenant("webtls", limits=tenant.limits, data_dir=str(tenant.data_dir),
                                http=tenant.http_policy())
        source = ("import http\ndef script(url, headers, callback):\n"
                  "    callback(None, http.get(url, headers=headers)['json'])\n")
        res = engine.invoke("webtls", path="/t/webtls/s.py", source=source, function="script",
                            args=[base + "users?email=bob@example.com", auth(tls_api)], configuration={})
    assert res.ok, res.error
    assert res.result["email"] == "bob@example.com"


def test_cant_keep_an_endpoint_the_operator_removed(api, tmp_path):
    """A reload that drops an [[http]] endpoint retires the tenant's workers: the next call is refused."""
    tenant = make_tenant_dir(tmp_path / "webdrop", api.base_url)
    cfg = EngineConfig(limits=TenantLimits(timeout=10.0), spares_per_tenant=0, state_dir=str(tmp_path / "state"))
    source = ("import http\ndef script(url, headers, callback):\n    try:\n"
              "        callback(None, http.get(url, headers=headers)['status'])\n"
              "    except http.NotAllowed as error:\n        callback(None, 'NotAllowed')\n")
    url = api.base_url + "users?email=alice@example.com"
    with Engine(cfg) as engine:
        engine.configure_tenant("webdrop", limits=tenant.limits, data_dir=str(tenant.data_dir),
                                http=tenant.http_policy())

        def call():
            return engine.invoke("webdrop", path="/t/webdrop/s.py", source=source, function="script",
                                 args=[url, auth(api)], configuration={})
        first = call()
        assert first.ok and first.result == 200, first.error
        engine.configure_tenant("webdrop", limits=tenant.limits, data_dir=str(tenant.data_dir), http=())
        second = call()
        assert second.ok and second.result == "NotAllowed", second.error
        assert second.worker["pid"] != first.worker["pid"]  # a fresh worker with the new policy

# --------------------------------------------------------------------------- the OS layer agrees

RAW_CONNECT = """
import errno, socket
result = {}
for port in PORTS:
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect(("127.0.0.1", port))
        result[str(port)] = "connected"
    except OSError as e:
        result[str(port)] = errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
"""


def test_cant_connect_past_the_declared_http_endpoint_with_full_code_execution(api, tmp_path):
    """Layer: nftables egress on the tenant's uid (engine.egress), fed by ``Tenant.egress``.

    The tenant declares the API as ``[[http]]`` and lets Landlock allow a second
    API's port too; a hostile worker (plain Python, the language layer assumed
    broken) connects to the declared one, and its raw connect to the second,
    which is listening, is reset.
    """
    if os.geteuid() != 0:
        pytest.skip("per-tenant uids and nftables need a root supervisor")
    other = start_legacy_server()
    try:
        root = tmp_path / "webraw"
        (root / "scripts").mkdir(parents=True)
        (root / "tenant.toml").write_text(f'allowed_ports = [{other.port}]\n\n[[http]]\nname = "legacy_api"\n'
                                          f'base_url = "{api.base_url}"\n')
        tenant = load_tenant(root)
        assert tenant.egress == (("127.0.0.1", api.port),)
        assert set(tenant.limits.allowed_ports) == {api.port, other.port}
        cfg = EngineConfig(debug_exec=True, spares_per_tenant=0, state_dir=str(tmp_path / "state"))
        with Engine(cfg) as engine:
            engine.configure_tenant(tenant.name, **tenant.engine_settings())
            egress = engine.supervisor.egress
            assert egress is not None and egress.active, getattr(egress, "reason", "no egress layer")
            res = engine.debug_exec(tenant.name, RAW_CONNECT.replace("PORTS", repr((api.port, other.port))))
        assert res.ok, res.error
        assert res.result == {str(api.port): "connected", str(other.port): "ECONNREFUSED"}
    finally:
        other.stop()
