"""The traffic policy: the nftables ruleset a topology wants, and the planning step that keeps it loaded.

Pure, in the plan layer. Guests may be hostile, so what they send is checked
where it enters the host, with no field to ask for it (SPEC, "Guest traffic
policy"). ``render`` turns a topology into one nftables JSON document, in up
to three tables named ``umlstate-<topology>``:

- ``netdev``: port security at the ingress of every tap a guest sends into
  (a bridge NIC's own tap, or a tap a switch process or a guest holds): frames
  only from the declared MACs, ARP only with a declared MAC and address as
  sender, IPv4/IPv6 sources only the declared ones (and the link-local address
  of each MAC), no router advertisements, redirects or DHCP server replies.
- ``inet``: the host's own input from guest-facing links (ICMP echo to the
  gateways, ``host.services``, replies), forwarding between subnets only where
  ``reach`` says so, masquerade for ``nat`` subnets, ``forwards`` (DNAT), and
  VXLAN's port open only to the other hosts' underlay addresses.
- ``bridge``: isolated bridges, whose guests reach the gateway, not each other.

Only drops decide: nftables runs every table's base chains, so an accept here
never opens what another table (firewalld, Docker, an admin's own) closes, and
nothing outside umlstate's own links is matched.

The step loads the document whole whenever what it renders changed, or when
nftables' listing of the loaded tables is no longer the one recorded right
after loading (someone changed or flushed them): nftables prints rules back in
its own words, so the listing is compared with itself, never with the render.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import marshal
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from umlstate.model.placement import VXLAN_PORT, Stretch
from umlstate.model.topology import Guest, Nic, Topology
from umlstate.plan import actions as A
from umlstate.plan.result import Builder

Expr = dict[str, Any]

DROP: Expr = {"drop": None}
ACCEPT: Expr = {"accept": None}
ANY4 = str(ipaddress.IPv4Address(0))  # an ARP probe's sender (RFC 5227): harmless, it updates no table
NEIGHBOUR_DISCOVERY = ["nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-solicit"]
# A port that may send from a whole network (a NIC without an address, a router's allow_sources) uses at most
# this many of its addresses at a time: each one the host hears from takes an entry of its neighbour table,
# which every namespace of the machine shares. An address unused for SENDER_TIMEOUT frees its place.
SENDERS_PER_PORT = 32
SENDER_TIMEOUT = 600
FEW_VALUES = 8  # a port's rule tests up to this many values one by one rather than in a set (see _none_of)
PORT_CHAIN, SENDERS_SET = "port-", "senders-"  # each port's ingress chain and set: PREFIX + its link


# --- what each port may send ----------------------------------------------------------------------


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
    declared = {ipaddress.IPv4Address(a) for g in t.guests for n in g.nics if (a := n.address) is not None}
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
                             subnet=tap.subnet))
    return sorted(out, key=lambda p: p.link)


def _port(t: Topology, link: str, who: str, nics: list[tuple[Guest, int]], *,
          declared: set[ipaddress.IPv4Address], subnet: str | None = None) -> Port:
    macs: list[str] = []
    sources4: list[str] = []
    forbidden4: set[str] = set()
    onlink4: set[str] = set()
    sources6: list[str] = ["::"]  # duplicate address detection
    checked4 = True
    for guest, i in nics:
        nic: Nic = guest.nics[i]
        mac = t.mac_of(guest, i)
        macs.append(mac)
        sources6.append(link_local(mac))
        net = t.subnet_of_nic(nic)
        if nic.address is not None:  # and its other NICs' on the same subnet: Linux answers for them on any
            sources4 += [str(o.address) for o in guest.nics if o.address is not None and t.subnet_of_nic(o) == net]
        elif net is not None:  # no address declared: any of its subnet's that is nobody else's
            sources4.append(str(net.cidr))
            onlink4.add(str(net.cidr))
            forbidden4 |= {str(a) for a in declared if a in net.cidr and a != nic.address}
            if net.gateway is not None:
                forbidden4.add(str(net.gateway))
        else:
            checked4 = False
        for extra in nic.allow_sources:
            (sources4 if extra.version == 4 else sources6).append(str(extra))
    if not nics:  # a tap nobody declared a guest behind: its subnet's spare addresses, if it has one
        net = t.subnet(subnet) if subnet else None
        checked4 = net is not None
        if net is not None:
            sources4.append(str(net.cidr))
            onlink4.add(str(net.cidr))
            forbidden4 |= {str(a) for a in declared if a in net.cidr}
            if net.gateway is not None:
                forbidden4.add(str(net.gateway))
    return Port(link, who, tuple(sorted(set(macs))), tuple(sorted(set(sources4))) if checked4 else None,
                tuple(sorted(forbidden4)), tuple(sorted(onlink4)), tuple(sorted(set(sources6))))


# --- nftables JSON, a few words of it ----------------------------------------------------------------


def _payload(protocol: str, field: str) -> Expr:
    return {"payload": {"protocol": protocol, "field": field}}


def _meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def _value(item: str | int) -> Any:
    if isinstance(item, str) and "/" in item:
        net = ipaddress.ip_network(item)
        return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
    return item


def _one_of(items: Iterable[str | int]) -> Any:
    values = [_value(x) for x in items]
    return values[0] if len(values) == 1 and not isinstance(values[0], dict) else {"set": values}


def _is(left: Expr, right: Any) -> Expr:
    return {"match": {"op": "==", "left": left, "right": right}}


def _is_not(left: Expr, right: Any) -> Expr:
    return {"match": {"op": "!=", "left": left, "right": right}}


def _in(left: Expr, items: Iterable[str | int]) -> Expr:
    return _is(left, _one_of(items))


def _not_in(left: Expr, items: Iterable[str | int]) -> Expr:
    return _is_not(left, _one_of(items))


def _none_of(left: Expr, items: Iterable[str | int]) -> list[Expr]:
    """``left`` is none of ``items``, as one match each (a rule's matches all hold): a port's chain has a few
    values, and an anonymous set costs the kernel ~0.5 ms to make, two seconds for a thousand ports' chains."""
    values = list(items)
    return [_is_not(left, _value(x)) for x in values] if len(values) <= FEW_VALUES else [_not_in(left, values)]


def _each_of(left: Expr, items: Iterable[str | int]) -> list[list[Expr]]:
    """``left`` is one of ``items``: a rule's matches each, for as many rules (see _none_of)."""
    values = list(items)
    return [[_is(left, _value(x))] for x in values] if len(values) <= FEW_VALUES else [[_in(left, values)]]


def _jump(chain: str) -> Expr:
    return {"jump": {"target": chain}}


ESTABLISHED = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}


