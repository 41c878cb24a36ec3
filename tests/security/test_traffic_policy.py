"""Hostile guests against the traffic policy, on a real kernel with real bridges, taps and nftables.

Each guest is played by the test, attached to its own tap as UML attaches
(tapguest.py), and sends what issue 16's hostile guests sent: a neighbour's
address in ARP, a neighbour's MAC, a LAN source address, connections to the
host's services and to another subnet, router advertisements, floods. Where
the topology can switch a protection off (``port_security: false``, ``reach``)
the same attack runs both ways: it succeeds with the protection off (so the
test would catch it) and fails with it on, the default. The farm's guests are
held down (`umlstate stop`) so that no kernel boots: their taps and the policy
are there all the same.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import secrets
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tapguest import (
    BROADCAST,
    ETH_P_IP,
    ETH_P_IPV6,
    Sniffer,
    TapGuest,
    arp,
    attached,
    ether,
    icmp_echo,
    icmpv6,
    icmpv6_of,
    in_netns,
    ipv4,
    ipv6_echo,
    is_arp_request_for,
    is_ipv4,
    is_solicitation_for,
    mac,
    neighbour_advert,
    neighbour_solicit,
    router_advert,
    router_solicit,
    tcp_syn,
)

from umlstate.host.icmp import checksum
from umlstate.plan.actions import BRIDGE_FDB_MAX
from umlstate.plan.ruleset import SENDERS_PER_PORT

from conftest import Netns, host_and_lan, hosts_on_lan, needs_root, umlstate

pytestmark = [needs_root, pytest.mark.kernel]

WEB, DB, DMZ, LAB = "fe:fd:00:00:00:01", "fe:fd:00:00:00:02", "fe:fd:00:00:00:03", "fe:fd:00:00:00:04"
WEB_LL = "fe80::fcfd:ff:fe00:1"  # the link-local address WEB's MAC gives (EUI-64)
DB_LL = "fe80::fcfd:ff:fe00:2"
WEB6, DB6 = "2001:db8:99::1", "2001:db8:99::2"  # their declared IPv6 addresses, on br0's second subnet
MIXED6 = "2001:db8:99:0:fcfd:ff:fe00:1"  # the high half of WEB6 with the low half of WEB_LL: no one's to claim
TOPOLOGY = """\
name: {name}
host:
  run_dir: {tmp}/run
  state_dir: {tmp}/state
  sysctl: {{net.ipv4.ip_forward: 1}}
  services: [{{proto: tcp, port: 8081}}]
subnets:
  - {{name: guests, cidr: 172.16.99.0/24, gateway: 172.16.99.254, proxy_arp: {{uplink: eth0}}, reach: {reach}}}
  - {{name: dmz, cidr: 172.16.98.0/24, gateway: 172.16.98.254}}
  - {{name: guests6, cidr: "2001:db8:99::/64", gateway: "2001:db8:99::fe"}}
switches:
  - {{name: br0, kind: bridge, subnet: [guests, guests6]}}
  - {{name: br1, kind: bridge, subnet: dmz, isolated: {isolated}}}
guests:
  - {{name: web, user: nobody, disk: {{image: {tmp}/img}},
     nics: [{{switch: br0, addresses: [172.16.99.1, "2001:db8:99::1"], mac: "{web}", port_security: {security}}}]}}
  - {{name: db, user: nobody, disk: {{image: {tmp}/img}},
     nics: [{{switch: br0, addresses: [172.16.99.2, "2001:db8:99::2"], mac: "{db}",
              allow_sources: ["2001:db8:77::/64", "2001:db8:99::/64"]}}]}}  # a router: IPv6 from beyond it too
  - {{name: dmzweb, user: nobody, disk: {{image: {tmp}/img}},
     nics: [{{switch: br1, address: 172.16.98.1, mac: "{dmz}"}}]}}
  - {{name: lab, user: nobody, disk: {{image: {tmp}/img}}, nics: [{{switch: br1, mac: "{lab}"}}]}}  # no address
