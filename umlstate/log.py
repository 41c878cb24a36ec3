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
        processors.append(_human)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


SYMBOLS = {"create": "+", "update": "~", "delete": "-", "replace": "-/+"}


def _human(_logger: object, _name: str, event: structlog.types.EventDict) -> str:
    """One short line per event, in the plan's own symbols: `  + tap uml0  done`."""
    level = event.pop("level", "info")
    name = event.pop("event", "")
    if name == "action":
        symbol = SYMBOLS.get(str(event.get("op")), "*")
        return f"{symbol:>3} {event.get('kind')} {event.get('target')}: {event.get('detail')}  done"
    if name == "run":
        return (f"run {event.get('result')}: {event.get('added', 0)} added, {event.get('changed', 0)} changed, "
                f"{event.get('destroyed', 0)} destroyed in {event.get('seconds', 0)}s")
    extras = " ".join(f"{k}={v}" for k, v in event.items() if k != "timestamp")
    prefix = "" if level == "info" else f"{level}: "
    return f"{prefix}{name} {extras}".rstrip()


def _drop_nothing(_logger: object, _name: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    return event
