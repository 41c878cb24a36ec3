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
import importlib.abc
import ipaddress
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType

import pydantic_core

from umlstate import __version__
from umlstate.model.placement import VXLAN_PORT, Stretch
from umlstate.model.snapshot import LISTING_FORM
from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan import nft
from umlstate.plan.nft import (
    ACCEPT,
    DROP,
    ESTABLISHED,
    Document,
    Expr,
    concat,
    each_of,
    in_,
    is_,
    is_not,
    jump,
    meta,
    none_of,
    not_in,
    payload,
    value,
)
from umlstate.plan.ports import Port, ports
from umlstate.plan.result import Builder

ANY4 = str(ipaddress.IPv4Address(0))  # an ARP probe's sender (RFC 5227): harmless, it updates no table
NEIGHBOUR_DISCOVERY = ["nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-solicit"]
# A port that may send from a whole network (a NIC without an address, a router's allow_sources) uses at most
# this many of its addresses at a time: each one the host hears from takes an entry of its neighbour table,
# which every namespace of the machine shares. An address unused for SENDER_TIMEOUT frees its place.
SENDERS_PER_PORT = 32
SENDER_TIMEOUT = 600
PORT_CHAIN, SENDERS_SET = "port-", "senders-"  # each port's ingress chain and set: PREFIX + its link


# --- the render --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    tables: frozenset[str]  # "family name"
    document: str  # JSON for libnftables
    digest: str
    summary: str
    groups: tuple[str, ...]
    ports: frozenset[str]  # the links whose ingress the netdev table hooks


def guest_links(t: Topology) -> list[str]:
    """The host's links that face guests at layer 3: declared taps and bridges (a bridge NIC's tap is a port)."""
    return sorted({tap.name for tap in t.taps} | {b.name for b in t.bridges})


def _servers(t: Topology) -> dict[str, str]:
    """Subnet -> the link that serves it (validation: at most one)."""
    servers = [(x.name, name) for x in t.servers for name in x.subnet_names]
    return {subnet: name for name, subnet in reversed(servers)}


def render(t: Topology, stretches: Mapping[str, Stretch]) -> Rendered | None:
    """The whole policy of this host's slice; None when it has no guest-facing link (nothing to protect)."""
    links = guest_links(t)
    if not links and not t.forwards:
        return None
    doc = Document(t.table)
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
                doc.rule("bridge", "forward", in_(meta("iifname"), members), in_(meta("oifname"), members), DROP)
            groups.append(f"isolated: bridge {bridge.name}'s guests reach the gateway, not each other")
    # Compact JSON in the order the commands were made (a render makes them in the same order every time);
    # pydantic's serializer writes a thousand ports' document in a third of the time json.dumps takes.
    document = pydantic_core.to_json({"nftables": doc.commands}).decode()
    words = [f"port security on {len(secured)} port(s)"] if secured else []
    served = _servers(t)
    subnets = [s for s in t.subnets if s.name in served]
    apart = len(set(served.values()))  # subnets on one link share it
    if apart > 1:
        words.append(f"{apart} {'subnets' if apart == len(subnets) else 'links'} apart"
                     + ("" if not any(s.reach for s in subnets) else ", but reach"))
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
                    hashlib.sha256(document.encode()).hexdigest()[:16], summary, tuple(groups),
                    frozenset(p.link for p in secured))


