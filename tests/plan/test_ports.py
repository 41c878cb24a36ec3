"""The traffic policy's ports for IPv6 and several subnets, rendered without root: what each port's chain says.

The hostile frames themselves are sent on a real kernel in tests/security/test_traffic_policy.py; these pin
the render's shape where a mistake would be silent: a rule with no match drops everything, a check left out
lets everything through.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from umlstate.model.loader import load_text
from umlstate.plan.cmdline import guest_line, wires_of
from umlstate.plan.ports import ports
from umlstate.plan.ruleset import render

TOPOLOGY = """\
name: lab
subnets:
  - {name: a, cidr: 10.0.1.0/24, gateway: 10.0.1.254}
  - {name: a6, cidr: "2001:db8:1::/64", gateway: "2001:db8:1::fe"}
  - {name: b6, cidr: "2001:db8:2::/64", gateway: "2001:db8:2::fe"}
  - {name: c, cidr: 10.0.3.0/24, gateway: 10.0.3.254}
  - {name: c6, cidr: "2001:db8:3::/64"}
taps: [{name: t0, owner: nobody, subnet: [c6, c]}]
switches:
  - {name: br, kind: bridge, subnet: [a, a6]}
  - {name: br6, kind: bridge, subnet: b6}
  - {name: sw, tap: t0, user: nobody}
guests:
  - {name: six, user: nobody, disk: {image: /srv/x.img}, nics: [{switch: br6, address: "2001:db8:2::22"}]}
  - name: rtr
    user: nobody
    disk: {image: /srv/x.img}
    routes: [{to: default, via: "2001:db8:1::fe"}]
    nics: [{switch: br, addresses: [10.0.1.3, "2001:db8:1::33"], allow_sources: ["2001:db8:5::/64", "2001:db8:6::/96"]}]
  - {name: g1, user: nobody, disk: {image: /srv/x.img}, nics: [{switch: sw, address: "2001:db8:3::41"}]}
  - {name: g2, user: nobody, disk: {image: /srv/x.img}, nics: [{switch: sw, address: 10.0.3.5}]}
"""


def chain(rendered: Any, link: str) -> list[list[dict[str, Any]]]:
    doc = json.loads(rendered.document)["nftables"]
    return [c["add"]["rule"]["expr"] for c in doc if "rule" in c.get("add", {})
            and c["add"]["rule"]["chain"] == f"port-{link}"]


def elements(rendered: Any, name: str) -> list[Any]:
    doc = json.loads(rendered.document)["nftables"]
    return [e["concat"] if isinstance(e, dict) else e for c in doc if c.get("add", {}).get("set", {}).get("name") == name
            for e in c["add"]["set"].get("elem", [])]


def test_a_port_on_ipv6_subnets_alone_drops_ipv4_and_not_everything() -> None:
    t = load_text(TOPOLOGY)
    rendered = render(t, {})
    rules = chain(rendered, "six-0")
    assert [{"drop": None}] not in rules, "a rule without a match drops every frame"
    # Its IPv4 sources are checked, and it has none: every IPv4 packet and ARP claim fails the lookup.
    assert "six-0" in elements(rendered, "ipv4-ports")
    assert not [e for e in elements(rendered, "sources4") if e[0] == "six-0"]
    assert ["six-0", "2001:db8:2::22"] in elements(rendered, "sources6")
    port = next(p for p in ports(t) if p.link == "six-0")
    assert port.sources4 == () and "2001:db8:2::22" in port.sources6


def test_a_router_with_ipv6_allow_sources_advertises_its_own_and_its_networks_addresses_alone() -> None:
    rules = chain(render(load_text(TOPOLOGY), {}), "rtr-0")
    adverts = [r for r in rules if {"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}},
                                              "right": "nd-neighbor-advert"}} in r]
    assert adverts[-1][-1] == {"drop": None} and len(adverts[-1]) == 2, "every other advert is dropped"
    accepted = [r for r in adverts[:-1] if r[-1] == {"accept": None}]
    assert len(accepted) == len(adverts) - 1 == 2 + 2  # its link-local and declared address, its two networks
    ranges = [m["match"]["right"] for r in accepted for m in r[1:-1] if isinstance(m["match"]["right"], dict)]
    assert {"range": ["0x20010db8000500000000000000000000", "0x20010db800050000ffffffffffffffff"]} in ranges
    assert {"range": ["0x20010db8000600000000000000000000", "0x20010db80006000000000000ffffffff"]} in ranges


def test_guests_sharing_a_tap_do_not_forbid_each_others_addresses() -> None:
    """g1 (IPv6 only) may use a spare IPv4 address of the tap's subnet; g2's is g2's own, and the port is
    theirs together: 10.0.3.5 is a source, not a forbidden one (the gateway is)."""
    port = next(p for p in ports(load_text(TOPOLOGY)) if p.link == "t0")
    assert port.sources4 is not None and "10.0.3.5" in port.sources4
    assert "10.0.3.5" not in port.forbidden4 and "10.0.3.254" in port.forbidden4


def test_an_ipv6_default_route_leaves_the_ipv4_gateway_on_the_command_line() -> None:
    t = load_text(TOPOLOGY)
    guest = t.guest("rtr")
    assert guest is not None
    wires = wires_of(t, guest, None)
    assert isinstance(wires, tuple)
    line = guest_line(t, guest, "linux.uml", wires)
    assert "umlstate.gw=10.0.1.254" in line.argv and "umlstate.vec0=10.0.1.3/24" in " ".join(line.argv)


def test_a_ports_sources_never_overlap_in_their_set() -> None:
    """The kernel refuses a set whose intervals overlap, and with it the whole policy: a router's own address
    inside its allow_sources is one network."""
    t = load_text(TOPOLOGY.replace('allow_sources: ["2001:db8:5::/64"', 'allow_sources: ["10.0.1.0/25", "2001:db8:1::/64"'))
    rendered = render(t, {})
    for name in ("sources4", "sources6"):
        rtr = [e[1] for e in elements(rendered, name) if e[0] == "rtr-0"]
        nets = [ipaddress.ip_network(x["prefix"]["addr"] + f"/{x['prefix']['len']}" if isinstance(x, dict) else x)
                for x in rtr]
        assert not any(a != b and a.overlaps(b) for a in nets for b in nets), rtr
    assert [e[1] for e in elements(rendered, "sources4") if e[0] == "rtr-0"] == \
        [{"prefix": {"addr": "10.0.1.0", "len": 25}}], "10.0.1.3 is inside"