"""


@dataclass
class Farm:
    host: Netns
    lan: Netns
    path: Path
    name: str

    def cli(self, command: str, *args: str) -> str:
        done = umlstate(command, str(self.path), *args, netns=self.host.name)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def gateway_mac(self, bridge: str = "br0") -> str:
        address: str = self.host.json("link", "show", bridge)[0]["address"]
        return address


def make_farm(tmp: Path, *, security: bool = True, reach: str = "[]", isolated: bool = False) -> Iterator[Farm]:
    with host_and_lan() as (host, lan):
        (tmp / "img").write_bytes(b"")
        name = "p" + secrets.token_hex(3)
        path = tmp / "topology.yaml"
        path.write_text(TOPOLOGY.format(name=name, tmp=tmp, web=WEB, db=DB, dmz=DMZ, lab=LAB, reach=reach,
                                        security="true" if security else "false",
                                        isolated="true" if isolated else "false"))
        farm = Farm(host, lan, path, name)
        for guest in ("web", "db", "dmzweb", "lab"):
            farm.cli("stop", guest)  # held down: no kernel boots, the taps and the policy are made all the same
        farm.cli("apply", "--yes")
        yield farm


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    yield from make_farm(tmp_path)


@pytest.fixture(params=[True, False], ids=["port-security", "port-security-off"])
def secured(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Farm, bool]]:
    on: bool = request.param
    for farm in make_farm(tmp_path, security=on):
        yield farm, on


def neighbours(farm: Farm, dev: str) -> dict[str, str]:
    return {n["dst"]: n.get("lladdr", "") for n in farm.host.json("-4", "neigh", "show", "dev", dev)}


def fdb(farm: Farm, port: str) -> set[str]:
    """The MACs the bridge learned on a port (not its own permanent or multicast entries)."""
    out = farm.host.run("bridge", "-j", "fdb", "show", "br", "br0", "brport", port).stdout
    return {e["mac"] for e in json.loads(out or "[]") if e.get("state") != "permanent" and "self" not in e.get("flags", [])
            and not int(e["mac"][:2], 16) & 1}


# --- 1. taking over a neighbour's address --------------------------------------------------------


def test_a_guest_cannot_take_over_a_neighbours_address(secured: tuple[Farm, bool]) -> None:
    farm, on = secured
    with attached(farm.host.name, "web-0", "db-0") as (web, db):
        db.send(arp(DB, "172.16.99.2", "172.16.99.254"))  # the real db makes itself known
        db.receive(lambda f: f[12:14] == b"\x08\x06")  # the host's ARP reply: the entry is there
        assert neighbours(farm, "br0")["172.16.99.2"] == DB
        # web says it is 172.16.99.2, with its own MAC, in a reply to the host and gratuitously
        web.send(arp(WEB, "172.16.99.2", "172.16.99.254", reply_to=farm.gateway_mac()),
                 arp(WEB, "172.16.99.2", "172.16.99.2"))
        # ordered after web's lies on the same path: once the host has answered this, it has seen them
        web.send(arp(WEB, "172.16.99.1", "172.16.99.254"))
        web.receive(lambda f: f[12:14] == b"\x08\x06")
    assert neighbours(farm, "br0")["172.16.99.2"] == (DB if on else WEB)


def test_a_guest_cannot_take_over_a_neighbours_ipv6_address(secured: tuple[Farm, bool]) -> None:
    """The IPv6 twin: web, from its own link-local address and MAC, advertises db's link-local address."""
    farm, on = secured
    farm.host.run("ip", "-6", "neigh", "replace", DB_LL, "lladdr", DB, "dev", "br0", "nud", "stale")
    with attached(farm.host.name, "web-0") as (web,):  # to all nodes, as unsolicited adverts go
        web.send(neighbour_advert(WEB, WEB_LL, DB_LL, "33:33:00:00:00:01", "ff02::1"))
        web.send(arp(WEB, "172.16.99.1", "172.16.99.254"))  # after the lie on the same path: answered, it was seen
        web.receive(lambda f: f[12:14] == b"\x08\x06")
    entry = {n["dst"]: n.get("lladdr") for n in farm.host.json("-6", "neigh", "show", "dev", "br0")}
    assert entry[DB_LL] == (DB if on else WEB), entry


def test_a_guest_cannot_take_over_a_neighbours_declared_ipv6_address(secured: tuple[Farm, bool]) -> None:
    """web advertises db's declared global address, and an address made of the halves of its own two (each
    half is web's, the whole is not): the host's entries stay db's."""
    farm, on = secured
    for target in (DB6, MIXED6):
        farm.host.run("ip", "-6", "neigh", "replace", target, "lladdr", DB, "dev", "br0", "nud", "stale")
    with attached(farm.host.name, "web-0") as (web,):
        web.send(neighbour_advert(WEB, WEB6, DB6, "33:33:00:00:00:01", "ff02::1"),
                 neighbour_advert(WEB, WEB6, MIXED6, "33:33:00:00:00:01", "ff02::1"),
                 neighbour_advert(WEB, WEB6, WEB6, "33:33:00:00:00:01", "ff02::1"))  # its own: let through
        web.send(arp(WEB, "172.16.99.1", "172.16.99.254"))  # after the lies on the same path: answered, seen
        web.receive(lambda f: f[12:14] == b"\x08\x06")
    entry = {n["dst"]: n.get("lladdr") for n in farm.host.json("-6", "neigh", "show", "dev", "br0")}
    assert (entry[DB6], entry[MIXED6]) == ((DB, DB) if on else (WEB, WEB)), entry


