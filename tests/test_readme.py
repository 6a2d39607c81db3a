"""The README's examples, run as written (a doc test), so they stay true.

Every ```console block is a shell session: ``$ `` lines are commands (a
trailing backslash continues them), the lines after a command are its
expected output, where ``...`` matches anything and runs of spaces compare
equal.  ```python blocks run with this interpreter and must print what their
``# prints:`` comment says.  Blocks run in document order in one scratch
folder (with ``.venv`` pointing at the virtualenv running the tests).

An HTML comment just before a block changes how it runs:

* ``<!-- doctest: server -->`` -- the Quickstart's ``... && .venv/bin/scriptvisor
  serve``: that server is started as written and the session's commands run
  against it.  Its one deviation: ``SCRIPTVISOR_PORT=0`` in its environment
  (a free port; port 8080 may be taken on a test machine), and the session's
  ``http://127.0.0.1:8080`` is rewritten to the port it printed.  The
  ``bash scripts/install.sh`` before ``&&`` is what ``scripts/test.sh`` (the
  second Quickstart command, and CI) runs first; it is checked to be there.
  The session also gets its own ``XDG_RUNTIME_DIR`` (the engine's default
  state directory), so tests running at the same time cannot share its
  tenant uid map.
* ``<!-- doctest: background -->`` -- a command that follows something
  (``tail``): started in the background, its expected lines are read after
  the next block has run.
* ``<!-- doctest: skip (why) -->`` -- not run (the test suite itself).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass
class Command:
    text: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    kind: str  # console | python
    directive: str
    body: str
    line: int

    def commands(self) -> list[Command]:
        out: list[Command] = []
        lines = self.body.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                text = line[2:]
                while text.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text += "\n" + lines[i]
                out.append(Command(text))
            elif out:
                out[-1].expected.append(line)
            i += 1
        return out


def blocks(text: str) -> list[Block]:
    found = []
    lines = text.splitlines()
    i = 0
    directive = ""
    while i < len(lines):
        line = lines[i]
        m = re.match(r"<!-- doctest: (.*?) -->$", line.strip())
        if m:
            directive = m.group(1)
        elif line.startswith("```console") or line.startswith("```python"):
            kind = line[3:].strip()
            start = i
            body = []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            found.append(Block(kind, directive, "\n".join(body), start + 1))
            directive = ""
        elif line.strip():
            directive = ""
        i += 1
    return found


def _pattern(expected: str) -> re.Pattern[str]:
    parts = [re.escape(" ".join(p.split()) if p.strip() else p) for p in expected.split("...")]
    return re.compile(".*".join(parts), re.S)


def assert_output(where: str, expected: list[str], actual: str) -> None:
    got = [" ".join(line.split()) for line in actual.splitlines()]
    want = [line for line in expected]
    assert len(got) == len(want), f"{where}: expected {len(want)} line(s), got:\n{actual}"
    for w, g in zip(want, got):
        assert _pattern(w).fullmatch(g), f"{where}: {g!r} does not match {w!r}"


class _Lines:
    """A pipe read line by line in a thread (so a read can time out without polling)."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self.q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            self.q.put(line)
        self.q.put(None)

    def get(self, timeout: float = 30) -> str | None:
        return self.q.get(timeout=timeout)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    venv = Path(sys.executable).parent.parent  # the virtualenv running the tests
    (tmp_path / ".venv").symlink_to(venv)
    return tmp_path


