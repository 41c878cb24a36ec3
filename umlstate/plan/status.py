"""Status: every resource of the topology, ok / missing / drifted / conflict; guests also panicked / hung.

Pure, like the planner it builds on: a resource is ok when the plan has
nothing to do for it, missing when the plan would create it, drifted when
the plan would change, replace or remove it, in conflict when a foreign
object stands in its place. A guest whose recorded process died in a
kernel panic is panicked (its log's last lines go with the row); one running
for over HUNG_AFTER seconds whose mconsole does not answer is hung.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from umlstate.model.fields import by_address
from umlstate.model.snapshot import Snapshot
from umlstate.model.topology import Topology
from umlstate.plan import ruleset
from umlstate.plan.actions import Kind
from umlstate.plan.result import Backoff, Plan
from umlstate.plan.wanted import wanted_addresses, wanted_proxies, wanted_taps

State = Literal["ok", "missing", "drifted", "conflict", "panicked", "hung", "failed"]
HUNG_AFTER = 60.0  # seconds up after which a guest whose mconsole stays silent is hung, not booting


@dataclass(frozen=True)
class Row:
    kind: Kind
    target: str
    state: State
    detail: str
    log: tuple[str, ...] = ()  # the end of a panicked guest's console log

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "state": self.state, "detail": self.detail,
                **({"log": list(self.log)} if self.log else {})}


def backing_off(b: Backoff) -> str:
    """``backing off until 10:42:07 UTC (3 crashes)``."""
    return (f"backing off until {datetime.fromtimestamp(b.until, tz=UTC):%H:%M:%S} UTC "
            f"({b.crashes} crash{'es' if b.crashes > 1 else ''}); `umlstate start {b.guest}` starts it now")


def _uptime(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def status(topology: Topology, observed: Snapshot, plan: Plan, now: float = 0.0) -> list[Row]:
    """One row per resource; ``now`` (seconds since the epoch) dates process uptimes."""
    t, s = topology, observed
    wanted: list[tuple[Kind, str, str]] = []  # kind, target, detail when ok
    if t.host.tun:
        node = s.tun
        mode = f"mode {node.mode:04o}" if node and node.mode is not None else ""
        wanted.append(("tun-device", t.host.tun.path, f"char 10:200 {mode}".strip()))
    for group in t.host.groups:
        wanted.append(("group", group.name, f"members {', '.join(group.members) or 'none'}"))
    for key, value in sorted(t.sysctls.items()):
        wanted.append(("sysctl", key, f"= {value}"))
    for bridge in sorted(t.bridges, key=lambda x: x.name):
        link = s.links.get(bridge.name)
        ports = sorted(n for n, x in s.links.items() if x.master == bridge.name)
        wanted.append(("bridge", bridge.name, f"{'up' if link and link.up else 'down'}, "
                                              f"ports {', '.join(ports) or 'none'}"))
    for tap in wanted_taps(t):
        link = s.links.get(tap.name)
        admin = "up" if link and link.up else "down"
        on = f", on {tap.bridge} for guest {tap.holder}" if tap.bridge else ""
        wanted.append(("tap", tap.name, f"owner {tap.owner}, {admin}{on}"))
    for name, ifaces in sorted(wanted_addresses(t).items()):
        wanted += [("address", f"{name} {iface}", "") for iface in sorted(ifaces, key=by_address)]
    for uplink, address in sorted(wanted_proxies(t), key=by_address):
        wanted.append(("proxy-neigh", f"{uplink} {address}", ""))
    policy = ruleset.render(t, {})
    if policy is not None:
        wanted.append(("ruleset", t.table, policy.summary))
    down: set[tuple[Kind, str]] = set()  # processes that should run and do not, whatever the plan could do
    unwell: dict[str, Row] = {}  # guests that panicked or hang: said so, whatever else the plan does
    for sw in sorted(t.switch_processes, key=lambda x: x.name):
        proc = s.switches[sw.name].proc if sw.name in s.switches else None
        up = f"pid {proc.pid}, up {_uptime(now - proc.started)}, " if proc else ""
        wanted.append(("switch", sw.name, f"{up}{sw.kind} on {sw.tap or 'no tap'}"))
        if proc is None:
            down.add(("switch", sw.name))
    for guest in sorted(t.guests, key=lambda g: g.name):
        state = s.guests.get(guest.name)
        if guest.name in s.records.held:
            running = state is not None and state.proc is not None
            wanted.append(("guest", guest.name, "held down by `umlstate stop`" + (" (but running)" if running else "")))
            continue
        proc = state.proc if state else None
        up = f"pid {proc.pid}, up {_uptime(now - proc.started)}, " if proc else ""
        if proc is None:
            down.add(("guest", guest.name))
            if state is not None and state.panic:
                unwell[guest.name] = Row("guest", guest.name, "panicked", state.panic, state.last_lines)
        elif state is not None and not state.answers and now - proc.started > HUNG_AFTER:
            unwell[guest.name] = Row("guest", guest.name, "hung", f"{up}its mconsole does not answer; "
                                     f"`umlstate stop {guest.name}` then `start` restarts it")
        answering = "" if state is None or state.answers or proc is None else ", mconsole not answering yet"
        where = f", on {guest.host}" if guest.host else ""
        wanted.append(("guest", guest.name, f"{up}{guest.mem}{where}{answering}"))

    by_target: dict[tuple[Kind, str], list[str]] = {}
    missing: set[tuple[Kind, str]] = set()
    for action in plan.actions:
        resource: tuple[Kind, str] = (action.kind, action.target)
        by_target.setdefault(resource, []).append(action.reason)
        if action.op == "create":
            missing.add(resource)
    conflicts: dict[tuple[str, str], str] = {(c.kind, c.target): f"{c.problem}; {c.fix}" for c in plan.conflicts}

    waiting = {w.guest: backing_off(w) for w in plan.backoff}
    rows = []
    for kind, target, ok_detail in wanted:
        resource = (kind, target)
        if kind == "guest" and target in waiting:  # a crash loop: why, and when it is started again
            row = unwell.get(target, Row("guest", target, "missing", ""))
            rows.append(replace(row, detail="; ".join(x for x in (waiting[target], row.detail) if x)))
        elif kind == "guest" and target in unwell:  # the plan's reason, when it has one, already names the panic
            row = unwell[target]
            rows.append(replace(row, detail="; ".join(by_target[resource])) if resource in by_target else row)
        elif resource in conflicts:
            rows.append(Row(kind, target, "conflict", conflicts[resource]))
        elif resource in missing:
            rows.append(Row(kind, target, "missing", "; ".join(by_target[resource])))
        elif resource in by_target:
            rows.append(Row(kind, target, "drifted", "; ".join(by_target[resource])))
        elif resource in down:  # the plan could not start it: its errors say why
            rows.append(Row(kind, target, "missing", "not running; apply cannot start it (see the errors below)"))
        else:
            rows.append(Row(kind, target, "ok", ok_detail))
    listed = {(r.kind, r.target) for r in rows}
    for action in plan.actions:  # owned but no longer wanted, or derived (a stretched bridge's VXLAN)
        resource = (action.kind, action.target)
        if resource not in listed:
            listed.add(resource)
            rows.append(Row(action.kind, action.target, "missing" if resource in missing else "drifted",
                            "; ".join(by_target[resource])))
    rows += _checks(t, s)
    return rows


def _checks(t: Topology, s: Snapshot) -> list[Row]:
    """Each check's latest result, as the guest that runs it reported it (plan/checks.py)."""
    rows = []
    for n, check in enumerate(t.checks):
        state = s.guests.get(check.from_)
        said = state.checks.get(n) if state is not None else None
        if said is None:
            why = "not run yet" if state is not None and state.proc is not None else f"{check.from_} is not running"
            rows.append(Row("check", check.label, "missing", why))
            continue
        ok, when, detail = said
        try:  # the guest's own word for when
            at = datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except (ValueError, OverflowError, OSError):
            at = "an impossible time"
        rows.append(Row("check", check.label, "ok" if ok else "failed", f"{'passed' if ok else 'failed'} at {at}: "
                        f"{detail}"))
    return rows