def _netdev(doc: Document, secured: list[Port], groups: list[str]) -> None:
    family = "netdev"
    doc.new_table(family)
    for p in secured:  # a base chain per port: libnftables' JSON hooks one device per chain
        doc.chain(family, PORT_CHAIN + p.link, type="filter", hook="ingress", dev=p.link, prio=0, policy="accept")
    _every_port(doc, family, secured)
    for p in secured:
        chain = PORT_CHAIN + p.link
        # What every port is checked for, in one chain each port jumps to first (its values in sets keyed by
        # the port's link): a thousand ports' rules cost the kernel a second to load, so each port's chain has
        # only what a set cannot say.
        doc.rule(family, chain, jump(EVERY_PORT))
        if p.sources4 is not None:
            for field in (payload("arp", "saddr ip"), payload("ip", "saddr")):
                for match in each_of(field, p.forbidden4):
                    doc.rule(family, chain, *match, DROP)
            networks = [s for s in p.sources4 if "/" in s]
            if networks:
                _bounded_senders(doc, family, chain, name=SENDERS_SET + p.link, networks=networks,
                                 onlink=list(p.onlink4))
        _neighbour_discovery(doc, family, chain, p)
        sources = "any" if p.sources4 is None else ", ".join(p.sources4)
        but = f" but {', '.join(p.forbidden4)}" if p.forbidden4 else ""
        few = f" ({SENDERS_PER_PORT} at a time)" if any("/" in s for s in p.sources4 or ()) else ""
        groups.append(f"port {p.link}: {p.who}: MAC {', '.join(p.macs) or 'any'}; IPv4 from {sources}{but}{few}; "
                      "IPv4, IPv6 and ARP only (no VLAN tags); no RA, redirects, DHCP replies, "
                      "neighbour adverts or DAD probes for others, or link-layer addresses not its own")


EVERY_PORT = "every-port"  # the netdev table's chain of what every port's chain checks first
# The netdev table's sets, keyed by a port's link: the ports whose MACs are declared and those MACs, the ports
# whose IPv4 sources are checked and those sources, and every port's IPv6 sources.
MAC_PORTS, MACS, CHECKED4, SOURCES4, SOURCES6 = "mac-ports", "macs", "ipv4-ports", "sources4", "sources6"
# The inet table's sets of (in, out) link pairs a guest's packet is forwarded between: a link to itself, on an
# isolated bridge (dropped) and on any other link (accepted).
SAME_ISOLATED, SAME_LINK = "same-link-isolated", "same-link"
ICMPV6 = 58  # the IPv6 next header (and meta l4proto) of ICMPv6
# What a node may send from the unspecified address: duplicate address detection's solicitations, and MLD
# reports (RFC 3590) before it has an address.
FROM_UNSPECIFIED = ("nd-router-solicit", "nd-neighbor-solicit", "mld-listener-report", "mld2-listener-report")
RS_LENGTH = 8  # an ICMPv6 router solicitation without options
FROM_ADDRESS = is_not(payload("ip6", "saddr"), "::")
ND_SAID = is_(payload("icmpv6", "type"), {"range": [135, 136]})  # a neighbour solicitation or advert
RS_SAID = is_(payload("icmpv6", "type"), "nd-router-solicit")
ND_LENGTH = 24  # an ICMPv6 neighbour solicitation or advert without options
LLADDR_OPTION = 8  # a link-layer address option on Ethernet: type, length 1 (8 bytes), the MAC


