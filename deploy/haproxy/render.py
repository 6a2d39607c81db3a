#!/usr/bin/env python3
"""Render ``haproxy.cfg`` for given nodes and a bind address.

The file beside this script is what goes to /etc/haproxy/haproxy.cfg; the
cluster test and the by-hand setup run HAProxy as a plain process (``haproxy
-db -f FILE``).  Both must run the *same* routing, so this script keeps no
second copy of it: it replaces the server lines between ``# nodes:begin`` and
``# nodes:end`` and the ``bind ...  # bind:line`` line, nothing else.

    python3 deploy/haproxy/render.py --bind 127.0.0.1:8080 \\
        --node 127.0.0.1:8081 --node 127.0.0.1:8082 > /tmp/sv-lb/haproxy.cfg
    haproxy -db -f /tmp/sv-lb/haproxy.cfg

``--bind fd@N`` makes HAProxy use an already listening socket inherited as
file descriptor N (the test binds it first, so the port is known and
accepting before HAProxy runs).  Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

CONFIG = Path(__file__).resolve().with_name("haproxy.cfg")
_NODES = re.compile(r"(?ms)^([ \t]*)# nodes:begin\n(.*?)^[ \t]*# nodes:end\n")
_BIND = re.compile(r"(?m)^([ \t]*)bind\s+\S+\s*# bind:line\s*$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]*:\d{1,5}$|^fd@\d+$")


class RenderError(ValueError):
    """The configuration lost its markers, or an address is not host:port."""


def _address(value: str, what: str) -> str:
    if not _ADDRESS.match(value):
        raise RenderError(f"{what} {value!r} is not host:port")
    return value


def render(text: str, nodes: list[str], bind: str | None) -> str:
    if not nodes:
        raise RenderError("give at least one --node")
    m = _NODES.search(text)
    if m is None:
        raise RenderError(f"{CONFIG.name}: no '# nodes:begin' ... '# nodes:end' block")
    indent = m.group(1)
    lines = "".join(f"{indent}server node{i} {_address(n, '--node')}\n" for i, n in enumerate(nodes, 1))
    text = text[: m.start()] + f"{indent}# nodes:begin\n{lines}{indent}# nodes:end\n" + text[m.end():]
    if bind is not None:
        text, count = _BIND.subn(lambda bm: f"{bm.group(1)}bind {_address(bind, '--bind')}  # bind:line", text)
        if count != 1:
            raise RenderError(f"{CONFIG.name}: expected one 'bind ...  # bind:line' line, found {count}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", action="append", default=[], required=True, help="a node's host:port (repeat)")
    parser.add_argument("--bind", help="where HAProxy listens: host:port or fd@N (default: as in the file)")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(render(CONFIG.read_text(encoding="utf-8"), args.node, args.bind))
    except RenderError as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