def test_a_router_advertises_its_own_and_its_networks_ipv6_addresses_and_not_a_neighbours(farm: Farm) -> None:
    """db forwards from 2001:db8:77::/64 and its own subnet's /64 (allow_sources): it may advertise an address
    there, not web's, although web's is inside the second."""
    beyond = "2001:db8:77::9"
    for target in (WEB6, beyond):
        farm.host.run("ip", "-6", "neigh", "replace", target, "lladdr", WEB, "dev", "br0", "nud", "stale")
    with attached(farm.host.name, "db-0") as (db,):
        db.send(neighbour_advert(DB, DB6, WEB6, "33:33:00:00:00:01", "ff02::1"),
                neighbour_advert(DB, DB6, beyond, "33:33:00:00:00:01", "ff02::1"))
        db.send(arp(DB, "172.16.99.2", "172.16.99.254"))  # after the adverts on the same path: answered, seen
        db.receive(lambda f: f[12:14] == b"\x08\x06")
    entry = {n["dst"]: n.get("lladdr") for n in farm.host.json("-6", "neigh", "show", "dev", "br0")}
    assert (entry[WEB6], entry[beyond]) == (WEB, DB), entry


def test_a_guest_sends_from_its_declared_ipv6_address_and_not_a_neighbours(secured: tuple[Farm, bool]) -> None:
    """Echo requests to the IPv6 gateway, from db's address and then from web's own: the host, to answer one,
    first solicits its sender's MAC, which web's tap sees (the bridge floods the solicitation)."""
    farm, on = secured
    farm.host.run("ip", "-6", "neigh", "flush", "dev", "br0")
    with attached(farm.host.name, "web-0") as (web,):
        gw = farm.gateway_mac()
        web.send(ether(gw, WEB, ETH_P_IPV6, ipv6_echo(DB6, "2001:db8:99::fe", 0x66)),
                 ether(gw, WEB, ETH_P_IPV6, ipv6_echo(WEB6, "2001:db8:99::fe", 0x77)))
        seen = web.receive(lambda f: is_solicitation_for(f, WEB6), seconds=10)  # its own address passes
    assert any(is_solicitation_for(f, DB6) for f in seen) is not on


# --- 2. stealing a neighbour's MAC -----------------------------------------------------------------


def test_a_guest_cannot_probe_a_neighbours_address_away_nor_lie_in_its_link_layer_option(
        secured: tuple[Farm, bool]) -> None:
    """What web sends to db's segment (multicast, which the bridge floods to db's port), then an echo to all
    nodes from its own link-local address, which passes and, arriving after them on the same path, shows they
    were judged: a duplicate address probe (from ``::``) for db's address, which would make a booting db give
    its address up; anything else from ``::``; an advert for its own address that puts db's MAC in its
    link-layer option, one with an option slipped in before its own, and a router solicitation with db's MAC
    in its option."""
    farm, on = secured
    probe = neighbour_solicit(WEB, "::", DB6)
    bare = ether("33:33:00:00:00:01", WEB, ETH_P_IPV6, ipv6_echo("::", "ff02::1", 0x55))
    lie = neighbour_advert(WEB, WEB6, WEB6, "33:33:00:00:00:01", "ff02::1", lladdr=DB)
    asking = router_solicit(WEB, WEB_LL, lladdr=DB)  # a forwarding host takes its option as WEB_LL's MAC
    # a nonce option (type 14) ahead of the link-layer address option: Linux would take the first such option
    slipped = neighbour_advert(WEB, WEB6, WEB6, "33:33:00:00:00:01", "ff02::1")
    nonce = struct.pack("!BB6s", 14, 1, b"umlst!")
    body = slipped[54:78] + nonce + struct.pack("!BB", 2, 1) + bytes.fromhex(DB.replace(":", ""))
    slipped = ether("33:33:00:00:00:01", WEB, ETH_P_IPV6, icmpv6(WEB6, "ff02::1", body, hop_limit=255))
    own_probe = neighbour_solicit(WEB, "::", WEB6)  # its own address: duplicate address detection as it is
    marker = ether("33:33:00:00:00:01", WEB, ETH_P_IPV6, ipv6_echo(WEB_LL, "ff02::1", 0x99))
    with attached(farm.host.name, "web-0", "db-0") as (web, db):
        db.drain()
        web.send(probe, bare, lie, slipped, asking, own_probe, marker)
        frames = db.receive(lambda f: (icmpv6_of(f) or (0, ""))[:2] == (128, WEB_LL), seconds=10)  # the marker
    seen = [m for m in map(icmpv6_of, frames) if m is not None]
    got = {"probe": any(t == 135 and src == "::" and msg[8:24] == ipaddress.IPv6Address(DB6).packed
                        for t, src, msg in seen),
           "bare": any(t == 128 and src == "::" for t, src, msg in seen),
           "lie": any(t == 136 and len(msg) == 32 and msg[26:32] == mac(DB) for t, src, msg in seen),
           "slipped": any(t == 136 and len(msg) == 40 for t, src, msg in seen),
           "asking": any(t == 133 and msg[10:16] == mac(DB) for t, src, msg in seen),
           "own probe": any(t == 135 and src == "::" and msg[8:24] == ipaddress.IPv6Address(WEB6).packed for t, src, msg in seen)}
    assert got == {"probe": not on, "bare": not on, "lie": not on, "slipped": not on, "asking": not on,
                   "own probe": True}, got


