"""systemd's notify protocol (sd_notify(3)): READY=1, WATCHDOG=1, STATUS=…, STOPPING=1.

Hand-written on purpose: it is one datagram on the AF_UNIX socket named by $NOTIFY_SOCKET (a
leading '@' is the abstract namespace), and the PyPI packages for it (sdnotify, systemd-python)
add a dependency (or a C extension needing libsystemd headers) for these twenty lines. Outside
systemd (no $NOTIFY_SOCKET) every call is a no-op, so `dockd run` behaves the same by hand.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable


class Notifier:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID, when set, names the process systemd watches: a child must not ping.
        wanted = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_seconds: float | None = int(usec) / 1e6 if wanted else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *fields: str) -> bool:
        """Send 'KEY=value' lines in one datagram; False if not under systemd or it failed."""
        if not self._address:
            return False
        message = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self._address)
        except OSError:  # systemd gone or socket full: the watchdog will say so if it matters
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1", "STATUS=stopping")


async def keep_alive(notifier: Notifier, summary: Callable[[], str]) -> None:
    """WATCHDOG=1 from the event loop itself (a blocked loop stops the pings, and systemd
    restarts the service), at half the watchdog period; STATUS= whenever the summary changes."""
    interval = notifier.watchdog_seconds / 2 if notifier.watchdog_seconds else 5.0
    interval = min(interval, 5.0)
    last = ""
    while True:
        if notifier.watchdog_seconds:
            notifier.watchdog()
        try:
            line = summary()
        except Exception as exc:  # a summary bug must not stop the watchdog pings
            line = f"status unavailable: {exc!r}"[:200]
        if line != last:
            notifier.status(line)
            last = line
        await asyncio.sleep(interval)
