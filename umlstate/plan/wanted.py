"""What a topology wants, derived: the gateway addresses, the proxy entries, the links it owns.

Pure, in the plan layer; shared by the planner and status.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from umlstate.model.snapshot import Snapshot
from umlstate.model.topology import Topology


class WantedTap(NamedTuple):
    """A tap the topology wants: declared (taps[]), or made for a guest NIC on a bridge."""

    name: str
    owner: str
    group: str | None
    bridge: str | None  # the bridge it is enslaved to
    holder: str | None  # the guest whose NIC it is


def wanted_taps(t: Topology) -> list[WantedTap]:
    taps = [WantedTap(x.name, x.owner, x.group, None, None) for x in t.taps]
    taps += [WantedTap(nt.name, nt.owner, None, nt.bridge, nt.guest) for nt in t.nic_taps()]
    return sorted(taps, key=lambda x: x.name)


def wanted_addresses(t: Topology) -> dict[str, ipaddress.IPv4Interface]:
    """The host's gateway address on the tap or bridge that serves each subnet."""
    out: dict[str, ipaddress.IPv4Interface] = {}
    servers = [(x.name, x.subnet) for x in t.taps] + [(b.name, b.subnet) for b in t.bridges]
    for name, subnet_name in servers:
        subnet = t.subnet(subnet_name) if subnet_name else None
        if subnet is not None and subnet.gateway is not None:
            out[name] = ipaddress.IPv4Interface(f"{subnet.gateway}/{subnet.cidr.prefixlen}")
    return out


def wanted_proxies(t: Topology) -> set[tuple[str, ipaddress.IPv4Address]]:
    """One proxy entry per guest address whose subnet answers ARP on an uplink."""
    out: set[tuple[str, ipaddress.IPv4Address]] = set()
    for guest in t.guests:
        for nic in guest.nics:
            subnet = t.subnet_of_nic(nic)
            if nic.address is not None and subnet is not None and subnet.proxy_arp is not None:
                out.add((subnet.proxy_arp.uplink, nic.address))
    return out


def owns_link(t: Topology, s: Snapshot, name: str) -> bool:
    """A tap or bridge this topology made: marked with its ifalias, or recorded before a crash could mark it."""
    link = s.links.get(name)
    if link is None or not (link.is_tap or link.kind in ("bridge", "vxlan")):
        return False
    if link.alias == t.alias:
        return True
    # A crashed run recorded the link before making it, but did not mark it yet.
    return name in s.records.pending_taps and not link.alias
