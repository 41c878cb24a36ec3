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


def wanted_addresses(t: Topology) -> dict[str, frozenset[ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
    """The host's gateway addresses on the tap or bridge that serves each subnet (one per subnet it carries)."""
    out: dict[str, frozenset[ipaddress.IPv4Interface | ipaddress.IPv6Interface]] = {}
    for server in t.servers:
        gateways = frozenset(ipaddress.ip_interface((s.gateway, s.cidr.prefixlen))
                             for s in t.subnets_of(server) if s.gateway is not None)
        if gateways:
            out[server.name] = gateways
    return out


def wanted_proxies(t: Topology) -> set[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """One proxy entry per guest address whose subnet answers ARP (IPv4) or neighbour discovery (IPv6) on an
    uplink."""
    out: set[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]] = set()
    for guest in t.guests:
        for nic in guest.nics:
            for ip in nic.ips:
                subnet = t.subnet_of_address(nic, ip)
                proxy = None if subnet is None else subnet.proxy_arp if ip.version == 4 else subnet.proxy_ndp
                if proxy is not None:
                    out.add((proxy.uplink, ip))
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