def _every_port(doc: Document, family: str, secured: list[Port]) -> None:
    """The checks that are the same for every port: only what the others can read, no router's or server's
    messages, and neighbour discovery's shape; then each port's own MACs and sources, looked up by its link."""
    with_macs = [p for p in secured if p.macs]
    checked4 = [p for p in secured if p.sources4 is not None]
    doc.keyed_set(family, MAC_PORTS, ["ifname"], [(p.link,) for p in with_macs])
    doc.keyed_set(family, MACS, ["ifname", "ether_addr"], [(p.link, mac) for p in with_macs for mac in p.macs])
    doc.keyed_set(family, CHECKED4, ["ifname"], [(p.link,) for p in checked4])
    doc.keyed_set(family, SOURCES4, ["ifname", "ipv4_addr"],
                  [(p.link, a) for p in checked4 for a in _disjoint(p.sources4 or ())])
    doc.keyed_set(family, SOURCES6, ["ifname", "ipv6_addr"],
                  [(p.link, a) for p in secured for a in _disjoint(p.sources6)])
    doc.chain(family, EVERY_PORT)
    # Only what the checks can read: a VLAN tag (or PPPoE, ...) would carry ARP and IP past them.
    doc.rule(family, EVERY_PORT, *none_of(meta("protocol"), ["ip", "ip6", "arp"]), DROP)
    for match in each_of(payload("icmpv6", "type"), ["nd-router-advert", "nd-redirect"]):
        doc.rule(family, EVERY_PORT, *match, DROP)
    doc.rule(family, EVERY_PORT, is_(payload("icmp", "type"), "redirect"), DROP)
    doc.rule(family, EVERY_PORT, is_(meta("protocol"), "ip"), is_(payload("udp", "sport"), 67), DROP)
    doc.rule(family, EVERY_PORT, is_(meta("protocol"), "ip6"), is_(payload("udp", "sport"), 547), DROP)
    # From the unspecified address ``::``: DAD's solicitations and MLD reports only.
    unspecified = is_(payload("ip6", "saddr"), "::")
    doc.rule(family, EVERY_PORT, unspecified, is_not(meta("l4proto"), ICMPV6), DROP)
    doc.rule(family, EVERY_PORT, unspecified, *none_of(payload("icmpv6", "type"), FROM_UNSPECIFIED), DROP)
    # A solicitation (135) or advert (136) from an address: no options, or one link-layer address option, which
    # Linux would take even behind another option (its MAC is the port's own: _neighbour_discovery).
    said = [ND_SAID, FROM_ADDRESS]
    doc.rule(family, EVERY_PORT, *said, *none_of(payload("ip6", "length"), [ND_LENGTH, ND_LENGTH + LLADDR_OPTION]),
             DROP)
    # (behind an extension header, an option could not fit in that length: the load finds none, and passes)
    doc.rule(family, EVERY_PORT, *said, is_(payload("ip6", "length"), ND_LENGTH + LLADDR_OPTION),
             *none_of(_raw_th(192, 16), ["0x0101", "0x0201"]), DROP)
    # A router solicitation from an address (a forwarding host takes its option into its neighbour table): no
    # options, or one source link-layer address option.
    asked = [RS_SAID, FROM_ADDRESS]
    doc.rule(family, EVERY_PORT, *asked, *none_of(payload("ip6", "length"), [RS_LENGTH, RS_LENGTH + LLADDR_OPTION]),
             DROP)
    doc.rule(family, EVERY_PORT, *asked, is_(payload("ip6", "length"), RS_LENGTH + LLADDR_OPTION),
             is_not(_raw_th(64, 16), "0x0101"), DROP)
    # The port's own: frames and ARP senders from its MACs (when declared), IPv4 sources (when checked: an ARP
    # probe's sender 0.0.0.0 too; a port on IPv6 subnets alone has none, so no IPv4 at all), IPv6 sources.
    link = meta("iifname")
    if with_macs:
        for field in (payload("ether", "saddr"), payload("arp", "saddr ether")):
            doc.rule(family, EVERY_PORT, is_(link, f"@{MAC_PORTS}"), is_not(concat(link, field), f"@{MACS}"), DROP)
    if checked4:
        doc.rule(family, EVERY_PORT, is_not(payload("arp", "saddr ip"), ANY4), is_(link, f"@{CHECKED4}"),
                 is_not(concat(link, payload("arp", "saddr ip")), f"@{SOURCES4}"), DROP)
        doc.rule(family, EVERY_PORT, is_(link, f"@{CHECKED4}"),
                 is_not(concat(link, payload("ip", "saddr")), f"@{SOURCES4}"), DROP)
    doc.rule(family, EVERY_PORT, is_not(concat(link, payload("ip6", "saddr")), f"@{SOURCES6}"), DROP)


def _disjoint(sources: tuple[str, ...]) -> list[str]:
    """Addresses and networks as the fewest that do not overlap (a router's own address inside its
    allow_sources): the kernel refuses a set whose intervals overlap."""
    if not any("/" in s for s in sources):
        return list(sources)  # distinct addresses (a port's are): disjoint already, and a thousand ports' quick
    given = [ipaddress.ip_network(s) for s in sources]
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
        *ipaddress.collapse_addresses(n for n in given if isinstance(n, ipaddress.IPv4Network)),
        *ipaddress.collapse_addresses(n for n in given if isinstance(n, ipaddress.IPv6Network))]
    return [str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n) for n in nets]


