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

from umlstate.host.logs import sanitize

LogFormat = Literal["console", "json"]


def configure(fmt: LogFormat, verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    processors: list[structlog.types.Processor] = [structlog.processors.add_log_level]
    if fmt == "json":
        processors += [structlog.processors.TimeStamper(fmt="iso", utc=True),
                       structlog.processors.JSONRenderer(sort_keys=True)]
    else:
        processors += [_drop_said_elsewhere, _human]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


SYMBOLS = {"create": "+", "update": "~", "delete": "-", "replace": "-/+"}
# For people, the CLI's own closing line already says these; log shippers get them in JSON.
SAID_ELSEWHERE = {"run", "action failed"}
PHRASES = {
    "guest ready": "    guest {guest} ready in {seconds}s, pid {pid}{answering}",
    "guest stopped": "    guest {guest} stopped by {by} in {seconds}s (pid {pid})",
    "cad reboots": ("note: guest {guest} answers ctrl-alt-del with a reboot (the stock default), so umlstate "
                    "ended it at its restart, after its own clean shutdown. To stop it without the detour, map "
                    "ctrl-alt-del to power-off in the guest: ln -sf /lib/systemd/system/poweroff.target "
                    "/etc/systemd/system/ctrl-alt-del.target (README: Guests)"),
    "cad ignored": ("warning: guest {guest} ignored mconsole cad, so umlstate synced and remounted its disks "
                    "read-only (SysRq s, u) and halted it; its init should shut down on ctrl-alt-del "
                    "(README: Guests)"),
    "watch started": "watching; full resync every {resync_seconds:g}s",
    "watch stopping": "stopping on {signal}",
    "watch stopped": "stopped watching",
}


def _drop_said_elsewhere(_logger: object, _name: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    if event.get("event") in SAID_ELSEWHERE:
        raise structlog.DropEvent
    return event


def _human(_logger: object, _name: str, event: structlog.types.EventDict) -> str:
    """One short line per event, in the plan's own symbols, sanitized: values may be a guest user's words."""
    return sanitize(_line(event))


def _line(event: structlog.types.EventDict) -> str:
    level = event.pop("level", "info")
    name = event.pop("event", "")
    if name == "action":
        symbol = SYMBOLS.get(str(event.get("op")), "*")
        return f"{symbol:>3} {event.get('kind')} {event.get('target')}: {event.get('detail')}  done"
    if name in PHRASES:
        try:
            return PHRASES[name].format(**event)
        except (KeyError, ValueError):
            pass
    extras = " ".join(f"{k}={v}" for k, v in event.items())
    prefix = "" if level == "info" else f"{level}: "
    return f"{prefix}{name} {extras}".rstrip()
