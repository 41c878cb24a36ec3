"""Crash-loop backoff: how long a guest that keeps dying soon after it starts waits before the next start.

Pure, in the plan layer; read by the planner's guest step. Kubernetes'
CrashLoopBackOff, with what root recorded: the dead run's start (its process
record) and about when it died (its root-owned log's last write). The count
travels with each StartGuest into the records, so cron and watch honour it
alike; `umlstate start GUEST` forgets the dead run.
"""

from __future__ import annotations

from umlstate.model.snapshot import GuestState, Snapshot, unit_of

CRASH_WINDOW = 60.0  # a run that ends sooner after its start is a crash: the next start waits
BACKOFF_FIRST, BACKOFF_MAX = 10.0, 300.0  # seconds: 10, 20, 40, ... at most 5 minutes (Kubernetes' CrashLoopBackOff)


def delay(crashes: int) -> float:
    """How long after its last death a guest that crashed ``crashes`` times in a row waits: a first crash is
    restarted at once (a panic, a kill), a loop waits longer each time."""
    return 0.0 if crashes < 2 else min(BACKOFF_FIRST * 2.0 ** (crashes - 2), BACKOFF_MAX)


def crashes(name: str, state: GuestState | None, s: Snapshot) -> int:
    """How many times in a row the guest died soon after root started it, this death included; 0: not a crash
    (it ran long, or it was never started in this boot of the host)."""
    dead = s.records.processes.get(unit_of("guest", name))
    if dead is None or state is None or state.ended is None or s.records.boot_id != s.boot_id:
        return 0
    if state.ended - dead.started > CRASH_WINDOW:
        return 0
    return s.records.crashes.get(name, 0) + 1
