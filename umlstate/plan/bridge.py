"""The bridge kind's planning step: each Linux bridge of the topology, made and marked as umlstate's.

Plan layer, called by the planner in its order (after groups and sysctls, before VXLANs and taps). Its
actions are in plan/actions/bridge.py; their host calls go through apply/host.py.
"""

from __future__ import annotations

from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan.result import Builder
from umlstate.plan.wanted import owns_link


def plan_step(t: Topology, b: Builder) -> None:
    """Each bridge: made with the gateway's MAC; one of that name not made by umlstate is a conflict."""
    for bridge in sorted(t.bridges, key=lambda x: x.name):
        link = b.s.links.get(bridge.name)
        mac = t.anycast_mac(bridge) if bridge.subnet_names else None
        if link is None:
            b.add(A.CreateBridge("missing", bridge.name, t.alias, t.link_group, mac))
        elif link.kind != "bridge" or not owns_link(t, b.s, bridge.name):
            what = f"a {link.kind or 'plain'} link" if link.kind != "bridge" else "a bridge not made by umlstate"
            b.conflict("bridge", bridge.name, f"{what} named {bridge.name} exists", "rename or remove it by hand",
                       adoptable=False)
        elif link.alias != t.alias or link.group != t.link_group:
            b.conflict("bridge", bridge.name, f"bridge {bridge.name} was made by an interrupted run and never marked",
                       f"remove it (ip link del {bridge.name}); the next apply makes it again", adoptable=False)
        elif mac is not None and link.mac != mac:
            b.add(A.SetBridgeMac(f"address {link.mac}, wanted the gateway's {mac}", bridge.name, mac))


def remove_step(t: Topology, b: Builder) -> None:
    """After the taps' and VXLANs': a bridge goes once nothing is on it."""
    bridges = {bridge.name for bridge in t.bridges}
    for name in sorted(b.s.links):
        if owns_link(t, b.s, name) and b.s.links[name].kind == "bridge" and name not in bridges:
            b.add(A.DeleteBridge("no longer in the topology", name, t.link_group))


def link_up(t: Topology, b: Builder) -> None:
    for bridge in sorted(t.bridges, key=lambda x: x.name):
        link = b.s.links.get(bridge.name)
        if link is not None and owns_link(t, b.s, bridge.name) and link.kind == "bridge" and not link.up:
            b.add(A.SetBridgeUp("down" if bridge.name in b.origin.links else "a new bridge starts down", bridge.name))