def test_a_guest_cannot_steal_a_neighbours_mac(secured: tuple[Farm, bool]) -> None:
    farm, on = secured
    with attached(farm.host.name, "web-0") as (web,):
        web.send(ether(BROADCAST, DB, 0x88B5, b"mine now" * 8))
        web.send(arp(WEB, "172.16.99.1", "172.16.99.254"))  # a frame of its own, answered: the first was seen
        web.receive(lambda f: f[12:14] == b"\x08\x06")
        # While the tap is open: closed, its carrier goes down and the bridge forgets what the port taught it
        # (when the kernel's link watch gets to it, so reading afterwards races it).
        learned = fdb(farm, "web-0")
    assert (DB in learned) is not on, learned
    assert WEB in learned, learned


def test_a_guest_cannot_smuggle_arp_past_the_checks_in_a_vlan_tag(secured: tuple[Farm, bool]) -> None:
    """The kernel strips one VLAN tag before the checks see a frame; under two (802.1ad, then 802.1Q) an ARP
    claiming db's address to any neighbour that speaks those VLANs would pass every check that reads ARP.
    Only IPv4, IPv6 and ARP pass."""
    farm, on = secured
    with attached(farm.host.name, "web-0", "db-0") as (web, db):
        lie = arp(WEB, "172.16.99.2", "172.16.99.3")
        web.send(lie[:12] + struct.pack("!HHHH", 0x88A8, 5, 0x8100, 7) + lie[12:])
        # Two tags of VLAN 0, which the kernel strips both: a claim to the host itself, asking it for its MAC
        to_host = arp(WEB, "172.16.99.2", "172.16.99.254")
        web.send(to_host[:12] + struct.pack("!HHHH", 0x8100, 0, 0x8100, 0) + to_host[12:])
        web.send(arp(WEB, "172.16.99.1", "172.16.99.3"))  # broadcast too, and after it: db sees it last
        seen = db.receive(lambda f: f[12:14] == b"\x08\x06" and f[28:32] == bytes([172, 16, 99, 1]))
    assert any(f[12:14] in (b"\x88\xa8", b"\x81\x00") for f in seen) is not on
    assert (neighbours(farm, "br0").get("172.16.99.2") == WEB) is not on, "the host's own table too"


# --- 3. spoofed sources towards the LAN ---------------------------------------------------------------


def test_a_guest_cannot_send_from_an_address_not_its_own(secured: tuple[Farm, bool]) -> None:
    farm, on = secured
    sniffer = Sniffer(farm.lan.name, "lan0")
    try:
        with attached(farm.host.name, "web-0") as (web,):
            gw = farm.gateway_mac()
            spoofed = ipv4("172.16.0.77", "172.16.0.2", 1, icmp_echo(0x77))  # a LAN machine's address
            honest = ipv4("172.16.99.1", "172.16.0.2", 1, icmp_echo(0x01))
            web.send(ether(gw, WEB, ETH_P_IP, spoofed), ether(gw, WEB, ETH_P_IP, honest))
            seen = sniffer.receive(lambda f: is_ipv4(f, 1, src="172.16.99.1"), seconds=10)
    finally:
        sniffer.close()
    assert any(is_ipv4(f, 1, src="172.16.0.77") for f in seen) is not on


