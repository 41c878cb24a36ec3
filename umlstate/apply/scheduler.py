"""How a plan's actions are carried out: which go to the kernel together, which one by one.

Pure, and the first step of apply. Most changes are one rtnetlink request
each; sent back to back on one socket, with their acks read afterwards, a
thousand taps cost one round trip per 256 requests instead of four thousand.
Order is kept: the kernel handles a batch in order, as if sent one by one.
Four rules shape the steps:

- a tap is created by ioctls at once, while its mark (ifalias, link group)
  joins the batch; so a tap whose name a queued deletion still holds starts
  a new batch;
- a run of tap and bridge deletions that removes every link of the
  topology's link group becomes one delete-by-group request (a thousand in 0.3 s);
- a run of guest stops (destroy, replace) is one step, carried out in
  parallel: k guests take about one guest's shutdown time;
- the traffic policy's load that follows a batch runs beside it, once the
  batch's taps are made (the ioctls): nftables reads no other thing a batch
  changes, and its transaction (libnftables, in C) takes the second CPU
  while the rtnetlink requests go; a batch that deletes links is waited for;
- everything else (files, processes, programs) is a step of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from umlstate.plan import actions as A

# One rtnetlink request each: queued and sent in bulk.
NETLINK = (A.MarkTap, A.SetLinkUp, A.DeleteTap, A.AddAddress, A.RemoveAddress, A.AddProxy, A.RemoveProxy, A.Enslave,
           A.SetBridgeUp, A.DeleteBridge, A.SetBridgeMac, A.LimitFdb, A.DeleteVxlan, A.AddFdb, A.RemoveFdb, A.AddRoute,
           A.RemoveRoute)
Batchable: TypeAlias = (A.MarkTap | A.SetLinkUp | A.DeleteTap | A.AddAddress | A.RemoveAddress | A.AddProxy
                        | A.RemoveProxy | A.CreateTap | A.Enslave | A.SetBridgeUp | A.DeleteBridge | A.SetBridgeMac
                        | A.LimitFdb | A.DeleteVxlan | A.AddFdb | A.RemoveFdb | A.AddRoute | A.RemoveRoute)
LinkDeletion: TypeAlias = A.DeleteTap | A.DeleteBridge | A.DeleteVxlan
DELETIONS = (A.DeleteTap, A.DeleteBridge, A.DeleteVxlan)


@dataclass(frozen=True)
class Batch:
    """Requests sent together; CreateTaps among them make their tap first (ioctls), then queue its mark.
    ``beside``: the policy's load, started once the taps are made, while the requests go."""

    actions: tuple[Batchable, ...]
    beside: A.LoadRuleset | None = None


@dataclass(frozen=True)
class GroupDelete:
    """Every link of the topology's link group, deleted by one request."""

    actions: tuple[LinkDeletion, ...]


@dataclass(frozen=True)
class Single:
    action: A.AnyAction


@dataclass(frozen=True)
class Stops:
    """Guests stopped together (each may take its own shutdown's time), then the replaced ones started."""

    actions: tuple[A.StopGuest | A.ReplaceGuest, ...]


Step: TypeAlias = Batch | GroupDelete | Single | Stops


def schedule(actions: tuple[A.AnyAction, ...], group: frozenset[str]) -> list[Step]:
    """The steps that carry out ``actions`` in order; ``group``: the links now in the topology's link group."""
    steps: list[Step] = []
    queued: list[Batchable] = []
    deleting: set[str] = set()  # names a queued DeleteTap still holds

    def flush() -> None:
        if queued:
            steps.append(Batch(tuple(queued)))
            queued.clear()
            deleting.clear()

    i = 0
    while i < len(actions):
        action = actions[i]
        stops = _stops(actions, i)
        if len(stops) > 1:
            flush()
            steps.append(Stops(stops))
            i += len(stops)
            continue
        run = _deletions(actions, i)
        if len(run) > 1 and {a.name for a in run} == group:
            flush()
            steps.append(GroupDelete(run))
            i += len(run)
            continue
        if isinstance(action, A.CreateTap):
            if action.name in deleting:
                flush()
            queued.append(action)
        elif isinstance(action, NETLINK):
            queued.append(action)
            if isinstance(action, DELETIONS):
                deleting.add(action.name)
        elif isinstance(action, A.LoadRuleset) and queued and not any(isinstance(a, DELETIONS) for a in queued):
            steps.append(Batch(tuple(queued), beside=action))
            queued.clear()
            deleting.clear()
        else:
            flush()
            steps.append(Single(action))
        i += 1
    flush()
    return steps


def _deletions(actions: tuple[A.AnyAction, ...], start: int) -> tuple[LinkDeletion, ...]:
    """The run of tap and bridge deletions that begins at ``start``."""
    end = start
    while end < len(actions) and isinstance(actions[end], DELETIONS):
        end += 1
    return tuple(a for a in actions[start:end] if isinstance(a, DELETIONS))


def _stops(actions: tuple[A.AnyAction, ...], start: int) -> tuple[A.StopGuest | A.ReplaceGuest, ...]:
    """The run of guest stops and replacements that begins at ``start``."""
    end = start
    while end < len(actions) and isinstance(actions[end], (A.StopGuest, A.ReplaceGuest)):
        end += 1
    return tuple(a for a in actions[start:end] if isinstance(a, (A.StopGuest, A.ReplaceGuest)))
