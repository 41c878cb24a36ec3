"""What a topology wants, derived: the gateway addresses, the proxy entries, the links it owns.

Pure, in the plan layer; shared by the planner and status.
"""

from __future__ import annotations

import ipaddress

from umlstate.model.snapshot import Snapshot
from umlstate.model.topology import Topology


def wanted_addresses(t: Topology) -> dict[str, ipaddress.IPv4Interface]:
    out: dict[str, ipaddress.IPv4Interface] = {}
    for tap in t.taps:
        subnet = t.subnet(tap.subnet) if tap.subnet else None
        if subnet is not None and subnet.gateway is not None:
            out[tap.name] = ipaddress.IPv4Interface(f"{subnet.gateway}/{subnet.cidr.prefixlen}")
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
    link = s.links.get(name)
    if link is None or not link.is_tap:
        return False
    if link.alias == t.alias:
        return True
    # A crashed run recorded the tap before making it, but did not mark it yet.
    return name in s.records.pending_taps and not link.alias
