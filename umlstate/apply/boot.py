"""Waiting for the guests a pass started until each one answers.

Apply layer. Ready means answering: its mconsole answers, its kernel has
started init (it logs "Run ... as init process"; a quiet kernel counts once
it is still alive BOOT_GRACE seconds after mconsole answered), and every
address it was told (umlstate.<if>=) answers an ICMP echo from the host
side. mconsole answers long before the root file system is mounted, let
alone the network configured: cron, scripts and people take "ready" at its
word. All guests are waited for at once; the log is read from where this
boot began, bounded and sanitized (host.logs).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import structlog

from umlstate.host import icmp, identity, logs, mconsole
from umlstate.model.guestline import GuestLine
from umlstate.model.snapshot import Proc
from umlstate.plan import actions as A

log = structlog.get_logger("umlstate")

BOOT_TIMEOUT = 90.0  # seconds started guests may take to answer (apply --wait-timeout, $UMLSTATE_BOOT_TIMEOUT)
BOOT_GRACE = 3.0
NETWORK_UP = "umlstate: network up"  # what a guest's init says once its network is up (umlstate's images do)
@dataclass
class _Booting:
    proc: Proc
    line: GuestLine  # what it was told: its mconsole socket
    answer_at: tuple[str, ...]  # where it must answer; none: its own "network up" report must be in its log
    offset: int  # where this boot's output starts in its log
    action: A.AnyAction


class BootWait:
    def __init__(self, progress: bool, *, timeout: float = BOOT_TIMEOUT, answering: bool = True) -> None:
        self.progress = progress  # a live line on the terminal while guests boot
        self.timeout = timeout
        self.answering = answering  # also wait until the guest's addresses answer (not with --no-wait)
        self._booting: dict[str, _Booting] = {}

    @property
    def pending(self) -> bool:
        return bool(self._booting)

    def add(self, name: str, proc: Proc, line: GuestLine, offset: int, action: A.AnyAction, *,
            answer_at: tuple[str, ...] | None = None) -> None:
        """``answer_at``: None, every address it was told; empty, none the host can see (its report then)."""
        told = tuple(a for a in line.addresses if ":" not in a) if answer_at is None else answer_at  # IPv4's
        self._booting[name] = _Booting(proc, line, told, offset, action)

    def wait(self, logs_fd: int) -> list[tuple[A.AnyAction, str]]:
        """Until every guest started in this pass answers, or cannot: (the action that started it, why, with
        its log) for those that cannot. One guest's failure never stops the wait for the others."""
        failed: dict[str, str] = {}
        if not self._booting:
            return []
        began = time.monotonic()
        deadline = began + self.timeout
        waiting = dict(self._booting)
        answered: dict[str, float] = {}
        booted: set[str] = set()
        try:
            while waiting:
                for name, boot in list(waiting.items()):
                    output = logs.read_since(logs_fd, name, boot.offset)
                    if not identity.alive(boot.proc) or "Kernel panic" in output:
                        failed[name] = f"guest {name} exited right after it started; " + logs.failure_report(
                            logs_fd, name)
                        del waiting[name]
                        continue
                    if name not in answered and mconsole.answers(boot.line.mconsole, owner=boot.proc.uid, timeout=0.2):
                        answered[name] = time.monotonic()
                    if name in answered and ("as init process" in output
                                             or time.monotonic() - answered[name] > BOOT_GRACE):
                        booted.add(name)
                    if name in booted and self._up(boot, output):
                        self._clear_line()
                        told = list(boot.answer_at) if self.answering else []
                        log.info("guest ready", guest=name, pid=boot.proc.pid,
                                 seconds=round(time.monotonic() - began, 1),
                                 answering=f", answering at {', '.join(told)}" if told else "")
                        del waiting[name]
                if waiting and time.monotonic() > deadline:
                    for name in sorted(waiting):
                        at = ", ".join(waiting[name].answer_at)
                        what = ((f"did not answer at {at}" if at else f"never said {NETWORK_UP!r} in its log, and "
                                 "the host is on none of its subnets") if name in booted else "did not boot")
                        failed[name] = (f"guest {name} not ready within {self.timeout:g}s (apply --wait-timeout): "
                                        f"it {what}: " + logs.failure_report(logs_fd, name)
                                        + ("\n  hint: the guest's init must configure its network from umlstate."
                                           "<if>= on /proc/cmdline (README: Guests)" if name in booted else ""))
                    waiting.clear()
                if waiting:
                    if self.progress:
                        took = time.monotonic() - began
                        sys.stderr.write(f"\r  booting {', '.join(sorted(waiting))} ... {took:.1f}s \x1b[K")
                        sys.stderr.flush()
                    time.sleep(0.1)
            return [(self._booting[name].action, why) for name, why in sorted(failed.items())]
        finally:
            self._clear_line()
            self._booting.clear()

    def _up(self, boot: _Booting, output: str) -> bool:
        """Answering where the host can see it; where it cannot (a subnet without the host), its own report."""
        if not self.answering:
            return True
        if not boot.answer_at and boot.line.addresses:
            return NETWORK_UP in output
        return all(icmp.answers(a, 0.2) for a in boot.answer_at)

    def _clear_line(self) -> None:
        if self.progress:
            sys.stderr.write("\r\x1b[K")
