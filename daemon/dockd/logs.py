"""Structured logging: JSON lines under systemd (journald), a readable console on a terminal.

Every module logs through `structlog.get_logger()` with event-specific keys. Context comes from
`structlog.contextvars`: the daemon binds `dock` once, and each clip's task binds `clip`,
`camera` and `bay` (`pipeline.process`), so every event of that clip carries them, including
events logged by the transport and crypto modules it calls.

Secrets never reach a log line: tokens live only in request headers (never logged), key material
only in `EncryptionSecrets` (whose repr hides it) and the sealed journal column; the test
`tests/status/test_logs.py` runs a real authenticated upload at debug level and checks.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure(
    *, json: bool | None = None, level: str = "info", stream: TextIO | None = None
) -> None:
    """Set up structlog once per process. `json=None` picks JSON unless the stream is a terminal.

    `stream` defaults to stderr (journald collects it under systemd).
    """
    out = stream if stream is not None else sys.stderr
    if json is None:
        json = not out.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