# --- 4. the host's own services -----------------------------------------------------------------------


def test_guests_reach_only_echo_to_the_gateway_and_declared_services(farm: Farm) -> None:
    listeners = []
    for port in (8080, 8081):  # 8081 is declared in host.services; 8080 is not
        def listen(port: int = port) -> int:
            sock = socket.socket()
            sock.bind(("0.0.0.0", port))
            sock.listen()
            return sock.detach()
        listeners.append(socket.socket(fileno=in_netns(farm.host.name, listen)))
    try:
        with attached(farm.host.name, "web-0") as (web,):
            gw = farm.gateway_mac()
            web.send(arp(WEB, "172.16.99.1", "172.16.99.254"))
            web.receive(lambda f: f[12:14] == b"\x08\x06")
            # To the host's LAN address first, the gateway last: the gateway's echo reply is the last answer
            # the host can give, so once it is here every other answer would have been too.
            for dst in ("172.16.0.1", "172.16.99.254"):
                web.send(*(ether(gw, WEB, ETH_P_IP, ipv4("172.16.99.1", dst, 6, tcp_syn("172.16.99.1", dst, sport, port)))
                           for sport, port in ((40000, 8080), (40001, 8081))),
                         ether(gw, WEB, ETH_P_IP, ipv4("172.16.99.1", dst, 1, icmp_echo(7))))
            seen = web.receive(lambda f: is_ipv4(f, 1, src="172.16.99.254") and f[34] == 0, seconds=10)
    finally:
        for sock in listeners:
            sock.close()
    answers = {(f[26:30], int.from_bytes(f[34:36], "big")) for f in seen if is_ipv4(f, 6)}
    gateway, lan = socket.inet_aton("172.16.99.254"), socket.inet_aton("172.16.0.1")
    assert (gateway, 8081) in answers and (lan, 8081) in answers, "a declared service is open"
    assert (gateway, 8080) not in answers and (lan, 8080) not in answers, "an undeclared one is not"
    assert not any(is_ipv4(f, 1, src="172.16.0.1") for f in seen), "echo only to the gateway"


# --- 5. other subnets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("reach", ["[]", "[dmz]"], ids=["apart", "reach-dmz"])
def test_subnets_stay_apart_unless_reach_says_so(tmp_path: Path, reach: str) -> None:
    for farm in make_farm(tmp_path, reach=reach):
        with attached(farm.host.name, "web-0", "dmzweb-0") as (web, dmz):
            gw = farm.gateway_mac()
            web.send(arp(WEB, "172.16.99.1", "172.16.99.254"))  # so that the host can answer web at once
            web.receive(lambda f: f[12:14] == b"\x08\x06")
            web.send(ether(gw, WEB, ETH_P_IP, ipv4("172.16.99.1", "172.16.98.1", 1, icmp_echo(5))))
            web.send(ether(gw, WEB, ETH_P_IP, ipv4("172.16.99.1", "172.16.99.254", 1, icmp_echo(6))))
            web.receive(lambda f: is_ipv4(f, 1, src="172.16.99.254"))  # the host has handled both by now
            try:
                dmz.receive(lambda f: is_arp_request_for(f, "172.16.98.1"), seconds=2)
                forwarded = True
            except TimeoutError:
                forwarded = False
        assert forwarded is (reach != "[]")


def heard(guest: TapGuest, signs: dict[str, Callable[[bytes], bool]], seconds: float) -> set[str]:
    """Which of ``signs`` the frames that reach ``guest`` within ``seconds`` show (all of them end the wait)."""
    got: set[str] = set()

    def note(frame: bytes) -> bool:
        got.update(name for name, sign in signs.items() if sign(frame))
        return got == set(signs)
    with contextlib.suppress(TimeoutError):
        guest.receive(note, seconds)
    return got


