"""``umlstate watch``: a long-running reconciler, the same pipeline in a loop.

Sits on top of observe -> plan -> apply. It wakes up on what can mean drift
and runs one full pass (observe, plan, apply, verify) under the topology's
lock, taken per pass so that cron runs and people are never starved:

- rtnetlink events in the namespace (links, IPv4 addresses, neighbours,
  proxy entries among them), on a raw socket subscribed to those groups: an
  event is only a trigger, so nothing is decoded;
- the exit of a switch or guest process it knows of (a cheap pid check every
  PROCESS_POLL seconds; its own children are reaped as they exit);
- a full resync every ``resync`` seconds, as a backstop;
- after a failed pass (a guest that panicked again at once, say), a retry
  that backs off from RETRY_FIRST to RETRY_LONGEST, as a controller requeues;
- the end of a crash-looping guest's backoff (the plan's, recorded so that
  cron honours it too), while every other repair goes on at once.

Triggers are debounced, so a burst of events (an `ip link del` emits several)
costs one pass; the events caused by its own changes cost one more, empty
pass. The debounce is bounded (MAX_DEBOUNCE): a flood of events, which any
guest's user can cause, delays a pass by at most that, and never moves the
resync deadline. An overflowing event socket (ENOBUFS) means events were lost:
resync at once. SIGTERM and SIGINT end it cleanly, between passes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import time
from types import FrameType

import structlog

from umlstate.errors import BackingOff, UmlstateError
from umlstate.host import identity
from umlstate.model.snapshot import Proc, Snapshot
from umlstate.reconcile import Reconciler

log = structlog.get_logger("umlstate")

# linux/rtnetlink.h multicast groups (the legacy bit mask form).
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
RTMGRP_IPV4_IFADDR = 0x10
DEBOUNCE = 0.15  # quiet time that ends a burst
MAX_DEBOUNCE = 2.0  # a burst that never ends still gets its pass this soon
PROCESS_POLL = 0.5
RETRY_FIRST, RETRY_LONGEST = 1.0, 60.0  # after a failed pass: 1 s, 2 s, 4 s ... at most a minute


class Watcher:
    def __init__(self, service: Reconciler, resync: float = 300.0) -> None:
        self.service = service
        self.resync = resync
        self.stopping = False
        self.known: list[Proc] = []
        self.failures = 0  # passes failed in a row
        self.retry_at: float | None = None  # when the next retry is due, after a failed pass

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
                retry = self.retry_at is not None and self.retry_at < next_resync
                reason = self._wait(events, until=self.retry_at if retry and self.retry_at else next_resync)
                if self.stopping:
                    break
                if reason == "resync" and retry:
                    reason = f"retry {self.failures} after a failed pass" if self.failures else "a backoff ended"
                elif reason == "resync":
                    next_resync = time.monotonic() + self.resync
                self._pass(reason)
        finally:
            events.close()
        log.info("watch stopped")
        return 0

    def _pass(self, reason: str) -> None:
        start = time.monotonic()
        try:
            outcome = self.service.converge()
        except BackingOff as exc:  # all done but crash-looping guests: start each when its backoff ends
            self.failures = 0
            self.retry_at = time.monotonic() + max(0.0, exc.until - time.time()) + 0.05
            log.info("watch pass: guests backing off", until=round(exc.until, 1))
            with contextlib.suppress(UmlstateError):
                self._know(self.service.observe())
        except UmlstateError as exc:  # keep watching: a retry (backing off), an event or the resync tries again
            self.failures += 1
            wait = min(RETRY_LONGEST, RETRY_FIRST * 2 ** (self.failures - 1))
            self.retry_at = time.monotonic() + wait
            log.error("watch pass failed", error=str(exc), retry_in=wait)
            with contextlib.suppress(UmlstateError):  # what runs now, to notice when it exits
                self._know(self.service.observe())
        else:
            self.failures, self.retry_at = 0, None
            self._know(outcome.after)
        log.debug("watch pass", reason=reason, seconds=round(time.monotonic() - start, 3))

    def _know(self, snapshot: Snapshot) -> None:
        procs = [s.proc for s in snapshot.switches.values()] + [g.proc for g in snapshot.guests.values()]
        self.known = [p for p in procs if p is not None]

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
                lost = _drain(events, DEBOUNCE, min(MAX_DEBOUNCE, max(0.0, until - time.monotonic())))
                return "events lost (ENOBUFS): resync" if lost else "netlink event"
            self._reap()
            gone = [p for p in self.known if not identity.alive(p)]
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


def _drain(events: socket.socket, quiet: float, longest: float) -> bool:
    """Swallow a burst of events until ``quiet`` seconds pass without one, or ``longest`` in all.

    Returns whether the kernel dropped events (ENOBUFS): the pass must not
    trust that it saw every change, which a full pass never does anyway.
    """
    deadline = time.monotonic() + longest
    lost = False
    while True:
        try:
            while events.recv(1 << 16):
                if time.monotonic() >= deadline:  # a flood that never runs dry still ends here
                    return lost
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            lost = True
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            return lost
        ready, _, _ = select.select([events], [], [], min(quiet, left))
        if not ready:
            return lost
