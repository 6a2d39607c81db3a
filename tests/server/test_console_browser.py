"""The console in a real headless Chromium (Debian's ``chromium`` + ``chromedriver``).

Few, bounded tests (one browser and one server per module): a tenant edits,
checks, saves, tries and rolls back a script while its log line arrives live;
an operator sees a worker appear and recycles it; tenant text is never HTML;
a tenant token cannot open another tenant.  Every wait is a WebDriverWait on
a condition of the page (no sleeps).

``SCRIPTVISOR_SCREENSHOTS=DIR`` also saves the two views as PNG files there
(that is how ``docs/console-*.png`` are made: ``bash scripts/screenshots.sh``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from scriptvisor.engine.server import auth
from server_harness import ADMIN_TOKEN, Server, make_tenant, start_server
from tests.services import unavailable

pytestmark = pytest.mark.slow

GREET = "def greet(name, callback):\n    print('greeting', name)\n    callback(None, 'v1 ' + name)\n"
BROKEN = "def greet(name, callback):\n    import os\n    callback(None, 'v2 ' + name)\n"
FIXED = "def greet(name, callback):\n    print('saved v2 says hi to', name)\n    callback(None, 'v2 ' + name)\n"
PAYLOAD = "<img src=x onerror=\"document.title='pwned'\">"
XSS = f"def shout(callback):\n    print({PAYLOAD!r})\n    callback(None, {PAYLOAD!r})\n"
GET_USER = ("def get_user(email, callback):\n    print('looking up', email)\n"
            "    callback(None, {'user_id': '7', 'email': email})\n")
WAIT = 30


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("console-browser")
    make_tenant(root, "acme", "[editing]\nenabled = true\n",
                {"greet.py": GREET, "shout.py": XSS, "get_user.py": GET_USER})
    make_tenant(root, "other", "", {"secretive.py": "def secretive(callback):\n    callback(None, 1)\n"})
    make_tenant(root, "quiet", "", {"ping.py": "def ping(callback):\n    callback(None, 'pong')\n"})
    tokens = {name: auth.create_token(root, name) for name in ("acme", "other", "quiet")}
    srv = start_server(root, root.parent / "console-browser-oplog.jsonl", tokens)
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.proc.stderr.read()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        unavailable("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (the test extra)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    profile = tempfile.mkdtemp(prefix="sv-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1250", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=opts)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# -- helpers --------------------------------------------------------------------

def _wait(driver: Any, condition: Any, message: str = "") -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the operator view redraws every 2 s: an element found just before a redraw goes stale
    return WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)


def _by_id(driver: Any, ident: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, ident)


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _text_in(ident: str, text: str) -> Any:
    return lambda d: text in _by_id(d, ident).text


def sign_in(driver: Any, site: Server, token: str) -> None:
    # forget the previous session from a same-origin page that runs no console code
    # (the console itself could store its token again from a sign-in still in flight)
    driver.get(site.url + "/healthz")
    driver.execute_script("sessionStorage.clear();")
    driver.get(site.url + "/console")
    _wait(driver, lambda d: _by_id(d, "login").is_displayed(), "login form")
    field = _by_id(driver, "token")
    field.send_keys(token)
    _by_id(driver, "signin").click()
    _wait(driver, lambda d: not _by_id(d, "login").is_displayed(), "signed in")


def replace_source(driver: Any, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    editor = _by_id(driver, "source")
    editor.click()
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys(Keys.DELETE)
    editor.send_keys(text)


def screenshot(driver: Any, name: str) -> None:
    folder = os.environ.get("SCRIPTVISOR_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def _worker_rows(driver: Any, tenant: str) -> list[tuple[str, str]]:
    """(pid, state) of the worker rows shown for ``tenant``, read in one go (no stale elements)."""
    return [tuple(row) for row in driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((r) => [r.dataset.pid, r.children[1].textContent]);",
        f'tr[data-workers-of="{tenant}"] tr[data-pid]')]


def _tenant_ready(driver: Any, script: str) -> None:
    _wait(driver, lambda d: _by_id(d, "script-title").text == f"{script}.py", f"{script} loaded")
    _wait(driver, _text_in("check-state", "check ok"), "first check")
    _wait(driver, _text_in("stream-state", "live"), "log stream open")


# -- tests ----------------------------------------------------------------------

def test_tenant_edits_checks_saves_tries_sees_its_log_live_and_rolls_back(browser: Any, site: Server) -> None:
    d = browser
    path = site.tenants_dir / "acme" / "scripts" / "greet.py"
    sign_in(d, site, site.tokens["acme"])
    assert d.execute_script("return location.hash") == "#tenant/acme"
    _tenant_ready(d, "get_user")
    assert [b.text for b in _css(d, "#script-list button")] == ["get_user", "greet", "shout"]

    # a connection operation: the response exactly as the API returned it
    from selenium.webdriver.support.ui import Select

    Select(_by_id(d, "op-select")).select_by_visible_text("get_user")
    _by_id(d, "op-arg-email").send_keys('"ann@example.com"')
    _by_id(d, "try-op").click()
    _wait(d, _text_in("try-status", "HTTP 200"), "operation answered")
    assert _css(d, '#try-summary dd[data-key="scripts_called"]')[0].text == "get_user"
    assert '"user_id": "7"' in _by_id(d, "try-output").text

    _css(d, '#script-list button[data-script="greet"]')[0].click()
    _tenant_ready(d, "greet")

    # a check error shows at its line while typing, and goes away when fixed
    replace_source(d, BROKEN)
    _wait(d, lambda d: _css(d, '#gutter div[data-line="2"].err'), "error marked at line 2")
    problem = _css(d, "#problems li")[0].text
    assert problem.startswith("line 2, column") and 'import of "os" is not allowed' in problem
    assert not _css(d, '#gutter div[data-line="1"].err') and not _css(d, '#gutter div[data-line="3"].err')
    replace_source(d, FIXED)
    _wait(d, _text_in("check-state", "check ok"), "fixed source checks")
    assert not _css(d, "#gutter div.err") and not _css(d, "#problems li")

    # save: written to the tenant folder, the old content kept as version 1
    _by_id(d, "save").click()
    _wait(d, _text_in("save-state", "previous content is version 1"), "saved")
    assert path.read_text() == FIXED
    assert _css(d, '#versions li[data-version="1"] button')

    # try it: the result, and its log line arriving on the live stream
    args = _by_id(d, "try-args")
    args.clear()
    args.send_keys('["ann"]')
    _by_id(d, "try-script").click()
    _wait(d, _text_in("try-status", "HTTP 200"), "script answered")
    assert '"result": "v2 ann"' in _by_id(d, "try-output").text
    assert _css(d, '#try-summary dd[data-key="duration_ms"]')
    _wait(d, _text_in("log-lines", "saved v2 says hi to ann"), "log line arrived live")
    _wait(d, lambda d: any("greet" in r.text and "ok" in r.text for r in _css(d, "#invocations tr")),
          "recent invocation listed")

    screenshot(d, "console-tenant.png")

    # filter and pause act on the live view
    _by_id(d, "log-filter").send_keys("nothing-matches-this")
    assert all(not li.is_displayed() for li in _css(d, "#log-lines li"))
    _by_id(d, "log-filter").clear()
    _by_id(d, "log-filter").send_keys("says hi")
    assert any(li.is_displayed() for li in _css(d, "#log-lines li"))
    _by_id(d, "log-filter").clear()
    _by_id(d, "log-pause").click()
    with site.client("acme") as c:
        assert c.post("/v1/tenants/acme/scripts/greet", json={"args": ["bo"]}).json()["result"] == "v2 bo"
    _wait(d, _text_in("log-pause", "Resume (3 new)"), "held while paused: start, log line, result")
    assert "to bo" not in _by_id(d, "log-lines").text
    _by_id(d, "log-pause").click()
    _wait(d, _text_in("log-lines", "saved v2 says hi to bo"), "shown on resume")

    # one click rolls back to version 1, on disk and in the editor
    _css(d, '#versions li[data-version="1"] button')[0].click()
    _wait(d, _text_in("save-state", "rolled back to version 1"), "rolled back")
    assert path.read_text() == GREET
    assert _by_id(d, "source").get_attribute("value") == GREET
    _by_id(d, "try-script").click()
    _wait(d, _text_in("try-output", '"result": "v1 ann"'), "old version runs again")


def test_cant_run_tenant_text_as_html_in_the_console(browser: Any, site: Server) -> None:
    d = browser
    sign_in(d, site, site.tokens["acme"])
    _tenant_ready(d, "get_user")
    _css(d, '#script-list button[data-script="shout"]')[0].click()
    _tenant_ready(d, "shout")
    _by_id(d, "try-script").click()
    _wait(d, _text_in("log-lines", PAYLOAD), "the payload shows as text in the live log")
    assert PAYLOAD.replace('"', '\\"') in _by_id(d, "try-output").text  # JSON-escaped in the raw body
    assert _by_id(d, "source").get_attribute("value") == XSS
    # stopped by the console's rendering (textContent only): no element was made from it
    assert d.execute_script("return document.querySelectorAll('img').length") == 0
    assert d.title != "pwned"


def test_cant_open_another_tenant_with_a_tenant_token(browser: Any, site: Server) -> None:
    d = browser
    sign_in(d, site, site.tokens["acme"])
    _tenant_ready(d, "get_user")
    d.execute_script("location.hash = '#tenant/other'")
    _wait(d, _text_in("notice", "403 forbidden"), "refused")
    assert not _by_id(d, "tenant-view").is_displayed()
    assert "secretive" not in d.find_element("tag name", "body").text
    # the same token, from inside the page, on the other tenant's and the operator's routes
    statuses = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const h = {"Authorization": "Bearer " + sessionStorage.getItem("scriptvisor.token")};
        Promise.all(["/v1/tenants/other/scripts", "/v1/tenants/other/invocations", "/v1/admin/tenants"]
            .map((u) => fetch(u, {headers: h}).then((r) => r.status))).then(done);
    """)
    # stopped by the server's token check (auth.decide): 403 forbidden on every route
    assert statuses == [403, 403, 403]
    assert d.execute_script("return document.cookie") == ""
    assert site.tokens["acme"] not in d.current_url