@pytest.mark.parametrize("isolated", [False, True], ids=["bridge", "isolated-bridge"])
def test_an_isolated_bridges_guests_reach_the_gateway_not_each_other(tmp_path: Path, isolated: bool) -> None:
    """dmzweb and lab share br1: a frame to lab's MAC (bridged), and a packet for br1's subnet sent to the
    gateway (routed back out of br1, so the host asks br1 who has it), reach lab only when br1 is not isolated;
    the gateway answers dmzweb either way."""
    for farm in make_farm(tmp_path, isolated=isolated):
        with attached(farm.host.name, "dmzweb-0", "lab-0") as (dmz, lab):
            gw = farm.gateway_mac("br1")
            dmz.send(arp(DMZ, "172.16.98.1", "172.16.98.254"))  # so that the host can answer dmzweb at once
            dmz.receive(lambda f: f[12:14] == b"\x08\x06")
            dmz.send(ether(LAB, DMZ, ETH_P_IP, ipv4("172.16.98.1", "172.16.98.9", 1, icmp_echo(8))))
            dmz.send(ether(gw, DMZ, ETH_P_IP, ipv4("172.16.98.1", "172.16.98.7", 1, icmp_echo(9))))
            dmz.send(ether(gw, DMZ, ETH_P_IP, ipv4("172.16.98.1", "172.16.98.254", 1, icmp_echo(10))))
            dmz.receive(lambda f: is_ipv4(f, 1, src="172.16.98.254", dst="172.16.98.1") and f[34] == 0)
            got = heard(lab, {"bridged": lambda f: is_ipv4(f, 1, dst="172.16.98.9"),  # handled by now, all three
                              "routed": lambda f: is_arp_request_for(f, "172.16.98.7")}, seconds=2)
        assert got == (set() if isolated else {"bridged", "routed"})


# --- 6. router advertisements -----------------------------------------------------------------------------


def steered(farm: Farm, send: bool = True) -> bool:
    """Whether web's router advertisement gave the host a default route or an address."""
    if send:
        with attached(farm.host.name, "web-0") as (web,):
            web.send(router_advert(WEB, WEB_LL))
            web.send(arp(WEB, "172.16.99.1", "172.16.99.254"))
            web.receive(lambda f: f[12:14] == b"\x08\x06")  # after the RA, in order
    return farm.host.json("-6", "route", "show", "default") != [] \
        or "2001:db8:bad" in json.dumps(farm.host.json("-6", "addr", "show"))


def test_the_links_umlstate_makes_take_no_router_advertisements(farm: Farm) -> None:
    links = ["br0", "br1", "web-0", "db-0", "dmzweb-0", "lab-0"]
    values = {(link, key): farm.host.run("sysctl", "-n", f"net.ipv6.conf.{link}.{key}").stdout.strip()
              for link in links for key in ("accept_ra", "autoconf")}
    assert set(values.values()) == {"0"}, values
    assert farm.host.run("sysctl", "-n", "net.ipv6.conf.default.accept_ra").stdout.strip() == "1", "nothing else"


def test_a_guests_router_advertisement_does_not_steer_the_host(secured: tuple[Farm, bool]) -> None:
    """Port security drops it; so does the host's input policy; and the links umlstate makes take none."""
    farm, on = secured
    with attached(farm.host.name, "db-0") as (db,):  # with port security on, from the address web's MAC gives
        db.send(router_advert(DB, WEB_LL))
    assert not steered(farm)
    if on:
        return
    # Each layer by hand: the input policy emptied, RAs taken again on br0 (two kinds of drift).
    farm.host.run("nft", "flush", "chain", "inet", f"umlstate-{farm.name}", "guest-input")
    for key in ("accept_ra", "autoconf"):
        farm.host.run("sysctl", "-qw", f"net.ipv6.conf.br0.{key}=1")
    plan = json.loads(umlstate("plan", str(farm.path), "--json", netns=farm.host.name).stdout)["actions"]
    assert {(a["kind"], a["target"], a["detail"]) for a in plan} >= \
        {("sysctl", "net.ipv6.conf.br0", "accept_ra 0, autoconf 0")}, plan
    assert steered(farm), "the test sees an RA that gets through"
    farm.host.run("ip", "-6", "route", "flush", "default")
    farm.host.run("ip", "-6", "addr", "flush", "dev", "br0", "scope", "global")
    farm.cli("apply", "--yes")
    farm.host.run("nft", "flush", "chain", "inet", f"umlstate-{farm.name}", "guest-input")  # RAs reach br0 again
    assert not steered(farm), "br0 takes no RA"


# --- 8. floods ------------------------------------------------------------------------------------------------


def test_floods_do_not_fill_the_hosts_tables(secured: tuple[Farm, bool]) -> None:
    farm, on = secured
    rng = random.Random(16)
    bounded = tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (6, 8)  # fdb_max_learned came in 6.8
    with attached(farm.host.name, "web-0") as (web,):
        for i in range(BRIDGE_FDB_MAX + 200):
            fake = "02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5))
            web.send(ether(BROADCAST, fake, 0x88B5, b"flood" * 10))
            if i < 300:
                web.send(arp(fake, f"172.16.99.{rng.randrange(3, 250)}", "172.16.99.254"))
        web.send(arp(WEB, "172.16.99.1", "172.16.99.254"))
        web.receive(lambda f: f[12:14] == b"\x08\x06", seconds=10)
        learned, entries = len(fdb(farm, "web-0")), len(neighbours(farm, "br0"))  # open: see the MAC test
    if on:
        assert learned <= 2 and entries <= 1, (learned, entries)
    else:  # what port security holds back when it is on; the bridge's own bound still holds
        assert learned > 100 and entries > 50, (learned, entries)
        if bounded:
            assert learned <= BRIDGE_FDB_MAX, learned