def _neighbour_discovery(doc: Document, family: str, chain: str, p: Port) -> None:
    """A port's own IPv6 neighbour discovery checks (the shape is every port's: _every_port).

    - The link-layer address option of a solicitation or advert from an address: one of the port's MACs.
    - The link-layer address option of a router solicitation from an address: one of the port's MACs too.
    - The address a neighbour advert names, or a DAD solicitation (from ``::``) probes, which would make a
      neighbour give that address up as a duplicate: the port's own addresses (link-local and declared), and
      a router's IPv6 ``allow_sources`` but the host's gateways and other NICs' addresses there.

    These look at raw bits of the message (nftables 1.0.6 has no "icmpv6 taddr"), which libnftables' JSON
    cannot look up in a set keyed by the port's link: they stay in the port's chain.
    """
    if p.macs:
        own = ["0x" + m.replace(":", "") for m in p.macs]
        doc.rule(family, chain, ND_SAID, FROM_ADDRESS, is_(payload("ip6", "length"), ND_LENGTH + LLADDR_OPTION),
                 *none_of(_raw_th(208, 48), own), DROP)
        doc.rule(family, chain, RS_SAID, FROM_ADDRESS, is_(payload("ip6", "length"), RS_LENGTH + LLADDR_OPTION),
                 *none_of(_raw_th(80, 48), own), DROP)
    target = _raw_th(64, 128)  # the target address of a solicitation or advert
    targets = _own_targets(p.sources6)
    networks6 = p.networks6
    for claim in ([is_(payload("icmpv6", "type"), "nd-neighbor-advert")],
                  [is_(payload("ip6", "saddr"), "::"), is_(payload("icmpv6", "type"), "nd-neighbor-solicit")]):
        if networks6:  # a router's allow_sources: its own addresses and those networks, no others
            for other in p.forbidden6:  # inside those networks, yet the host's gateway or a neighbour's
                doc.rule(family, chain, *claim, is_(target, _bits128(int(ipaddress.IPv6Address(other)))), DROP)
            for match in each_of(target, [_bits128(t) for t in targets]) if targets else []:
                doc.rule(family, chain, *claim, *match, ACCEPT)
            for net in networks6:
                span = [_bits128(int(net.network_address)), _bits128(int(net.broadcast_address))]
                doc.rule(family, chain, *claim, is_(target, {"range": span}), ACCEPT)
            doc.rule(family, chain, *claim, DROP)
        elif targets:
            doc.rule(family, chain, *claim, *none_of(target, [_bits128(t) for t in targets]), DROP)
        else:  # no address of its own (a declared tap nobody is behind): it claims none
            doc.rule(family, chain, *claim, DROP)


def _own_targets(sources6: Iterable[str]) -> list[int]:
    """The addresses of its own a port may advertise in IPv6 neighbour discovery, as integers: its link-local
    and declared ones (a router's allow_sources networks are matched apart)."""
    return sorted(int(ipaddress.IPv6Address(a)) for a in sources6 if a != "::" and "/" not in a)


def _bits128(address: int) -> str:
    """An IPv6 address as the 128-bit number a raw payload match compares (JSON's numbers stop at 64 bits)."""
    return f"{address:#034x}"


def _raw_th(offset: int, length: int) -> Expr:
    """Bits of the transport header (here ICMPv6), as nftables' raw payload ``@th,OFFSET,LENGTH``."""
    return {"payload": {"base": "th", "offset": offset, "len": length}}


def port_link(name: str) -> str | None:
    """The link a port's chain or set is named after (``port-LINK``, ``senders-LINK``); None for the others."""
    for prefix in (PORT_CHAIN, SENDERS_SET):
        if name.startswith(prefix):
            return name[len(prefix):]
    return None


def _bounded_senders(doc: Document, family: str, chain: str, *, name: str, networks: list[str],
                     onlink: list[str]) -> None:
    """At most SENDERS_PER_PORT addresses at a time as ARP sender (of any network the port may use) or as
    IPv4 source on its own subnets (a router's forwarded sources lie beyond it and take no neighbour entry).

    ``update`` puts the address in the set (or renews it); on a full set it fails and the rule stops there,
    so the next rule, which drops what the set lacks, drops it."""
    doc.bounded_set(family, name, "ipv4_addr", SENDERS_PER_PORT, SENDER_TIMEOUT)
    for field, where in ((payload("arp", "saddr ip"), networks), (payload("ip", "saddr"), onlink)):
        if where:
            for match in each_of(field, where):
                doc.rule(family, chain, *match, {"set": {"op": "update", "elem": field, "set": f"@{name}"}})
                doc.rule(family, chain, *match, is_not(field, f"@{name}"), DROP)


