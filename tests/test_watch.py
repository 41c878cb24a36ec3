"""umlstate.watch: the debounce of netlink events, bounded, and its report of lost events; retries.

`watch` swallows a burst of events until ``quiet`` seconds pass without one, but never for more
than ``longest`` (SPEC: a flood, which any guest's user can cause, delays a pass by at most
MAX_DEBOUNCE), and says whether the kernel dropped events (ENOBUFS). Tested on a non-blocking
AF_UNIX datagram socketpair standing in for the event socket (no root, no netlink), and on socket
doubles for what a socketpair cannot do on demand: ENOBUFS, and a flood that never leaves the
queue empty.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from umlstate.errors import ActionError, BackingOff
from umlstate.model.snapshot import Snapshot
from umlstate.plan.result import Backoff, Plan
from umlstate.reconcile import Outcome
from umlstate.watch import Watcher, _drain

QUIET, LONGEST = 0.15, 0.5


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(reader, writer), both non-blocking, as watch's event socket is."""
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.setblocking(False)
    writer.setblocking(False)
    with reader, writer:
        yield reader, writer


def timed(call: Callable[[], bool], limit: float = 3.0) -> tuple[bool, float]:
    """Run ``call`` in a thread: (its result, seconds taken); fail, not hang, past ``limit``."""
    result: list[bool] = []
    began = time.monotonic()
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(limit)
    assert result, f"_drain still running after {limit} s"
    return result[0], time.monotonic() - began


def test_a_quiet_socket_returns_after_quiet_with_nothing_lost(pair: tuple[socket.socket, socket.socket]) -> None:
    reader, _writer = pair
    lost, took = timed(lambda: _drain(reader, QUIET, LONGEST))
    assert lost is False
    assert QUIET - 0.01 <= took < QUIET + 0.1


def test_a_burst_is_swallowed_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    reader, writer = pair
    for _ in range(50):
        writer.send(b"event")
    lost, took = timed(lambda: _drain(reader, QUIET, LONGEST))
    assert lost is False and took < LONGEST
    with pytest.raises(BlockingIOError):
        reader.recv(1 << 16)  # nothing left for the next wait to wake up on


def test_events_that_keep_coming_extend_the_wait_until_they_stop(pair: tuple[socket.socket, socket.socket]) -> None:
    """Bursts 50 ms apart for 0.3 s: the debounce waits them out, then one quiet period more. Tied to when the
    last event was sent, not to when the burst began: a busy machine starts the two threads apart."""
    reader, writer = pair
    sent: list[float] = []

    def bursts() -> None:
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            writer.send(b"event")
            sent.append(time.monotonic())
            time.sleep(0.05)

    sender = threading.Thread(target=bursts)
    sender.start()
    try:
        began = time.monotonic()
        lost, took = timed(lambda: _drain(reader, QUIET, 2.0))
    finally:
        sender.join()
    assert lost is False
    assert len(sent) >= 3, "the events kept coming"
    assert sent[-1] + QUIET - 0.01 <= began + took < sent[-1] + QUIET + 0.5, \
        f"drained {began + took - sent[-1]:.3f} s after the last event"


def test_a_flood_from_a_thread_ends_the_wait_at_longest(pair: tuple[socket.socket, socket.socket]) -> None:
    """A writer that never pauses: no quiet period ever comes, so `longest` ends the wait."""
    reader, writer = pair
    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        while not stop.is_set():
            try:
                writer.send(b"event" * 8)
                sent[0] += 1
            except BlockingIOError:
                pass

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        time.sleep(0.02)
        lost, took = timed(lambda: _drain(reader, QUIET, LONGEST))
    finally:
        stop.set()
        flooder.join()
    assert sent[0] > 1000  # it was a flood
    assert lost is False
    assert LONGEST - 0.05 <= took < LONGEST + 0.1