def test_a_nic_without_an_address_uses_a_few_of_its_subnets_addresses_at_a_time(farm: Farm) -> None:
    """It may take any spare address of its subnet, but each one the host hears takes a neighbour entry."""
    senders = [f"172.16.98.{i}" for i in range(10, 110)]
    with attached(farm.host.name, "lab-0") as (lab,):
        for sender in senders:
            lab.send(arp(LAB, sender, "172.16.98.254"))
        lab.receive(lambda f: f[12:14] == b"\x08\x06", seconds=10)  # the first ones are answered
    entries = set(neighbours(farm, "br1"))
    assert entries and entries <= set(senders[:SENDERS_PER_PORT]), sorted(entries)
    # What the flood put in the policy's dynamic set is no drift.
    plan = umlstate("plan", str(farm.path), "--detailed-exitcode", netns=farm.host.name)
    assert plan.returncode == 0, plan.stdout + plan.stderr


# --- the policy as a resource ---------------------------------------------------------------------------------


def test_the_policy_is_reconciled_and_leaves_other_tables_alone(farm: Farm) -> None:
    ns = farm.host
    ns.run("nft", "add", "table", "inet", "admin")  # somebody else's: never touched
    ns.run("nft", "add", "chain", "inet", "admin", "keep")
    plan = umlstate("plan", str(farm.path), "--detailed-exitcode", netns=ns.name)
    assert plan.returncode == 0, plan.stdout + plan.stderr  # no drift from how nft prints rules back
    # The admin's change moved nftables' generation: the policy was read in full and found as loaded; an
    # apply with nothing to do notes the new generation, so later passes need not read it again.
    generation = recorded_generation(farm)
    assert generation
    farm.cli("apply", "--yes")
    assert recorded_generation(farm) not in ("", generation)
    ns.run("nft", "flush", "chain", "netdev", f"umlstate-{farm.name}", "port-web-0")  # by hand
    plan = umlstate("plan", str(farm.path), "--json", netns=ns.name)
    actions = json.loads(plan.stdout)["actions"]
    assert [(a["kind"], a["op"]) for a in actions] == [("ruleset", "update")]
    assert "changed outside umlstate" in actions[0]["reason"]
    assert any("port web-0" in g for g in actions[0]["groups"])
    farm.cli("apply", "--yes")
    assert umlstate("plan", str(farm.path), "--detailed-exitcode", netns=ns.name).returncode == 0
    status = json.loads(umlstate("status", str(farm.path), "--json", netns=ns.name).stdout)
    assert {r["state"] for r in status["resources"] if r["kind"] == "ruleset"} == {"ok"}
    farm.cli("destroy", "--yes")
    tables = ns.run("nft", "list", "tables").stdout
    assert "umlstate" not in tables and "inet admin" in tables
    assert "chain keep" in ns.run("nft", "list", "table", "inet", "admin").stdout


def recorded_generation(farm: Farm) -> str:
    records = json.loads((farm.path.parent / "state" / "state.json").read_text())
    generation: str = records["ruleset"]["generation"]
    return generation


# --- 7. stretched bridges: VXLAN from the underlay --------------------------------------------------------

UNDERLAY = {"alpha": "172.16.0.11", "beta": "172.16.0.12"}
STRETCHED = """\
name: {name}
hosts:
{hosts}subnets:
  - {{name: guests, cidr: 172.16.99.0/24, gateway: 172.16.99.254}}
switches:
  - {{name: br0, kind: bridge, subnet: guests, vni: 4242}}
guests:
  - {{name: g1, user: nobody, host: alpha, disk: {{image: {tmp}/img}}, nics: [{{switch: br0, address: 172.16.99.1}}]}}
  - {{name: g2, user: nobody, host: beta, disk: {{image: {tmp}/img}}, nics: [{{switch: br0, address: 172.16.99.2}}]}}
"""


def vxlan_packet(vni: int, inner_src: str) -> bytes:
    """What a VXLAN peer sends in its UDP datagram: the 8-byte header, then the frame it carries."""
    return struct.pack("!II", 0x08000000, vni << 8) + ether(BROADCAST, inner_src, 0x88B5, b"inner" * 10)