class _Document:
    """The commands of one transaction: each table emptied (add, delete, add), then filled."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.commands: list[dict[str, Any]] = []
        self.families: list[str] = []

    def new_table(self, family: str) -> None:
        self.families.append(family)
        spec = {"family": family, "name": self.table}
        self.commands += [{"add": {"table": spec}}, {"delete": {"table": spec}}, {"add": {"table": dict(spec)}}]

    def chain(self, family: str, name: str, **hook: Any) -> None:
        self.commands.append({"add": {"chain": {"family": family, "table": self.table, "name": name, **hook}}})

    def bounded_set(self, family: str, name: str, kind: str, size: int, timeout: int) -> None:
        """A set the rules fill as traffic passes, at most ``size`` elements, each for ``timeout`` s (nftables
        1.0.6's JSON knows no "dynamic" flag; the kernel makes the set dynamic for the update statement)."""
        self.commands.append({"add": {"set": {"family": family, "table": self.table, "name": name, "type": kind,
                                              "size": size, "flags": ["timeout"], "timeout": timeout}}})

    def rule(self, family: str, chain: str, *expr: Expr) -> None:
        self.commands.append({"add": {"rule": {"family": family, "table": self.table, "chain": chain,
                                               "expr": list(expr)}}})


# --- the render --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    tables: frozenset[str]  # "family name"
    document: str  # JSON for libnftables
    digest: str
    summary: str
    groups: tuple[str, ...]


def guest_links(t: Topology) -> list[str]:
    """The host's links that face guests at layer 3: declared taps and bridges (a bridge NIC's tap is a port)."""
    return sorted({tap.name for tap in t.taps} | {b.name for b in t.bridges})


def _servers(t: Topology) -> dict[str, str]:
    """Subnet -> the link that serves it (validation: at most one)."""
    servers = [(x.name, x.subnet) for x in t.taps] + [(x.name, x.subnet) for x in t.bridges]
    return {subnet: name for name, subnet in reversed(servers) if subnet is not None}


def render(t: Topology, stretches: Mapping[str, Stretch]) -> Rendered | None:
    """The whole policy of this host's slice; None when it has no guest-facing link (nothing to protect)."""
    links = guest_links(t)
    if not links and not t.forwards:
        return None
    doc = _Document(t.table)
    groups: list[str] = []
    secured = ports(t)
    if secured:
        _netdev(doc, secured, groups)
    _inet(doc, t, links, stretches, groups)
    isolated = [b for b in t.bridges if b.isolated]
    if isolated:
        doc.new_table("bridge")
        doc.chain("bridge", "forward", type="filter", hook="forward", prio=0, policy="accept")
        for bridge in isolated:
            members = sorted(nt.name for nt in t.nic_taps() if nt.bridge == bridge.name)
            members += [st.link for st in stretches.values() if st.bridge == bridge.name]
            if members:
                doc.rule("bridge", "forward", _in(_meta("iifname"), members), _in(_meta("oifname"), members), DROP)
            groups.append(f"isolated: bridge {bridge.name}'s guests reach the gateway, not each other")
    document = json.dumps({"nftables": doc.commands}, sort_keys=True, separators=(",", ":"))
    words = [f"port security on {len(secured)} port(s)"] if secured else []
    served = _servers(t)
    subnets = [s for s in t.subnets if s.name in served]
    if len(subnets) > 1:
        words.append(f"{len(subnets)} subnets apart" + ("" if not any(s.reach for s in subnets) else ", but reach"))
    words.append(f"host open to guests for echo{''.join(f', {s.proto}/{s.port}' for s in t.host.services)}")
    if any(s.nat for s in t.subnets):
        words.append("nat " + ", ".join(s.name for s in t.subnets if s.nat))
    if t.forwards:
        words.append(f"{len(t.forwards)} forward(s)")
    if isolated:
        words.append("isolated " + ", ".join(b.name for b in isolated))
    if stretches:
        words.append("VXLAN from the other hosts only")
    summary = f"nftables {', '.join(doc.families)}: " + "; ".join(words)
    return Rendered(frozenset(f"{f} {t.table}" for f in doc.families), document,
                    hashlib.sha256(document.encode()).hexdigest()[:16], summary, tuple(groups))


def _netdev(doc: _Document, secured: list[Port], groups: list[str]) -> None:
    family = "netdev"
    doc.new_table(family)
    for p in secured:  # a base chain per port: libnftables' JSON hooks one device per chain
        doc.chain(family, PORT_CHAIN + p.link, type="filter", hook="ingress", dev=p.link, prio=0, policy="accept")
    for p in secured:
        chain = PORT_CHAIN + p.link
        # Only what the checks below can read: a VLAN tag (or PPPoE, ...) would carry ARP and IP past them.
        doc.rule(family, chain, *_none_of(_meta("protocol"), ["ip", "ip6", "arp"]), DROP)
        if p.macs:
            doc.rule(family, chain, *_none_of(_payload("ether", "saddr"), p.macs), DROP)
            doc.rule(family, chain, *_none_of(_payload("arp", "saddr ether"), p.macs), DROP)
        if p.sources4 is not None:
            doc.rule(family, chain, *_none_of(_payload("arp", "saddr ip"), [ANY4, *p.sources4]), DROP)
            doc.rule(family, chain, *_none_of(_payload("ip", "saddr"), p.sources4), DROP)
            for field in (_payload("arp", "saddr ip"), _payload("ip", "saddr")):
                for match in _each_of(field, p.forbidden4):
                    doc.rule(family, chain, *match, DROP)
            networks = [s for s in p.sources4 if "/" in s]
            if networks:
                _bounded_senders(doc, family, chain, name=SENDERS_SET + p.link, networks=networks,
                                 onlink=list(p.onlink4))
        doc.rule(family, chain, *_none_of(_payload("ip6", "saddr"), p.sources6), DROP)
        targets = _own_targets(p.sources6)
        if targets:  # nftables 1.0.6 has no "icmpv6 taddr": the target address as two raw 64-bit halves
            advert = _is(_payload("icmpv6", "type"), "nd-neighbor-advert")
            for offset, halves in ((64, {t >> 64 for t in targets}), (128, {t & (1 << 64) - 1 for t in targets})):
                doc.rule(family, chain, advert, *_none_of(_raw_th(offset, 64), [f"{h:#018x}" for h in sorted(halves)]),
                         DROP)
        for match in _each_of(_payload("icmpv6", "type"), ["nd-router-advert", "nd-redirect"]):
            doc.rule(family, chain, *match, DROP)
        doc.rule(family, chain, _is(_payload("icmp", "type"), "redirect"), DROP)
        doc.rule(family, chain, _is(_meta("protocol"), "ip"), _is(_payload("udp", "sport"), 67), DROP)
        doc.rule(family, chain, _is(_meta("protocol"), "ip6"), _is(_payload("udp", "sport"), 547), DROP)
        sources = "any" if p.sources4 is None else ", ".join(p.sources4)
        but = f" but {', '.join(p.forbidden4)}" if p.forbidden4 else ""
        few = f" ({SENDERS_PER_PORT} at a time)" if any("/" in s for s in p.sources4 or ()) else ""
        groups.append(f"port {p.link}: {p.who}: MAC {', '.join(p.macs) or 'any'}; IPv4 from {sources}{but}{few}; "
                      "IPv4, IPv6 and ARP only (no VLAN tags); no RA, redirects, DHCP replies, "
                      "or neighbour adverts for others")


def _own_targets(sources6: Iterable[str]) -> list[int]:
    """The addresses a port may advertise in IPv6 neighbour discovery, as integers: its own link-local ones
    (all in fe80::/64, one high half, so the two halves checked apart admit nothing else); none where other
    IPv6 sources are allowed (a router's allow_sources: its adverts are then not checked)."""
    own = [ipaddress.IPv6Address(a) for a in sources6 if a != "::" and "/" not in a]
    if len(own) != sum(1 for a in sources6 if a != "::") or any(not a.is_link_local for a in own):
        return []
    return sorted(int(a) for a in own)


def _raw_th(offset: int, length: int) -> Expr:
    """Bits of the transport header (here ICMPv6), as nftables' raw payload ``@th,OFFSET,LENGTH``."""
    return {"payload": {"base": "th", "offset": offset, "len": length}}


def port_link(name: str) -> str | None:
    """The link a port's chain or set is named after (``port-LINK``, ``senders-LINK``); None for the others."""
    for prefix in (PORT_CHAIN, SENDERS_SET):
        if name.startswith(prefix):
            return name[len(prefix):]
    return None


def _bounded_senders(doc: _Document, family: str, chain: str, *, name: str, networks: list[str],
                     onlink: list[str]) -> None:
    """At most SENDERS_PER_PORT addresses at a time as ARP sender (of any network the port may use) or as
    IPv4 source on its own subnets (a router's forwarded sources lie beyond it and take no neighbour entry).

    ``update`` puts the address in the set (or renews it); on a full set it fails and the rule stops there,
    so the next rule, which drops what the set lacks, drops it."""
    doc.bounded_set(family, name, "ipv4_addr", SENDERS_PER_PORT, SENDER_TIMEOUT)
    for field, where in ((_payload("arp", "saddr ip"), networks), (_payload("ip", "saddr"), onlink)):
        if where:
            for match in _each_of(field, where):
                doc.rule(family, chain, *match, {"set": {"op": "update", "elem": field, "set": f"@{name}"}})
                doc.rule(family, chain, *match, _is_not(field, f"@{name}"), DROP)


def _inet(doc: _Document, t: Topology, links: list[str], stretches: Mapping[str, Stretch],
          groups: list[str]) -> None:
    family = "inet"
    doc.new_table(family)
    doc.chain(family, "input", type="filter", hook="input", prio=0, policy="accept")
    doc.chain(family, "guest-input")
    doc.chain(family, "forward", type="filter", hook="forward", prio=0, policy="accept")
    doc.chain(family, "guest-forward")
    _underlay(doc, stretches, groups)
    if links:
        doc.rule(family, "input", _in(_meta("iifname"), links), _jump("guest-input"))
        doc.rule(family, "forward", _in(_meta("iifname"), links), _jump("guest-forward"))
    # What guests may open on the host itself.
    doc.rule(family, "guest-input", ESTABLISHED, ACCEPT)
    gateways = sorted({str(s.gateway) for s in t.subnets if s.gateway is not None})
    if gateways:
        doc.rule(family, "guest-input", _is(_payload("icmp", "type"), "echo-request"),
                 _in(_payload("ip", "daddr"), gateways), ACCEPT)
    doc.rule(family, "guest-input", _in(_payload("icmpv6", "type"), NEIGHBOUR_DISCOVERY), ACCEPT)
    for service in sorted(set(t.host.services), key=lambda s: (s.proto, s.port)):
        doc.rule(family, "guest-input", _is(_meta("l4proto"), service.proto),
                 _is(_payload("th", "dport"), service.port), ACCEPT)
    doc.rule(family, "guest-input", DROP)
    opened = ", ".join(f"{s.proto}/{s.port}" for s in t.host.services) or "nothing else"
    groups.append(f"host: guests reach ICMP echo to {', '.join(gateways) or 'no gateway'} and {opened}")
    # Between subnets: only where reach says so; a link to itself is a bridge's own traffic (br_netfilter).
    doc.rule(family, "guest-forward", ESTABLISHED, ACCEPT)
    isolated = {b.name for b in t.bridges if b.isolated}
    for link in links:
        doc.rule(family, "guest-forward", _is(_meta("iifname"), link), _is(_meta("oifname"), link),
                 DROP if link in isolated else ACCEPT)
    servers = _servers(t)
    for subnet in t.subnets:
        here = servers.get(subnet.name)
        for other in subnet.reach:
            there = servers.get(other)
            if here and there:
                doc.rule(family, "guest-forward", _is(_meta("iifname"), here), _is(_meta("oifname"), there), ACCEPT)
                groups.append(f"reach: subnet {subnet.name} may open connections to subnet {other}")
    if links:
        doc.rule(family, "guest-forward", _in(_meta("oifname"), links), DROP)
    if len(links) > 1:
        groups.append(f"apart: guests on {', '.join(links)} do not reach each other's links but as reach says")
    _nat(doc, t, links, groups)


def _vni(vni: int) -> Expr:
    """A VXLAN datagram to port VXLAN_PORT carrying this VNI (8 bytes of UDP, 4 of flags, then the 24-bit id)."""
    return _is({"payload": {"base": "th", "offset": 96, "len": 24}}, vni)


def _underlay(doc: _Document, stretches: Mapping[str, Stretch], groups: list[str]) -> None:
    """A stretched bridge's frames come only from the other hosts' VXLAN: the kernel's VXLAN socket takes a
    datagram to any address of the host (its LAN address, a gateway, 127.0.0.1), and what a NATed guest sends
    to a peer would leave with this host's underlay address as its source. (A local user's datagram to a
    peer leaves the same way, and cannot be told from the bridge's own: guests' frames keep the socket of
    the tap their process holds, so their owner is a user too. The README says so.)"""
    family = "inet"
    for st in sorted(stretches.values(), key=lambda x: x.link):
        remotes = [str(r) for r in st.remotes]
        ours = [_is(_payload("udp", "dport"), VXLAN_PORT), _vni(st.vni)]
        doc.rule(family, "input", *ours, _not_in(_payload("ip", "saddr"), remotes), DROP)
        doc.rule(family, "input", *ours, _is(_meta("iifname"), "lo"), DROP)
        doc.rule(family, "guest-forward", *ours, DROP)  # a guest's own, before masquerade makes it the host's
        groups.append(f"underlay: VXLAN id {st.vni} (bridge {st.bridge}) only from {', '.join(remotes)}, "
                      "never from this host itself or a guest")


def _nat(doc: _Document, t: Topology, links: list[str], groups: list[str]) -> None:
    family = "inet"
    natted = [s for s in t.subnets if s.nat]
    if natted:
        doc.chain(family, "postrouting", type="nat", hook="postrouting", prio=100, policy="accept")
        for subnet in natted:
            leaving = [_not_in(_meta("oifname"), links)] if links else []
            doc.rule(family, "postrouting", _is(_payload("ip", "saddr"), _value(str(subnet.cidr))),
                     *leaving, {"masquerade": None})
            groups.append(f"nat: subnet {subnet.name} ({subnet.cidr}) leaves the host behind its address")
    if t.forwards:
        doc.chain(family, "prerouting", type="nat", hook="prerouting", prio=-100, policy="accept")
        for fwd in t.forwards:
            guest = t.guest(fwd.to)
            address = next((n.address for n in guest.nics if n.address is not None), None) if guest else None
            if address is None:  # validation refuses it
                continue
            where: list[Expr] = []
            if fwd.on_address is not None:
                where.append(_is(_payload("ip", "daddr"), str(fwd.on_address)))
            elif fwd.on is not None:
                where.append(_is(_meta("iifname"), fwd.on))
            to_port = fwd.to_port or fwd.port
            doc.rule(family, "prerouting", *where, _is(_meta("l4proto"), fwd.proto),
                     _is(_payload("th", "dport"), fwd.port),
                     {"dnat": {"family": "ip", "addr": str(address), "port": to_port}})
            on = f" on {fwd.on}" if fwd.on else ""
            groups.append(f"forward: {fwd.proto} port {fwd.port}{on} -> guest {fwd.to} {address}:{to_port}")


# --- the planning step ---------------------------------------------------------------------------------


def inputs_of(t: Topology, stretches: Mapping[str, Stretch]) -> str:
    """A digest of what the render reads (and of the render's own code): while it stays the one recorded
    at the last load, the render would be the same, and a quiet pass need not make it again."""
    parts = t.model_dump_json(include={"name": True, "host": {"services"}, "subnets": True, "switches": True,
                                       "taps": True, "forwards": True,
                                       "guests": {"__all__": {"name", "nics"}}})
    digest = hashlib.sha256(parts.encode())
    digest.update(repr(sorted(stretches.items())).encode())
    digest.update(_code_digest())
    return digest.hexdigest()[:16]


@functools.cache
def _code_digest() -> bytes:
    """This module's functions as compiled: a new umlstate that renders differently renders again."""
    here = sys.modules[__name__]
    codes = [value.__code__ for value in vars(here).values()
             if callable(value) and getattr(value, "__module__", None) == __name__ and hasattr(value, "__code__")]
    return hashlib.sha256(b"".join(marshal.dumps(c) for c in sorted(codes, key=lambda c: c.co_name))).digest()


def plan_step(t: Topology, stretches: Mapping[str, Stretch], b: Builder, *, destroy: bool) -> None:
    """Load the policy when it is missing, changed, or changed by someone else; remove it when unwanted."""
    have, record = b.s.ruleset, b.s.records.ruleset
    # Taps made in this pass: before Linux 6.16 a port's chain went with its old tap, so it is hooked anew.
    new_taps = sorted(n for n, link in b.s.links.items() if link.is_tap and n not in b.origin.links)
    inputs = "" if destroy else inputs_of(t, stretches)
    if record is not None and record.inputs == inputs and have.available and have.tables == record.tables \
            and have.listed == record.listed and not new_taps and not record.left_out & set(b.s.links):
        return  # as loaded, from the same topology: no render needed
    want = None if destroy else render(t, stretches)
    if want is None:
        if record is not None or have.tables:
            why = "no longer in the topology" if have.tables else "gone already: only the record goes"
            b.add(A.DeleteRuleset(why, t.table, (record.tables if record else frozenset()) | have.tables))
        return
    if not have.available:
        b.error("ruleset", t.table, "nftables is not installed, and the guests' traffic policy needs it",
                "apt-get install nftables")
        return
    if not have.tables:
        b.add(A.CreateRuleset("missing", t.table, want.tables, want.document, want.digest, want.summary, want.groups,
                              inputs))
        return
    if record is None:
        why = "tables of this name not recorded as umlstate's (records lost?): loaded anew"
    elif record.rendered != want.digest:
        why = "the topology's policy changed"
    elif record.left_out & set(b.s.links):
        why = f"port(s) {', '.join(sorted(record.left_out & set(b.s.links)))} left out, their link is there now"
    elif have.tables != want.tables or have.listed != record.listed:
        why = "changed outside umlstate (its listing is not the one loaded)"
    elif new_taps:
        why = f"tap(s) {', '.join(new_taps[:3])}{' ...' if len(new_taps) > 3 else ''} made anew: their ports hooked"
    elif record.inputs != inputs:
        why = "umlstate renders the same topology anew (a new version, or a change outside the policy)"
    else:
        return
    b.add(A.LoadRuleset(why, t.table, want.tables, want.document, want.digest, want.summary, want.groups, inputs))
