"""Logging setup: structlog events on stderr, for people or for log shippers.

Used by the CLI once per run. Every action the executor takes is one event,
and so is each run's summary. Console output is for a person at a terminal;
``--log-format json`` writes one JSON object per line for journald and co.
Standard output stays for plans and status, so it can be piped.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["console", "json"]


def configure(fmt: LogFormat, verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    processors: list[structlog.types.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True) if fmt == "json" else _drop_nothing,
    ]
    if fmt == "json":
        processors.append(structlog.processors.JSONRenderer(sort_keys=True))
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), pad_event_to=0,
                                                        pad_level=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def _drop_nothing(_logger: object, _name: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    return event