def test_only_the_other_hosts_can_inject_into_a_stretched_bridge(tmp_path: Path) -> None:
    with hosts_on_lan(UNDERLAY) as (lan, hosts):
        (tmp_path / "img").write_bytes(b"")
        rows = "".join(f"  - {{name: {h}, underlay: {a}, run_dir: {tmp_path}/{h}/run, state_dir: {tmp_path}/{h}/state}}\n"
                       for h, a in UNDERLAY.items())
        path = tmp_path / "topology.yaml"
        path.write_text(STRETCHED.format(name="v" + secrets.token_hex(3), hosts=rows, tmp=tmp_path))
        for host, guest in (("alpha", "g1"), ("beta", "g2")):
            for command in (("stop", str(path), guest), ("apply", str(path), "--yes")):
                done = umlstate("--host", host, *command, netns=hosts[host].name)
                assert done.returncode == 0, done.stdout + done.stderr
        alpha = hosts["alpha"]
        vxlan = alpha.json("-d", "link", "show", "vxlan4242")[0]
        assert vxlan["linkinfo"]["info_data"].get("learning") is False

        def send_from(ns: Netns, inner_src: str) -> None:
            def make() -> int:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                return sock.detach()
            with socket.socket(fileno=in_netns(ns.name, make)) as sock:
                sock.sendto(vxlan_packet(4242, inner_src), (UNDERLAY["alpha"], 4789))

        def as_user_on(ns: Netns, inner_src: str, to: str) -> None:
            """A local user of that host (nobody), who knows the VNI (every local user can read it)."""
            code = (f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto("
                    f"{vxlan_packet(4242, inner_src)!r}, ({to!r}, 4789))")
            ns.run("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", "/usr/bin/python3", "-c",
                   code)

        def learned(ns: Netns, mac: str) -> bool:
            """Whether the bridge learned ``mac`` on its VXLAN port; waits for it a bounded time."""
            for _ in range(100):
                out = ns.run("bridge", "-j", "fdb", "show", "br", "br0", "brport", "vxlan4242").stdout
                if mac in {e["mac"] for e in json.loads(out or "[]")}:
                    return True
                time.sleep(0.05)
            return False

        stranger, local, peer = "02:66:66:66:66:66", "02:77:77:77:77:77", "02:12:12:12:12:12"
        send_from(lan, stranger)  # a LAN machine (or a guest, or a local user) that knows the VNI
        as_user_on(alpha, local, "127.0.0.1")  # a user of alpha, to alpha's own VXLAN socket
        send_from(hosts["beta"], peer)  # the other host: its frames are the bridge's own traffic
        assert learned(alpha, peer), "sent after the others: once it is learned, they have been seen"
        assert not any(mac in alpha.run("bridge", "fdb", "show", "br", "br0").stdout for mac in (stranger, local))



# --- 9. an impostor answering for a guest that is down --------------------------------------------------


def test_an_impostor_cannot_answer_for_a_guest_that_is_down(secured: tuple[Farm, bool]) -> None:
    """apply calls a guest ready when its address answers an echo: db is down, and web answers for it."""
    farm, on = secured
    with attached(farm.host.name, "web-0") as (web,):
        stop = threading.Event()

        def impostor() -> None:  # answers ARP and echo for db's 172.16.99.2, with its own MAC
            while not stop.is_set():
                try:
                    frame = web.receive(lambda f: True, seconds=0.2)[-1]
                except TimeoutError:
                    continue
                if is_arp_request_for(frame, "172.16.99.2"):
                    web.send(arp(WEB, "172.16.99.2", "172.16.99.254", reply_to=frame[22:28].hex(":")))
                elif is_ipv4(frame, 1, dst="172.16.99.2") and frame[34] == 8:
                    echo = bytes([0, 0, 0, 0]) + frame[38:]
                    echo = echo[:2] + struct.pack("!H", checksum(echo)) + echo[4:]
                    web.send(ether(frame[6:12].hex(":"), WEB, ETH_P_IP, ipv4("172.16.99.2", "172.16.99.254", 1, echo)))

        thread = threading.Thread(target=impostor)
        thread.start()
        try:
            asked = farm.host.run(sys.executable, "-c", "from umlstate.host import icmp; "
                                  "print(any(icmp.answers('172.16.99.2', 1.0) for _ in range(3)))")
        finally:
            stop.set()
            thread.join()
    assert asked.stdout.strip() == ("False" if on else "True")
