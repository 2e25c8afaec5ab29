"""Type=notify: the real `dockd run` tells systemd READY=1, STATUS=, WATCHDOG=1 and STOPPING=1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from dockd.sdnotify import Notifier
from support.dock import dock_config, write_toml

RECIPIENT = "age1ad4k0fu659u8d5jec9egqlkplq7gdre274yqtqt8aa4ns7k2e5jqr0de97"


def count(messages: list[str], line: str) -> int:
    return sum(line in m.splitlines() for m in messages)


def receive(
    sock: socket.socket, line: str, messages: list[str], times: int = 1, timeout: float = 30.0
) -> None:
    """Collect datagrams until `times` of them hold the line `line`."""
    deadline = time.monotonic() + timeout
    while count(messages, line) < times:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            raise AssertionError(f"not {times}x {line!r} from dockd; got {messages}") from None


def test_dockd_run_notifies_systemd(tmp_path):
    config = write_toml(
        tmp_path / "dockd.toml",
        dock_config(
            tmp_path, "http://127.0.0.1:9/files/", RECIPIENT, public_key=None, confirm="offset"
        ),
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = tmp_path / "notify.sock"
        sock.bind(str(path))
        env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}
        env.pop("WATCHDOG_PID", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "dockd.cli", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        messages: list[str] = []
        try:
            receive(sock, "READY=1", messages)
            ready = next(m for m in messages if "READY=1" in m.splitlines())
            assert "STATUS=0 camera(s) docked, 0 clip(s) uploading, 0 safe to remove" in ready
            # From the event loop, every WATCHDOG_USEC/2: a blocked loop would stop these.
            receive(sock, "WATCHDOG=1", messages, times=3)
            proc.send_signal(signal.SIGTERM)
            receive(sock, "STOPPING=1", messages)
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_notifier_speaks_to_abstract_sockets_and_is_silent_outside_systemd():
    name = f"dockd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "30000000"})
        assert notifier.watchdog_seconds == 30.0
        assert notifier.status("bay 1: two\nlines")
        assert sock.recv(4096) == b"STATUS=bay 1: two lines"
    outside = Notifier({})
    assert not outside.enabled and not outside.ready("x") and outside.watchdog_seconds is None
    # WATCHDOG_PID naming another process: that process pings, not us.
    other = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.watchdog_seconds is None