class FakeEvents:
    """An event socket double: recv() follows a script, then the queue is empty (BlockingIOError).

    select() needs a real descriptor: that of a socket that never becomes readable.
    """

    def __init__(self, script: Callable[[int], bytes], quiet: socket.socket) -> None:
        self.script = script
        self.calls = 0
        self.quiet = quiet

    def recv(self, _size: int) -> bytes:
        self.calls += 1
        return self.script(self.calls)

    def fileno(self) -> int:
        return self.quiet.fileno()


def test_an_overflowing_socket_reports_lost_events(pair: tuple[socket.socket, socket.socket]) -> None:
    def script(call: int) -> bytes:
        if call == 1:
            raise OSError(errno.ENOBUFS, "No buffer space available")
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    events = FakeEvents(script, pair[0])
    lost, took = timed(lambda: _drain(events, QUIET, LONGEST))  # type: ignore[arg-type]
    assert lost is True
    assert events.calls >= 2  # it went on reading after ENOBUFS
    assert took < LONGEST


def test_another_receive_error_is_not_swallowed(pair: tuple[socket.socket, socket.socket]) -> None:
    def script(_call: int) -> bytes:
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError) as caught:
        _drain(FakeEvents(script, pair[0]), QUIET, LONGEST)  # type: ignore[arg-type]
    assert caught.value.errno == errno.EBADF


def test_a_flood_that_never_leaves_the_queue_empty_is_still_cut_at_longest(
        pair: tuple[socket.socket, socket.socket]) -> None:
    released = threading.Event()

    def script(_call: int) -> bytes:
        if released.is_set():  # lets a stuck _drain finish once the test has its answer
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return b"event"

    result: list[bool] = []
    worker = threading.Thread(
        target=lambda: result.append(_drain(FakeEvents(script, pair[0]), QUIET, LONGEST)),  # type: ignore[arg-type]
        daemon=True)
    worker.start()
    worker.join(LONGEST + 0.5)
    in_time = bool(result)
    released.set()
    worker.join(2.0)
    assert not worker.is_alive()
    assert in_time, f"_drain was still swallowing events {LONGEST + 0.5} s into a flood (longest={LONGEST})"


# --- retries after a failed pass ------------------------------------------------------------------


class FailingService:
    """A stand-in for the Reconciler whose passes fail ``failures`` times, then succeed."""

    def __init__(self, failures: int, backoff: tuple[Backoff, ...] = ()) -> None:
        self.failures = failures
        self.passes = 0
        self.backoff = backoff

    def converge(self) -> Outcome:
        self.passes += 1
        if self.passes <= self.failures:
            raise ActionError("guest web exited right after it started")
        outcome = Outcome(Plan("t", None, (), backoff=self.backoff), (), 0.0, Snapshot())
        if self.backoff:  # as reconcile says it: all done, but a crash-looping guest waits
            raise BackingOff("web backs off", min(b.until for b in self.backoff), outcome)
        return outcome

    def observe(self) -> Snapshot:
        return Snapshot()


def test_a_failed_pass_is_retried_backing_off_and_a_good_one_ends_the_retries() -> None:
    service = FailingService(failures=8)
    watcher = Watcher(service, resync=300)  # type: ignore[arg-type]
    waits = []
    for _ in range(8):
        before = time.monotonic()
        watcher._pass("test")
        assert watcher.retry_at is not None
        waits.append(round(watcher.retry_at - before))
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60], "doubling from RETRY_FIRST, never past RETRY_LONGEST"
    watcher._pass("test")
    assert watcher.retry_at is None and watcher.failures == 0


def test_a_pass_that_leaves_a_guest_backing_off_wakes_watch_when_the_backoff_ends() -> None:
    """A crash-looping guest is started when its delay ends, not at the next event or resync."""
    watcher = Watcher(FailingService(0, (Backoff("web", time.time() + 20, 2),)), resync=300)  # type: ignore[arg-type]
    before = time.monotonic()
    watcher._pass("test")
    assert watcher.retry_at is not None and 19 <= watcher.retry_at - before <= 21
    assert watcher.failures == 0, "a backoff is no failure of the pass"
