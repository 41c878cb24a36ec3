"""A hostile guest's tools work: what pkt and arping send from inside a real busybox guest reaches the host.

Each test boots the farm on the attack image (busybox, /bin/pkt, arping), plays the
attacker as root on web's console, and watches web's port from the host namespace
with tcpdump (frames coming in on web's tap, or the switch's). They prove the tools
on today's code; the traffic policy's tests use the same tools to show what it
stops. tcpdump on a port sees a frame before the host's netfilter hooks do, so
these stay true under a policy.
"""

from __future__ import annotations

import ipaddress

import pytest

from umlstate.host.icmp import checksum

from conftest import needs_root
from farm import Farm
from guestattack import (
    Capture,
    Frame,
    GuestShell,
    arp_sender_is,
    claim,
    guest_nic,
    guest_port,
    guest_sh,
    icmp_echo_frame,
    random_mac,
)

# Both forms: a bridge (the host side is web's own tap) and the seed's uml_switch on a tap (the switch's tap).
pytestmark = [needs_root, pytest.mark.slow, pytest.mark.parametrize("kind", ["bridge", "uml_switch"])]


def up(farm: Farm, kind: str) -> tuple[str, str]:
    """Apply the farm in this form; web's interface name and MAC, as web sees them."""
    farm.write(kind=kind)
    applied = farm.cli("apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    return guest_nic(farm, "web")


def test_a_frame_with_a_spoofed_source_mac_reaches_the_host(attack_farm: Farm, kind: str) -> None:
    ifname, _ = up(attack_farm, kind)
    port = guest_port(attack_farm, "web")
    gateway_mac = attack_farm.host.json("link", "show", "dev", "sw0" if kind == "bridge" else "uml0")[0]["address"]
    spoofed = random_mac()
    small = icmp_echo_frame(gateway_mac, spoofed, "172.16.99.77", "172.16.99.254")
    large = icmp_echo_frame(gateway_mac, spoofed, "172.16.99.77", "172.16.99.254", seq=2, data=bytes(1472))

    with Capture(attack_farm.host, port, f"ether src {spoofed}", count=4) as capture, \
            GuestShell(attack_farm, "web") as shell:
        assert shell.sh(f"pkt send {ifname} {small} 3").strip() == "pkt: sent 3"
        assert shell.pkt_send(ifname, large).strip() == "pkt: sent 1"

    assert [len(raw) for raw in capture.frames] == [60, 60, 60, 1514], f"on {port}: {capture.frames}"
    for raw in capture.frames:
        assert raw.hex().startswith(small if len(raw) == 60 else large), "the frame as written (short: padded)"
        seen = Frame.of(raw)
        assert (seen.src, seen.dst, seen.ethertype) == (spoofed, gateway_mac, 0x0800)


def test_a_router_advertisement_reaches_the_host_as_one(attack_farm: Farm, kind: str) -> None:
    ifname, mac = up(attack_farm, kind)
    with Capture(attack_farm.host, guest_port(attack_farm, "web"), "icmp6 and ip6[40] == 134") as capture:
        out = guest_sh(attack_farm, "web", f"pkt ra {ifname} {mac}")
    assert out.strip() == "pkt: sent 1"

    [raw] = capture.frames
    seen = Frame.of(raw)
    assert (seen.src, seen.dst, seen.icmpv6_type()) == (mac, "33:33:00:00:00:01", 134)
    eui64 = bytes([int(mac[:2], 16) ^ 2]) + bytes.fromhex(mac[3:].replace(":", ""))[:2] + b"\xff\xfe" \
        + bytes.fromhex(mac[9:].replace(":", ""))
    assert seen.ipv6_source() == str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui64))
    ip6, icmp = seen.payload[:40], seen.payload[40:40 + int.from_bytes(seen.payload[4:6], "big")]
    assert ip6[7] == 255 and ip6[24:40] == ipaddress.IPv6Address("ff02::1").packed
    pseudo = ip6[8:40] + len(icmp).to_bytes(4, "big") + bytes(3) + b"\x3a"
    assert checksum(pseudo + icmp) == 0, "a valid ICMPv6 checksum"
    assert int.from_bytes(icmp[6:8], "big") == 1800, "router lifetime: a default router"
    prefix_option = bytes([3, 4, 64, 0xC0]) + (86400).to_bytes(4, "big") + (14400).to_bytes(4, "big") + bytes(4) \
        + ipaddress.IPv6Address("2001:db8:bad::").packed
    assert prefix_option in icmp, "2001:db8:bad::/64, on-link and autonomous"


def test_a_gratuitous_arp_for_a_neighbours_address_reaches_the_host(attack_farm: Farm, kind: str) -> None:
    ifname, mac = up(attack_farm, kind)
    claims_of_db = f"ether src {mac} and {arp_sender_is('172.16.99.2')}"
    with Capture(attack_farm.host, guest_port(attack_farm, "web"), claims_of_db, count=2) as capture:
        guest_sh(attack_farm, "web", claim(ifname, "172.16.99.2", count=2))

    assert len(capture.frames) == 2, capture.frames
    for raw in capture.frames:
        seen = Frame.of(raw)
        op, sender_mac, sender_ip, _, target_ip = seen.arp()
        assert (seen.dst, op, sender_mac, sender_ip, target_ip) == ("ff:ff:ff:ff:ff:ff", 1, mac, "172.16.99.2",
                                                                     "172.16.99.2"), "web claims db's address"


def test_floods_and_a_dhcp_offer_reach_the_host(attack_farm: Farm, kind: str) -> None:
    ifname, mac = up(attack_farm, kind)
    port = guest_port(attack_farm, "web")
    what = "ether proto 0x88b5 or (arp and arp[14] == 10) or (udp src port 67 and udp dst port 68)"
    with Capture(attack_farm.host, port, what, count=200 + 200 + 1) as capture:
        out = guest_sh(attack_farm, "web", f"pkt macflood {ifname} 200 && pkt arpflood {ifname} 200 "
                                           f"&& pkt dhcpoffer {ifname} {mac}")
    assert out.split("\n")[:3] == ["pkt: sent 200", "pkt: sent 200", "pkt: sent 1"], out

    frames = [Frame.of(raw) for raw in capture.frames]
    floods = [f for f in frames if f.ethertype == 0x88B5]
    arps = [f.arp() for f in frames if f.ethertype == 0x0806]
    offers = [f for f in frames if f.ethertype == 0x0800]
    assert (len(floods), len(arps), len(offers)) == (200, 200, 1), capture.stderr
    assert len({f.src for f in floods}) > 190, "a new source MAC each (random: a few may repeat)"
    assert all(int(f.src[:2], 16) & 3 == 2 and f.dst == "ff:ff:ff:ff:ff:ff" for f in floods)
    assert all(op == 1 and sender_ip == target_ip and ipaddress.IPv4Address(sender_ip) in
               ipaddress.IPv4Network("10.0.0.0/8") for op, _, sender_ip, _, target_ip in arps)
    assert len({a[1] for a in arps}) > 190
    [offer] = offers
    ip, udp = offer.payload[:20], offer.payload[20:]
    assert checksum(ip) == 0 and ip[12:16] == ipaddress.IPv4Address("10.99.99.99").packed
    pseudo = ip[12:20] + bytes([0, 17]) + udp[4:6]
    assert checksum(pseudo + udp[:int.from_bytes(udp[4:6], "big")]) == 0, "a valid UDP checksum"
    assert bytes([53, 1, 2]) in udp, "a DHCP OFFER"