def test_operator_sees_a_worker_appear_and_recycles_it(browser: Any, site: Server) -> None:
    d = browser
    sign_in(d, site, ADMIN_TOKEN)
    assert d.execute_script("return location.hash") == "#operator"
    _wait(d, lambda d: _css(d, 'tr[data-tenant="quiet"]'), "tenant listed")
    assert not _css(d, 'tr[data-workers-of="quiet"] tr[data-pid]')
    with site.client("quiet") as c:
        assert c.post("/v1/tenants/quiet/scripts/ping", json={}).json()["result"] == "pong"
        # a failed call, so the operator view has a last error and a second outcome to draw
        assert c.post("/v1/tenants/quiet/scripts/ping", json={"args": [1]}).json()["error"]["code"] == "script_error"
    _wait(d, lambda d: _css(d, 'tr[data-workers-of="quiet"] tr[data-pid]'), "worker appeared")
    before = {pid for pid, _state in _worker_rows(d, "quiet")}
    _wait(d, _text_in("tenant-rows", "script_error"), "last error shown")
    _wait(d, lambda d: _css(d, "#chart-outcomes rect"), "outcome chart drawn")
    _wait(d, lambda d: _css(d, "#chart-latency path"), "latency chart drawn")
    screenshot(d, "console-operator.png")

    _wait(d, lambda d: _css(d, 'button[data-recycle="quiet"]')[0].click() is None, "recycle clicked")

    def replaced(d: Any) -> bool:
        live = {pid for pid, state in _worker_rows(d, "quiet") if state != "exiting"}
        return bool(live) and not (live & before)

    _wait(d, replaced, "workers replaced")
    assert any(e.get("event") == "tenant_recycle" and e.get("tenant") == "quiet" for e in site.oplog())
