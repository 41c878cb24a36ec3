"""The ports of the traffic policy: each tap guests send into, and what they may send through it.

Pure, in the plan layer; ``plan.ruleset`` renders each port's chain from these.
A port's MACs, addresses and networks come from the topology alone, never from
what a guest has sent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from umlstate.model.guest import Guest, Nic
from umlstate.model.topology import Subnet, Topology


@dataclass(frozen=True)
class Port:
    """A tap guests send into, and what they may send through it."""

    link: str
    who: str  # for people: "guest web eth0", "tap uml0 (switch sw0: guests db, web)"
    macs: tuple[str, ...]  # empty: nobody declared behind it, any MAC
    sources4: tuple[str, ...] | None  # addresses or networks; None: not checked (no subnet, nothing declared)
    forbidden4: tuple[str, ...]  # inside sources4, yet someone else's (the gateway, declared guests)
    onlink4: tuple[str, ...]  # subnets in sources4 (no address declared): any of their addresses, a few at a time
    sources6: tuple[str, ...]
    forbidden6: tuple[str, ...] = ()  # inside its IPv6 allow_sources (a router's), yet someone else's

    @property
    def networks6(self) -> list[ipaddress.IPv6Network]:
        """The IPv6 networks among its sources: a router's allow_sources."""
        return networks6(self.sources6)


def networks6(sources6: Iterable[str]) -> list[ipaddress.IPv6Network]:
    return [ipaddress.IPv6Network(s) for s in sources6 if "/" in s]


def link_local(mac: str) -> str:
    """The IPv6 link-local address a MAC gives (EUI-64), the one a guest's kernel takes by default."""
    octets = [int(x, 16) for x in mac.split(":")]
    eui = [octets[0] ^ 0x02, *octets[1:3], 0xFF, 0xFE, *octets[3:]]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + bytes(eui)))


def _nics_behind(t: Topology) -> dict[str, list[tuple[Guest, int]]]:
    """Declared tap -> the guest NICs whose frames come out of it: on it alone, or on the switch plugged into it."""
    found: dict[str, list[tuple[Guest, int]]] = {}
    for guest in t.guests:
        for i, nic in enumerate(guest.nics):
            switch = t.switch(nic.switch) if nic.switch else None
            tap = nic.tap or (switch.tap if switch is not None else None)
            if tap is not None:
                found.setdefault(tap, []).append((guest, i))
    return found


def ports(t: Topology) -> list[Port]:
    """Every secured port, by link name: bridge NICs' taps and declared taps (NICs with port_security off
    leave their port open; on a tap shared through a switch, one such NIC opens the whole tap)."""
    declared = {ip for g in t.guests for n in g.nics for ip in n.ips if isinstance(ip, ipaddress.IPv4Address)}
    out: list[Port] = []
    for nt in t.nic_taps():
        guest = t.guest(nt.guest)
        assert guest is not None
        if guest.nics[nt.nic].port_security:
            out.append(_port(t, nt.name, f"guest {guest.name} NIC {nt.nic}", [(guest, nt.nic)], declared=declared))
    nics_behind = _nics_behind(t)
    for tap in t.taps:
        behind = nics_behind.get(tap.name, [])
        if all(g.nics[i].port_security for g, i in behind):
            names = ", ".join(sorted({g.name for g, _ in behind})) or "none declared"
            out.append(_port(t, tap.name, f"tap {tap.name} (guests {names})", behind, declared=declared,
                             subnets=t.subnets_of(tap)))
    return sorted(out, key=lambda p: p.link)


def _port(t: Topology, link: str, who: str, nics: list[tuple[Guest, int]], *,
          declared: set[ipaddress.IPv4Address], subnets: tuple[Subnet, ...] = ()) -> Port:
    macs: list[str] = []
    sources4: list[str] = []
    forbidden4: set[str] = set()
    onlink4: set[str] = set()
    sources6: list[str] = ["::"]  # duplicate address detection
    checked4 = True
    # Addresses declared behind this very port (guests sharing a tap through a switch) are not someone else's.
    declared = declared - {ip for guest, i in nics for ip in guest.nics[i].ips if isinstance(ip, ipaddress.IPv4Address)}
    for guest, i in nics:
        nic: Nic = guest.nics[i]
        mac = t.mac_of(guest, i)
        macs.append(mac)
        sources6.append(link_local(mac))
        nets = t.subnets_of_nic(nic)
        nets4 = tuple(s for s in nets if s.cidr.version == 4)
        # Its addresses, and its other NICs' on the same subnets: Linux answers for them on any.
        theirs = [(ip, t.subnet_of_address(o, ip)) for o in guest.nics for ip in o.ips]
        if any(ip.version == 4 for ip in nic.ips):
            sources4 += [str(ip) for ip, net in theirs if ip.version == 4 and net in nets4]
        elif nets4:  # no IPv4 address declared: any of its subnets' that is nobody else's
            _spare(nets4, declared, sources4, onlink4, forbidden4)
        elif not nets:  # on no subnet: a plain layer-2 lab, its IPv4 sources are not checked
            checked4 = False
        # (on IPv6 subnets alone: no IPv4 source at all)
        # IPv6: its declared addresses only, never a spare one of its subnets.
        sources6 += [str(ip) for ip, net in theirs if ip.version == 6 and net in nets]
        for extra in nic.allow_sources:
            (sources4 if extra.version == 4 else sources6).append(str(extra))
    if not nics:  # a tap nobody declared a guest behind: its IPv4 subnets' spare addresses, if it has any
        _spare(tuple(s for s in subnets if s.cidr.version == 4), declared, sources4, onlink4, forbidden4)
        checked4 = bool(subnets)
    routed = networks6(sources6)
    forbidden6 = sorted({a for a in _others6(t, nics) if any(ipaddress.IPv6Address(a) in n for n in routed)}
                        if routed else ())  # a router's alone: the others have no networks to look in
    return Port(link, who, tuple(sorted(set(macs))), tuple(sorted(set(sources4))) if checked4 else None,
                tuple(sorted(forbidden4)), tuple(sorted(onlink4)), tuple(sorted(set(sources6))), tuple(forbidden6))


def _others6(t: Topology, nics: list[tuple[Guest, int]]) -> set[str]:
    """The IPv6 addresses that are not this port's: the host's gateways, and every other NIC's declared and
    link-local addresses. A router's allow_sources may span them; its adverts must still not claim them."""
    here = {(g.name, i) for g, i in nics}
    found = {str(s.gateway) for s in t.subnets if s.cidr.version == 6 and s.gateway is not None}
    for guest in t.guests:
        for i, nic in enumerate(guest.nics):
            if (guest.name, i) not in here:
                found.add(link_local(t.mac_of(guest, i)))
                found |= {str(ip) for ip in nic.ips if ip.version == 6}
    return found


def _spare(nets: tuple[Subnet, ...], declared: set[ipaddress.IPv4Address], sources4: list[str], onlink4: set[str],
           forbidden4: set[str]) -> None:
    """Any address of these IPv4 subnets that is nobody else's (no guest's, no gateway): added to the port's
    lists."""
    for net in nets:
        sources4.append(str(net.cidr))
        onlink4.add(str(net.cidr))
        forbidden4 |= {str(a) for a in declared if a in net.cidr}
        if net.gateway is not None:
            forbidden4.add(str(net.gateway))
