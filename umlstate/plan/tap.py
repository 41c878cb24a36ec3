"""The tap kind's planning steps: each tap made, marked, adopted, replaced or fixed; put on its bridge; up.

Plan layer, called by the planner after the bridges and VXLANs (a bridge NIC's tap is enslaved to its
bridge). A tap a switch or guest holds open is stopped first; their own steps start them again. Its actions
are in plan/actions/tap.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan.result import Builder
from umlstate.plan.wanted import owns_link, wanted_taps


def remove_step(t: Topology, b: Builder) -> None:
    """Before the VXLANs and bridges: a bridge goes once nothing is on it."""
    taps = {tap.name for tap in wanted_taps(t)}
    for name in sorted(b.s.links):
        if owns_link(t, b.s, name) and b.s.links[name].is_tap and name not in taps:
            b.add(A.DeleteTap("no longer in the topology", name, t.link_group))


def plan_step(t: Topology, b: Builder, adopt: bool) -> None:
    for tap in wanted_taps(t):
        link = b.s.links.get(tap.name)
        create = A.CreateTap("missing", tap.name, tap.owner, tap.group, t.alias, t.link_group)
        if link is None:
            b.add(create)
            continue
        if link.kind != "tun":
            b.conflict("tap", tap.name, f"a {link.kind or 'non-tun'} link named {tap.name} exists",
                       "rename or remove it by hand", adoptable=False)
            continue
        if not owns_link(t, b.s, tap.name):
            if not adopt:
                alias = link.alias or ""
                owner = f"owned by topology {alias[9:]}" if alias.startswith("umlstate:") \
                    else "not created by umlstate"
                b.conflict("tap", tap.name, f"a tap named {tap.name} exists, {owner}",
                           "rerun with --adopt to take it over", adoptable=True)
                continue
            b.add(A.MarkTap("adopted (--adopt)", tap.name, t.alias, t.link_group))
        elif link.alias != t.alias:
            b.add(A.MarkTap("made by an interrupted run, not yet marked", tap.name, t.alias, t.link_group))
        elif link.group != t.link_group:
            b.add(A.MarkTap(f"link group drifted from {link.group} to {t.link_group}", tap.name,
                            t.alias, t.link_group))
        link = b.s.links[tap.name]
        stuck_group = tap.group is None and link.tun_group is not None
        if not link.is_tap or link.pi or not link.persist or stuck_group:
            group_now = _id(link.tun_group, b.s.group_names)
            why = [w for w, bad in (("a tun, not a tap", not link.is_tap), ("has packet information", link.pi),
                                    ("not persistent", not link.persist),
                                    (f"has group {group_now}, wanted none", stuck_group)) if bad]
            _stop_holders(t, tap.name, b, "its tap is being replaced")
            b.add(A.ReplaceTap(f"{', '.join(why)}: the kernel cannot change that in place", create))
            continue
        want_uid = b.s.uid(tap.owner)
        want_gid = b.s.gid(tap.group) if tap.group else None
        drift = []
        if want_uid is not None and link.owner != want_uid:  # an unknown user is a preflight error
            drift.append(f"owner is {_id(link.owner, b.s.user_names)}, wanted {tap.owner}")
        if link.tun_group != want_gid:
            drift.append(f"group is {_id(link.tun_group, b.s.group_names)}, wanted {tap.group or 'none'}")
        if drift:
            _stop_holders(t, tap.name, b, "its tap's owner is being fixed")
            b.add(A.FixTap("; ".join(drift), tap.name, tap.owner, tap.group))


def enslave(t: Topology, b: Builder) -> None:
    """Each bridge NIC's tap on its bridge (a new tap, or one someone took off it)."""
    for tap in wanted_taps(t):
        link = b.s.links.get(tap.name)
        if tap.bridge is None or link is None or not owns_link(t, b.s, tap.name) or link.master == tap.bridge:
            continue
        if tap.bridge in b.s.links:
            why = "a new tap" if tap.name not in b.origin.links else f"on {link.master or 'no bridge'}"
            b.add(A.Enslave(why, tap.name, tap.bridge))


def link_up(t: Topology, b: Builder) -> None:
    for tap in wanted_taps(t):
        link = b.s.links.get(tap.name)
        if link is not None and owns_link(t, b.s, tap.name) and link.is_tap and not link.up:
            b.add(A.SetLinkUp("down" if tap.name in b.origin.links else "a new tap starts down", tap.name))


def _id(value: int | None, names: Mapping[int, str]) -> str:
    """A uid or gid as people know it: its name, with the number when there is one."""
    if value is None:
        return "none"
    return f"{names[value]} ({value})" if value in names else str(value)


def _stop_holders(t: Topology, tap: str, b: Builder, why: str) -> None:
    """A switch or guest holds its tap open (EBUSY): stop it; the switch and guest steps start it again."""
    for sw in t.switch_processes:
        state = b.s.switches.get(sw.name)
        if sw.tap == tap and state is not None and state.proc is not None:
            b.add(A.StopSwitch(why, sw.name, state.proc))
    held_by = {nt.guest for nt in t.nic_taps() if nt.name == tap}
    held_by |= {g.name for g in t.guests if any(nic.tap == tap for nic in g.nics)}
    for name in sorted(held_by):
        guest_state = b.s.guests.get(name)
        if guest_state is not None and guest_state.proc is not None:
            b.add(A.StopGuest(why, name, guest_state.proc))
