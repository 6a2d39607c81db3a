"""systemd's readiness protocol (``Type=notify``), written by hand: no libsystemd.

systemd passes ``$NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for the
abstract namespace); the service sends newline-separated ``KEY=VALUE``
datagrams to it: ``READY=1`` once the listener is bound and the tenants are
loaded, ``STOPPING=1`` when the drain begins, ``RELOADING=1``/``READY=1``
around a log reopen, ``STATUS=`` for ``systemctl status``.

``take_socket()`` reads the variable once and removes it from the
environment, so nothing the server starts (the zygote, and through it the
workers) inherits the address of the service manager's socket.  Without
``$NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import os
import socket

__all__ = ["Notifier", "take_socket"]


def take_socket() -> str | None:
    """``$NOTIFY_SOCKET``, removed from this process's environment."""
    return os.environ.pop("NOTIFY_SOCKET", None) or None


class Notifier:
    __slots__ = ("_address",)

    def __init__(self, address: str | None) -> None:
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        # only AF_UNIX paths and abstract names (systemd's vsock form is not used here)
        self._address = address if address and address[0] in "/\0" else None

    @property
    def active(self) -> bool:
        return self._address is not None

    def send(self, **fields: object) -> bool:
        """Send one datagram, e.g. ``send(READY=1, STATUS="listening")``; False if it could not."""
        if self._address is None:
            return False
        text = "".join(f"{key}={str(value).replace(chr(10), ' ')}\n" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(text.encode("utf-8"), self._address)
        except OSError:
            return False  # the service manager went away: nothing to tell it
        return True
