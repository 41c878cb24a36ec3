"""One host's slice of a farm: the topology it must hold, and the bridges it stretches to others.

Pure, in the model layer, between loading and everything else: with ``hosts``,
each host runs umlstate for its own slice (``--host``, ``$UMLSTATE_HOST``, the
hostname) and never creates or removes another host's resources. The slice is
an ordinary topology of this host's guests (it keeps ``hosts``, so that its
guests' command lines are the same wherever they run),
plus, for each bridge whose guests run on several hosts, the VXLAN that joins
this host's bridge to theirs. Proxy entries follow the guests (each host
answers ARP only for its own), and a bridge's gateway stands on every host
that serves it, with one MAC (Topology.anycast_mac): a guest moved to another
host keeps its address, its MAC and its gateway.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from umlstate.model.topology import HostDef, Topology

VXLAN_PORT = 4789  # IANA's
VXLAN_MTU = 1450  # 1500 less VXLAN's 50 bytes: what guests on a stretched bridge are given


@dataclass(frozen=True)
class Stretch:
    """A bridge this host shares with other hosts, over VXLAN."""

    bridge: str
    vni: int
    local: ipaddress.IPv4Address  # this host's underlay
    remotes: tuple[ipaddress.IPv4Address, ...]  # the other hosts with guests on the bridge
    # (MAC, that host's underlay) of each of their guests' NICs on the bridge: the VXLAN does not learn,
    # so these are its static forwarding entries (a frame for another MAC floods to every remote).
    macs: tuple[tuple[str, ipaddress.IPv4Address], ...] = ()

    @property
    def link(self) -> str:
        """The VXLAN link's name (at most 13 bytes: vxlan16777215)."""
        return f"vxlan{self.vni}"


@dataclass(frozen=True)
class Placement:
    topology: Topology  # this host's slice (the whole topology when there are no hosts)
    host: HostDef | None = None
    stretches: dict[str, Stretch] = field(default_factory=dict)  # bridge name -> how it reaches the others


class UnknownHost(ValueError):
    """--host (or $UMLSTATE_HOST, or the hostname) names no host of the topology."""


def place(t: Topology, host: str | None) -> Placement:
    """The slice of ``host``; a topology without hosts is one host's already (``host`` is then ignored)."""
    if not t.hosts:
        return Placement(t)
    here = next((h for h in t.hosts if h.name == host), None)
    if here is None:
        known = ", ".join(h.name for h in t.hosts)
        raise UnknownHost(f"this is host {host!r}, which topology {t.name} does not list (hosts: {known})")
    guests = [g for g in t.guests if g.host == here.name]
    used_switches = {n.switch for g in guests for n in g.nics if n.switch}
    used_taps = {n.tap for g in guests for n in g.nics if n.tap}
    used_taps |= {sw.tap for sw in t.switches if sw.name in used_switches and sw.tap}
    underlays = {h.name: h.underlay for h in t.hosts}
    stretches: dict[str, Stretch] = {}
    for bridge in t.bridges:
        if bridge.name not in used_switches:
            continue
        others = sorted({underlays[g.host] for g in t.guests if g.host and g.host != here.name
                         and any(n.switch == bridge.name for n in g.nics)}, key=int)
        macs = sorted((t.mac_of(g, i), underlays[g.host]) for g in t.guests if g.host and g.host != here.name
                      for i, n in enumerate(g.nics) if n.switch == bridge.name)
        if others:
            stretches[bridge.name] = Stretch(bridge.name, t.vni_of(bridge), here.underlay, tuple(others),
                                             tuple(macs))
    data: dict[str, Any] = t.model_dump(mode="json", exclude_unset=True)
    data["guests"] = [g.model_dump(mode="json", exclude_unset=True) for g in guests]
    data["switches"] = [sw.model_dump(mode="json", exclude_unset=True) for sw in t.switches
                        if sw.name in used_switches]
    data["taps"] = [tap.model_dump(mode="json", exclude_unset=True) for tap in t.taps if tap.name in used_taps]
    here_guests = {g.name for g in guests}
    data["forwards"] = [f.model_dump(mode="json", exclude_unset=True) for f in t.forwards if f.to in here_guests]
    folders = {"run_dir": here.run_dir or t.host.run_dir, "state_dir": here.state_dir or t.host.state_dir}
    data["host"] = {**data.get("host", {}), **{k: v for k, v in folders.items() if v}}
    # A new model (validated, with its own name index), not a copy of the farm's.
    return Placement(Topology.model_validate(data), here, stretches)
