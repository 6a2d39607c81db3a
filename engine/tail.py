"""``scriptvisor tail TENANT``: follow a tenant's live log stream (SSE) from a terminal.

Like ``wrangler tail`` or Auth0's real-time logs: one line per invocation
start and result, the script's log lines under its result.  When the stream
ends (the server drained or restarted, a proxy cut it) ``tail`` reconnects
with ``Last-Event-ID`` and the server replays what it still has; a ``gap``
event is shown when some events are gone.  Standard library only
(``http.client``): the operator's shell needs nothing beyond scriptvisor.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import sys
import time
import urllib.parse
from typing import IO, Any, Callable, Iterator

__all__ = ["TailError", "follow", "format_event", "read_events"]

#: Seconds between reconnection attempts: doubled after each failure, capped.
BACKOFF_START, BACKOFF_MAX = 0.5, 10.0
#: C0 (but tab) and C1 control characters (ESC starts terminal sequences; CR/LF forge lines).
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # tab stays a tab
#: No byte for this long (the server sends a heartbeat every 15 s): the connection is dead.
READ_TIMEOUT = 60.0


class TailError(Exception):
    """The server refused the stream (bad token, unknown tenant...): retrying will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def read_events(lines: Iterator[bytes]) -> Iterator[tuple[str | None, str, Any]]:
    """(id, event, data) per SSE frame; comments (heartbeats) are skipped."""
    ident: str | None = None
    event = "message"
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield ident, event, value
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value_text = line.partition(":")
        value_text = value_text[1:] if value_text.startswith(" ") else value_text
        if field == "id":
            ident = value_text
        elif field == "event":
            event = value_text
        elif field == "data":
            data.append(value_text)


def _printable(text: Any) -> str:
    """Tenant text for a terminal: control characters as ``\\xNN``, never raw escape sequences."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def format_event(event: str, data: Any) -> str:
    """One human line (plus indented log lines) for an event; tenant text is escaped (``_printable``)."""
    clock = time.strftime("%H:%M:%S")
    if not isinstance(data, dict):
        return f"{clock} {event} {_printable(data)}"
    what = _printable(data.get("script") or data.get("operation") or "?")
    inv = str(data.get("invocation_id", ""))[:12]
    if event == "start":
        return f"{clock} start  {what} {inv}"
    if event == "result":
        err = data.get("error") or {}
        outcome = "ok" if data.get("ok") else _printable(f"{err.get('code', 'error')}: {err.get('message', '')}")
        lines = [f"{clock} result {what} {inv} {outcome} ({float(data.get('duration_ms') or 0):.1f} ms)"]
        lines += [f"    | {_printable(line)}" for line in data.get("logs") or []]
        if data.get("logs_truncated"):
            lines.append(f"    | ({data['logs_truncated']} log lines left out: event over 64 KiB)")
        return "\n".join(lines)
    if event == "gap":
        return f"{clock} gap    some events were missed while disconnected (resumed after {data.get('last_event_id')})"
    return f"{clock} {_printable(event)} {json.dumps(data)}"


def _open(url: str, tenant: str, token: str, last_id: str | None) -> tuple[http.client.HTTPConnection, Any]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TailError(2, f"--url must look like http://host:port, got {url!r}")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=READ_TIMEOUT)
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    path = parts.path.rstrip("/") + f"/v1/tenants/{urllib.parse.quote(tenant, safe='')}/logs"
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        body = resp.read(64 * 1024)
        conn.close()
        try:
            message = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = body.decode("utf-8", "replace")[:200]
        hint = {401: " (pass the tenant's token: --token or SCRIPTVISOR_TOKEN; `scriptvisor token create`)",
                404: " (is the tenant folder under the server's --tenants?)"}.get(resp.status, "")
        if resp.status in (429, 503):
            raise ConnectionError(f"{resp.status}: {message}")
        raise TailError(resp.status, f"{resp.status}: {message}{hint}")
    return conn, resp


def follow(url: str, tenant: str, token: str, *, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr,
           as_json: bool = False, once: bool = False, sleep: Callable[[float], None] = time.sleep) -> int:
    """Print the tenant's events until interrupted (or, with ``once``, until the stream ends)."""
    last_id: str | None = None
    backoff = BACKOFF_START
    while True:
        try:
            conn, resp = _open(url, tenant, token, last_id)
            err.write(f"following {tenant} at {url} (Ctrl-C to stop)\n")
            err.flush()
            backoff = BACKOFF_START
            try:
                for ident, event, data in read_events(iter(resp.readline, b"")):
                    if ident:
                        last_id = ident
                    if as_json:
                        out.write(json.dumps({"id": ident, "event": event, "data": data}) + "\n")
                    else:
                        out.write(format_event(event, data) + "\n")
                    out.flush()
            finally:
                conn.close()
            reason = "the server ended the stream"
        except TailError as exc:
            err.write(f"error: {exc}\n")
            return 2
        except (OSError, http.client.HTTPException, socket.timeout) as exc:
            reason = f"connection problem: {exc}"
        if once:
            return 0
        err.write(f"{reason}; reconnecting in {backoff:g} s (resuming after {last_id or 'the start'})\n")
        err.flush()
        sleep(backoff)
        backoff = min(BACKOFF_MAX, backoff * 2)