def _inet(doc: Document, t: Topology, links: list[str], stretches: Mapping[str, Stretch],
          groups: list[str]) -> None:
    family = "inet"
    doc.new_table(family)
    doc.chain(family, "input", type="filter", hook="input", prio=0, policy="accept")
    doc.chain(family, "guest-input")
    doc.chain(family, "forward", type="filter", hook="forward", prio=0, policy="accept")
    doc.chain(family, "guest-forward")
    _underlay(doc, stretches, groups)
    if links:
        doc.rule(family, "input", in_(meta("iifname"), links), jump("guest-input"))
        doc.rule(family, "forward", in_(meta("iifname"), links), jump("guest-forward"))
    # What guests may open on the host itself.
    doc.rule(family, "guest-input", ESTABLISHED, ACCEPT)
    gateways = sorted({str(s.gateway) for s in t.subnets if s.gateway is not None and s.gateway.version == 4})
    gateways6 = sorted({str(s.gateway) for s in t.subnets if s.gateway is not None and s.gateway.version == 6})
    if gateways:
        doc.rule(family, "guest-input", is_(payload("icmp", "type"), "echo-request"),
                 in_(payload("ip", "daddr"), gateways), ACCEPT)
    if gateways6:
        doc.rule(family, "guest-input", is_(payload("icmpv6", "type"), "echo-request"),
                 in_(payload("ip6", "daddr"), gateways6), ACCEPT)
    gateways += gateways6
    doc.rule(family, "guest-input", in_(payload("icmpv6", "type"), NEIGHBOUR_DISCOVERY), ACCEPT)
    for service in sorted(set(t.host.services), key=lambda s: (s.proto, s.port)):
        doc.rule(family, "guest-input", is_(meta("l4proto"), service.proto),
                 is_(payload("th", "dport"), service.port), ACCEPT)
    doc.rule(family, "guest-input", DROP)
    opened = ", ".join(f"{s.proto}/{s.port}" for s in t.host.services) or "nothing else"
    groups.append(f"host: guests reach ICMP echo to {', '.join(gateways) or 'no gateway'} and {opened}")
    # Between subnets: only where reach says so; a link to itself is a bridge's own traffic (br_netfilter),
    # but an isolated bridge's. Looked up in sets: a forwarded packet takes one lookup, not a walk past a rule
    # per link, and a set's thousand elements load faster than a thousand rules.
    doc.rule(family, "guest-forward", ESTABLISHED, ACCEPT)
    isolated = {b.name for b in t.bridges if b.isolated}
    through = concat(meta("iifname"), meta("oifname"))
    for name, which, verdict in ((SAME_ISOLATED, [x for x in links if x in isolated], DROP),
                                 (SAME_LINK, [x for x in links if x not in isolated], ACCEPT)):
        if which:
            doc.keyed_set(family, name, ["ifname", "ifname"], [(x, x) for x in which])
            doc.rule(family, "guest-forward", is_(through, f"@{name}"), verdict)
    servers = _servers(t)
    for subnet in t.subnets:
        here = servers.get(subnet.name)
        for other in subnet.reach:
            there = servers.get(other)
            if here and there:
                doc.rule(family, "guest-forward", is_(meta("iifname"), here), is_(meta("oifname"), there), ACCEPT)
                groups.append(f"reach: subnet {subnet.name} may open connections to subnet {other}")
    if links:
        doc.rule(family, "guest-forward", in_(meta("oifname"), links), DROP)
    if len(links) > 1:
        groups.append(f"apart: guests on {', '.join(links)} do not reach each other's links but as reach says")
    _nat(doc, t, links, groups)


def _vni(vni: int) -> Expr:
    """A VXLAN datagram to port VXLAN_PORT carrying this VNI (8 bytes of UDP, 4 of flags, then the 24-bit id)."""
    return is_({"payload": {"base": "th", "offset": 96, "len": 24}}, vni)


