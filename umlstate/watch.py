"""``umlstate watch``: a long-running reconciler, the same pipeline in a loop.

Sits on top of observe -> plan -> apply. It wakes up on what can mean drift
and runs one full pass (observe, plan, apply, verify) under the topology's
lock, taken per pass so that cron runs and people are never starved:

- rtnetlink events in the namespace (links, IPv4 addresses, neighbours,
  proxy entries among them), on a raw socket subscribed to those groups: an
  event is only a trigger, so nothing is decoded;
- the exit of a switch or guest process it knows of (a cheap pid check every
  PROCESS_POLL seconds; its own children are reaped as they exit);
- a full resync every ``resync`` seconds, as a backstop.

Triggers are debounced, so a burst of events (an `ip link del` emits several)
costs one pass; the events caused by its own changes cost one more, empty
pass. SIGTERM and SIGINT end it cleanly, between passes.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType

import structlog

from umlstate import processes
from umlstate.snapshot import Proc, Snapshot

log = structlog.get_logger("umlstate")

# linux/rtnetlink.h multicast groups (the legacy bit mask form).
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
RTMGRP_IPV4_IFADDR = 0x10
DEBOUNCE = 0.15
PROCESS_POLL = 0.5


class Watcher:
    def __init__(self, reconcile: Callable[[], Snapshot | None], resync: float = 300.0) -> None:
        """``reconcile`` runs one pass and returns the snapshot it ended with (None on failure)."""
        self.reconcile = reconcile
        self.resync = resync
        self.stopping = False
        self.known: list[Proc] = []

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("watch stopping", signal=signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        events.bind((0, RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR))
        events.setblocking(False)
        log.info("watch started", resync_seconds=self.resync)
        try:
            self._pass("start")
            next_resync = time.monotonic() + self.resync
            while not self.stopping:
                reason = self._wait(events, until=next_resync)
                if self.stopping:
                    break
                if reason == "resync":
                    next_resync = time.monotonic() + self.resync
                self._pass(reason)
        finally:
            events.close()
        log.info("watch stopped")
        return 0

    def _pass(self, reason: str) -> None:
        start = time.monotonic()
        snapshot = self.reconcile()
        if snapshot is not None:
            procs = [s.proc for s in snapshot.switches.values()] + [g.proc for g in snapshot.guests.values()]
            self.known = [p for p in procs if p is not None]
        log.debug("watch pass", reason=reason, seconds=round(time.monotonic() - start, 3))

    def _wait(self, events: socket.socket, until: float) -> str:
        """Block until something may have drifted; return why."""
        while not self.stopping:
            now = time.monotonic()
            if now >= until:
                return "resync"
            try:
                ready, _, _ = select.select([events], [], [], min(PROCESS_POLL, until - now))
            except InterruptedError:
                continue
            if ready:
                _drain(events, DEBOUNCE)
                return "netlink event"
            self._reap()
            gone = [p for p in self.known if not processes.alive(p)]
            if gone:
                return f"process {gone[0].pid} exited"
        return "stop"

    @staticmethod
    def _reap() -> None:
        """Reap the switches and guests this watcher spawned and that have exited."""
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass


def _drain(events: socket.socket, quiet: float) -> None:
    """Swallow a burst of events until the socket has been quiet for ``quiet`` seconds."""
    while True:
        try:
            while events.recv(1 << 16):
                pass
        except BlockingIOError:
            pass
        ready, _, _ = select.select([events], [], [], quiet)
        if not ready:
            return
