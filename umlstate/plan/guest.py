"""The guest kind's planning steps: each guest started, replaced, hot-plugged, stopped, or left to back off.

Plan layer, called by the planner last: a guest needs its taps, switch and policy. A guest broken by its
own preflight findings is left out and the rest go on; a crash loop waits (plan/backoff.py). Its actions are
in plan/actions/processes.py.
"""

from __future__ import annotations

from dataclasses import replace

from umlstate.model.guest import Guest
from umlstate.model.guestline import GuestLine
from umlstate.model.snapshot import Proc, unit_of
from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan import backoff, cmdline
from umlstate.plan.result import Backoff, Builder


def remove_step(t: Topology, b: Builder) -> None:
    """Processes first of all removals: a guest leaves before its switch, a switch before its tap."""
    wanted = {g.name for g in t.guests}
    for name, state in sorted(b.s.guests.items()):
        if name not in wanted and state.proc is not None:
            b.add(A.StopGuest("no longer in the topology", name, state.proc))
        _end_leftovers(name, b)


def plan_step(t: Topology, b: Builder) -> None:
    broken = {f.target for f in b.blockers if f.kind == "guest"}  # its own errors: not started, the rest goes on
    for guest in sorted(t.guests, key=lambda g: g.name):
        _end_leftovers(guest.name, b)
        if guest.name in b.s.records.held or guest.name in broken:
            continue
        kernel = cmdline.resolved(b.s.programs, guest.kernel)
        wires = cmdline.wires_of(t, guest, b.s.kernels.get(kernel))
        if isinstance(wires, list):  # a NIC this kernel cannot wire: preflight said so
            continue
        line = cmdline.guest_line(t, guest, kernel, wires)
        state = b.s.guests.get(guest.name)
        if state is not None and state.panic:
            reason = f"its log says: {state.panic}"  # the guest's word, of a guest that is gone
        else:
            reason = "stale files of a dead guest, ignored; not running" if state and state.stale else "not running"
        start = A.StartGuest(reason, guest.name, line, guest.user, t.cow_of(guest), guest.disk.base,
                             answer_at=_answer_at(t, guest))
        if state is None or state.proc is None:
            crashes = backoff.crashes(guest.name, state, b.s)
            if crashes:
                delay = backoff.delay(crashes)
                until = (state.ended if state and state.ended else b.s.now) + delay
                if b.s.now < until:
                    b.backoff.append(Backoff(guest.name, until, crashes))
                    continue
                after = f": restarted {delay:g}s after" if delay else ""
                start = replace(start, crashes=crashes, reason=f"{reason}; it died {crashes} time(s) in a row soon "
                                                               f"after starting{after}")
            b.add(start)
            continue
        restarted = sorted(n.switch for n in guest.nics if n.switch in b.restarted_switches)
        uid = b.s.uid(guest.user)
        running = GuestLine.parse(state.proc.argv)  # as root recorded it at spawn
        live = _hotplug(guest, state.proc, running, line) if not restarted and state.proc.uid == uid else None
        if live is not None:
            for action in live:
                b.add(action)
            continue
        if running is None or not running.same_but_nics(line) or running.nics != line.nics:
            why = "command line changed"
        elif uid is not None and state.proc.uid != uid:
            why = f"runs as uid {state.proc.uid}, not {guest.user}"
        elif restarted:
            why = f"switch {', '.join(x or '' for x in restarted)} restarted: the guest must reconnect"
        else:
            continue
        b.add(A.ReplaceGuest(why, A.StopGuest(why, guest.name, state.proc),
                             A.StartGuest(why, guest.name, line, guest.user, t.cow_of(guest), guest.disk.base,
                                          answer_at=_answer_at(t, guest))))


def _end_leftovers(name: str, b: Builder) -> None:
    state = b.s.guests.get(name)
    if state is not None and state.proc is None and state.leftovers:
        b.add(A.EndGuestLeftovers("its main process died (SIGKILL, OOM); its helpers live on", name, state.leftovers,
                                  b.s.records.processes.get(unit_of("guest", name))))


def _answer_at(t: Topology, guest: Guest) -> tuple[str, ...]:
    """Its IPv4 addresses the host can ping: on a subnet where the host has its gateway, or behind a host
    route (a guest reachable only over IPv6 is ready from its own report)."""
    found = []
    for nic in guest.nics:  # its first address, the one the command line tells it (the others: the seed's)
        ip = nic.ips[0] if nic.ips and nic.ips[0].version == 4 else None
        subnet = t.subnet_of_address(nic, ip) if ip is not None else None
        if ip is None or subnet is None:
            continue
        if subnet.gateway is not None or any(r.to != "default" and ip in r.to for r in t.host.routes):
            found.append(str(ip))
    return tuple(found)


def _hotplug(guest: Guest, proc: Proc, old: GuestLine | None, new: GuestLine) -> list[A.PlugNic | A.UnplugNic] | None:
    """NICs added to (or taken from the end of) a running guest, when that is all that changed.

    Only vector tap NICs, whose device UML makes and removes at run time, and an added NIC told nothing but
    one IPv4 address (the kernel-log line the guest reads; a name, more addresses or IPv6 are the seed's, read
    at boot); None when anything else differs, so the guest is replaced as before.
    """
    name = guest.name
    if old is None or not old.same_but_nics(new) or old.nics == new.nics:
        return None
    longer, shorter = (new, old) if len(new.nics) > len(old.nics) else (old, new)
    changed = longer.nics[len(shorter.nics):]
    if longer.nics[:len(shorter.nics)] != shorter.nics or not all(n.live for n in changed):
        return None  # not a plain addition or removal at the end: order or other NICs changed
    if longer is new and any(nic.name or len(nic.ips) > 1 or any(ip.version == 6 for ip in nic.ips)
                             for nic in guest.nics[len(shorter.nics):]):
        return None
    if longer is new:
        return [A.PlugNic("NIC added to a running guest", name, proc, nic, new) for nic in changed]
    return [A.UnplugNic("NIC gone from the topology", name, proc, nic.ifname, new) for nic in reversed(changed)]