@pytest.mark.slow
def test_readme_examples_run_as_written(scratch: Path) -> None:
    found = blocks(README.read_text(encoding="utf-8"))
    assert [b.directive for b in found[:2]] == ["server", "skip (it is the test suite that runs this README)"]
    # its own engine state (tenant uid map, scratch mounts): other tests running
    # at the same time use tenants named "acme" too
    runtime = Path(tempfile.mkdtemp(prefix="sv-readme-", dir="/tmp"))
    runtime.chmod(0o755)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    started: list[subprocess.Popen[str]] = []
    url = DEFAULT_URL
    pending: tuple[subprocess.Popen[str], _Lines, Block] | None = None
    ran = {"console": 0, "python": 0}
    try:
        for block in found:
            where = f"README.md:{block.line}"
            if block.directive.startswith("skip"):
                continue
            if block.directive == "server":
                [cmd] = block.commands()
                install, _, serve = cmd.text.partition(" && ")
                assert install == "bash scripts/install.sh"
                assert "bash scripts/install.sh" in (ROOT / "scripts" / "test.sh").read_text()
                proc = subprocess.Popen(["bash", "-c", serve], cwd=scratch, env=dict(env, SCRIPTVISOR_PORT="0"),
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                        start_new_session=True)
                started.append(proc)
                first = proc.stdout.readline()  # blocks until it listens (or dies)
                assert "listening on " in first, first
                url = first.split("listening on ", 1)[1].strip()
                # what it prints next is the curl command the Quickstart promises
                assert "curl" in proc.stdout.readline() + proc.stdout.readline()
                continue
            if block.kind == "python":
                code = block.body
                m = re.search(r"^# prints: (.*)$", code, re.M)
                out = subprocess.run([sys.executable, "-c", code], cwd=scratch, env=env, capture_output=True,
                                     text=True, timeout=120)
                assert out.returncode == 0, f"{where}: {out.stderr}"
                if m:
                    assert_output(where, [m.group(1)], out.stdout)
                ran["python"] += 1
                continue
            if block.directive == "background":
                [cmd] = block.commands()
                proc = subprocess.Popen(["bash", "-c", cmd.text.replace(DEFAULT_URL, url)], cwd=scratch, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
                started.append(proc)
                proc.stderr.readline()  # "following ..." once it is subscribed
                pending = (proc, _Lines(proc.stdout), block)
                continue
            for cmd in block.commands():
                out = subprocess.run(["bash", "-c", cmd.text.replace(DEFAULT_URL, url)], cwd=scratch, env=env,
                                     capture_output=True, text=True, timeout=120)
                assert out.returncode == 0, f"{where}: {cmd.text}\n{out.stderr}"
                assert_output(f"{where}: {cmd.text.splitlines()[0]}", cmd.expected, out.stdout)
            ran["console"] += 1
            if pending is not None:
                proc, lines, bg = pending
                [bg_cmd] = bg.commands()
                got = "".join(lines.get() or "" for _ in bg_cmd.expected)
                assert_output(f"README.md:{bg.line}", bg_cmd.expected, got)
                pending = None
    finally:
        for proc in reversed(started):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        shutil.rmtree(runtime, ignore_errors=True)
    assert ran["console"] >= 6 and ran["python"] >= 1


def test_readme_links_every_doc() -> None:
    text = README.read_text(encoding="utf-8")
    docs = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md"))
    readmes = sorted(p.relative_to(ROOT).as_posix() for pattern in ("*/README.md", "*/*/README.md", "*/*/*/README.md")
                     for p in ROOT.glob(pattern)
                     if not any(part.startswith(".") or part == "node_modules" for part in p.relative_to(ROOT).parts))
    linked = set(re.findall(r"\]\(([^)#]+)", text))
    missing = [d for d in docs + readmes if d not in linked and d.removesuffix("/README.md") not in linked]
    assert missing == []
    for target in linked:
        if not target.startswith(("http", "/")):
            assert (ROOT / target).exists(), f"README links a missing file: {target}"


def _answered_statuses() -> dict[str, set[int]]:
    """error.code -> the statuses the server's code answers it with (read from the source)."""
    from scriptvisor.engine.errors import CODES

    found: dict[str, set[int]] = {}
    for path in sorted((ROOT / "engine" / "server").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        pairs = re.findall(r'(?:_problem|RequestProblem|_refusal)\(\s*(\d{3}),\s*(?:"[^"]*",\s*)?"([a-z_]+)"', text)
        pairs += [(s, c) for c, s in re.findall(r'"code": "([a-z_]+)"[^\n]*\}\}, (\d{3})\)', text)]
        for status, code in pairs:
            found.setdefault(code, set()).add(int(status))
        if path.name == "app.py" and "status = 504" in text:
            found.setdefault("engine_unavailable", set()).add(504)  # the shared user store did not answer
    for code, cls in CODES.items():
        if cls.http_status != 200:
            found.setdefault(code, set()).add(cls.http_status)
    return found


def test_readme_error_table_says_what_the_server_answers() -> None:
    """Every row of "Request problems" names a status the server really answers for its codes."""
    text = README.read_text(encoding="utf-8")
    table = text.split("| status | `error.code` | what to do |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| (\d{3}) \| ([^|]+) \|", table, flags=re.M)
    assert len(rows) >= 10
    answered = _answered_statuses()
    wrong = []
    for status, cell in rows:
        for code in re.findall(r"`([a-z_]+)`", cell):
            assert code in answered, f"README names error.code {code!r}, which the server never answers"
            if int(status) not in answered[code]:
                wrong.append(f"{code}: README says {status}, the server answers {sorted(answered[code])}")
    assert wrong == []