def _underlay(doc: Document, stretches: Mapping[str, Stretch], groups: list[str]) -> None:
    """A stretched bridge's frames come only from the other hosts' VXLAN: the kernel's VXLAN socket takes a
    datagram to any address of the host (its LAN address, a gateway, 127.0.0.1), and what a NATed guest sends
    to a peer would leave with this host's underlay address as its source. (A local user's datagram to a
    peer leaves the same way, and cannot be told from the bridge's own: guests' frames keep the socket of
    the tap their process holds, so their owner is a user too. The README says so.)"""
    family = "inet"
    for st in sorted(stretches.values(), key=lambda x: x.link):
        remotes = [str(r) for r in st.remotes]
        ours = [is_(payload("udp", "dport"), VXLAN_PORT), _vni(st.vni)]
        doc.rule(family, "input", *ours, not_in(payload("ip", "saddr"), remotes), DROP)
        doc.rule(family, "input", *ours, is_(meta("iifname"), "lo"), DROP)
        doc.rule(family, "guest-forward", *ours, DROP)  # a guest's own, before masquerade makes it the host's
        groups.append(f"underlay: VXLAN id {st.vni} (bridge {st.bridge}) only from {', '.join(remotes)}, "
                      "never from this host itself or a guest")


def _nat(doc: Document, t: Topology, links: list[str], groups: list[str]) -> None:
    family = "inet"
    natted = [s for s in t.subnets if s.nat]
    if natted:
        doc.chain(family, "postrouting", type="nat", hook="postrouting", prio=100, policy="accept")
        for subnet in natted:
            leaving = [not_in(meta("oifname"), links)] if links else []
            doc.rule(family, "postrouting", is_(payload("ip", "saddr"), value(str(subnet.cidr))),
                     *leaving, {"masquerade": None})
            groups.append(f"nat: subnet {subnet.name} ({subnet.cidr}) leaves the host behind its address")
    if t.forwards:
        doc.chain(family, "prerouting", type="nat", hook="prerouting", prio=-100, policy="accept")
        for fwd in t.forwards:
            guest = t.guest(fwd.to)
            address = guest.first_ip(4) if guest else None
            if address is None:  # validation refuses it
                continue
            where: list[Expr] = []
            if fwd.on_address is not None:
                where.append(is_(payload("ip", "daddr"), str(fwd.on_address)))
            elif fwd.on is not None:
                where.append(is_(meta("iifname"), fwd.on))
            to_port = fwd.to_port or fwd.port
            doc.rule(family, "prerouting", *where, is_(meta("l4proto"), fwd.proto),
                     is_(payload("th", "dport"), fwd.port),
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
    """The render's source (this module's, and the ports' and nftables words' it uses): a new umlstate that
    renders differently renders again. Source, not compiled code: code compiled from source and code read
    from a .pyc marshal differently, and a pass run the other way would load the policy again."""
    digest = hashlib.sha256()
    for module in (sys.modules[__name__], nft, sys.modules[Port.__module__]):
        digest.update(_source(module))
    return digest.digest()


def _source(module: ModuleType) -> bytes:
    spec = module.__spec__
    loader = spec.loader if spec is not None else None
    text = loader.get_source(module.__name__) if isinstance(loader, importlib.abc.InspectLoader) else None
    if text is None:  # installed without its .py files: its version, so that at least a new version renders again
        return f"{module.__name__} {__version__}".encode()
    return text.encode()


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
                              inputs, want.ports))
        return
    if record is None:
        why = "tables of this name not recorded as umlstate's (records lost?): loaded anew"
    elif record.rendered != want.digest:
        why = "the topology's policy changed"
    elif record.left_out & set(b.s.links):
        why = f"port(s) {', '.join(sorted(record.left_out & set(b.s.links)))} left out, their link is there now"
    elif have.listed != record.listed and not record.listed.startswith(LISTING_FORM):
        why = "recorded by an older umlstate, which listed it in another form: loaded anew to record it"
    elif have.tables != want.tables or have.listed != record.listed:
        why = "changed outside umlstate (its listing is not the one loaded)"
    elif new_taps:
        why = f"tap(s) {', '.join(new_taps[:3])}{' ...' if len(new_taps) > 3 else ''} made anew: their ports hooked"
    elif record.inputs != inputs:
        why = "umlstate renders the same topology anew (a new version, or a change outside the policy)"
    else:
        return
    b.add(A.LoadRuleset(why, t.table, want.tables, want.document, want.digest, want.summary, want.groups, inputs,
                        want.ports))
