"""The VXLAN kind's planning step: each bridge this host shares with others, one VXLAN link on it.

Plan layer, called by the planner after the bridges. The link does not learn; its static forwarding entries
are a flood entry per other host and each remote guest NIC's MAC (placement's Stretch). Its actions are in
plan/actions/vxlan.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from umlstate.model.placement import VXLAN_PORT, Stretch
from umlstate.model.snapshot import FLOOD_MAC
from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan.result import Builder
from umlstate.plan.wanted import owns_link


def plan_step(t: Topology, wanted: Mapping[str, Stretch], b: Builder) -> None:
    """Each bridge shared with other hosts: one VXLAN on it, flooding to exactly those hosts."""
    for name, st in sorted(wanted.items()):
        create = A.CreateVxlan("missing", name, st.vni, st.local, VXLAN_PORT, st.bridge, t.alias, t.link_group)
        link = b.s.links.get(name)
        if link is not None and not owns_link(t, b.s, name):
            b.conflict("vxlan", name, f"a {link.kind or 'plain'} link named {name} exists, not made by umlstate",
                       "rename or remove it by hand", adoptable=False)
            continue
        if link is not None:
            master = link.master or "no bridge"
            drift = [w for w, bad in ((f"id {link.vni}, wanted {st.vni}", link.vni != st.vni),
                                      (f"local {link.local}, wanted {st.local}", link.local != str(st.local)),
                                      (f"on {master}, wanted {st.bridge}", link.master != st.bridge),
                                      ("learning from the underlay", link.learning),
                                      ("down", not link.up)) if bad]
            if not drift:
                _fdb(name, st, b)
                continue
            b.add(A.DeleteVxlan("; ".join(drift), name, t.link_group))
        if st.bridge in b.s.links:
            b.add(create)
            _fdb(name, st, b)


def _fdb(name: str, st: Stretch, b: Builder) -> None:
    """The VXLAN's static forwarding entries: a flood entry per other host, and each remote guest's MAC."""
    want = {(FLOOD_MAC, remote) for remote in st.remotes} | set(st.macs)
    have = {(mac, remote) for link, mac, remote in b.s.fdb if link == name}
    for mac, remote in sorted(have - want):
        b.add(A.RemoveFdb("no guest of that host has this MAC on the bridge any more" if mac != FLOOD_MAC
                          else "that host has no guests on the bridge any more", name, mac, remote))
    for mac, remote in sorted(want - have):
        b.add(A.AddFdb("a host with guests on the bridge" if mac == FLOOD_MAC else "a guest's NIC on that host",
                       name, mac, remote))


def remove_step(t: Topology, wanted: Mapping[str, Stretch], b: Builder) -> None:
    """After the taps', before the bridges': a VXLAN leaves its bridge first."""
    for name in sorted(b.s.links):
        if owns_link(t, b.s, name) and b.s.links[name].kind == "vxlan" and name not in wanted:
            b.add(A.DeleteVxlan("no other host has guests on its bridge any more", name, t.link_group))
