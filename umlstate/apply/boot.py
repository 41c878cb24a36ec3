"""Waiting for the guests a pass started until each one has booted.

Apply layer. Booted: its mconsole answers and its kernel has started init
(it logs "Run ... as init process"), or, for a quiet kernel, it is still
alive BOOT_GRACE seconds after mconsole answered. mconsole answers early,
before the root file system is mounted, so its answer alone would call a
guest ready that is about to panic. All guests are waited for at once; the
log is read from where this boot began, bounded and sanitized (host.logs).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import structlog

from umlstate.errors import ActionError
from umlstate.host import logs, mconsole, processes
from umlstate.model.snapshot import Proc
from umlstate.plan import actions as A

log = structlog.get_logger("umlstate")

BOOT_TIMEOUT = float(os.environ.get("UMLSTATE_BOOT_TIMEOUT", "90"))
BOOT_GRACE = 3.0


@dataclass
class _Booting:
    proc: Proc
    mconsole: str | None
    offset: int  # where this boot's output starts in its log
    action: A.AnyAction


class BootWait:
    def __init__(self, progress: bool) -> None:
        self.progress = progress  # a live line on the terminal while guests boot
        self._booting: dict[str, _Booting] = {}

    @property
    def pending(self) -> bool:
        return bool(self._booting)

    @property
    def last(self) -> A.AnyAction:
        """The action blamed when booting fails: the last start."""
        return list(self._booting.values())[-1].action

    def add(self, name: str, proc: Proc, mconsole_path: str | None, offset: int, action: A.AnyAction) -> None:
        self._booting[name] = _Booting(proc, mconsole_path, offset, action)

    def wait(self, logs_fd: int) -> None:
        """Until every guest started in this pass has booted; ActionError with its log when one cannot."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        waiting = dict(self._booting)
        answered: dict[str, float] = {}
        try:
            while waiting:
                for name, boot in list(waiting.items()):
                    output = logs.read_since(logs_fd, name, boot.offset)
                    if not processes.alive(boot.proc) or "Kernel panic" in output:
                        raise ActionError(f"guest {name} exited right after it started; "
                                          + logs.failure_report(logs_fd, name))
                    if name not in answered and boot.mconsole and mconsole.answers(boot.mconsole, owner=boot.proc.uid,
                                                                                  timeout=0.2):
                        answered[name] = time.monotonic()
                    if name in answered and ("as init process" in output
                                             or time.monotonic() - answered[name] > BOOT_GRACE):
                        self._clear_line()
                        log.info("guest ready", guest=name, pid=boot.proc.pid)
                        del waiting[name]
                if waiting and time.monotonic() > deadline:
                    name = sorted(waiting)[0]
                    raise ActionError(f"guest(s) {', '.join(sorted(waiting))} did not answer mconsole within "
                                      f"{BOOT_TIMEOUT:g}s (UMLSTATE_BOOT_TIMEOUT); guest {name}: "
                                      + logs.failure_report(logs_fd, name))
                if waiting:
                    if self.progress:
                        took = time.monotonic() - deadline + BOOT_TIMEOUT
                        sys.stderr.write(f"\r  booting {', '.join(sorted(waiting))} ... {took:.1f}s \x1b[K")
                        sys.stderr.flush()
                    time.sleep(0.1)
        finally:
            self._clear_line()
            self._booting.clear()

    def _clear_line(self) -> None:
        if self.progress:
            sys.stderr.write("\r\x1b[K")
