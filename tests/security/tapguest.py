"""A guest played by the test: attached to its tap as UML attaches, it sends what a hostile guest sends.

A UML guest is a process that holds an fd on its persistent tap and writes
Ethernet frames into it; this does the same from the test process, so the
frames meet the same kernel, bridge and nftables path as a real guest's, at
no boot cost. The tap's fd is opened inside the farm's namespace (from a
thread that enters it: setns is per thread), and a raw socket on the LAN side
sees what leaves the host. Frames are built here, byte by byte.
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from umlstate.host.icmp import checksum

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
ETH_P_ALL, ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0003, 0x0800, 0x0806, 0x86DD
BROADCAST = "ff:ff:ff:ff:ff:ff"


def in_netns(netns: str, work: Callable[[], int]) -> int:
    """Run ``work`` in a thread that entered ``netns``: the descriptor it makes belongs to that namespace."""
    result: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            result.append(work())
        except BaseException as exc:  # noqa: BLE001 (handed to the caller's thread)
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


class TapGuest:
    """The guest side of a tap: ``send`` a frame into the host, ``receive`` what the host sends out."""

    def __init__(self, netns: str, tap: str) -> None:
        def attach() -> int:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", tap.encode(), IFF_TAP | IFF_NO_PI))
            return fd

        self.fd = in_netns(netns, attach)

    def close(self) -> None:
        os.close(self.fd)

    def send(self, *frames: bytes) -> None:
        for frame in frames:
            os.write(self.fd, frame)

    def receive(self, until: Callable[[bytes], bool], seconds: float = 15.0) -> list[bytes]:
        """Frames from the host until one satisfies ``until`` (returned last), or the deadline."""
        return _read(lambda: os.read(self.fd, 65536), self.fd, until, seconds)

    def drain(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            os.read(self.fd, 65536)


class Sniffer:
    """Every frame an interface of a namespace sees (AF_PACKET), for what leaves the host."""

    def __init__(self, netns: str, ifname: str) -> None:
        def bind() -> int:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.bind((ifname, 0))
            return sock.detach()

        self.sock = socket.socket(fileno=in_netns(netns, bind))
        self.sock.setblocking(False)

    def close(self) -> None:
        self.sock.close()

    def receive(self, until: Callable[[bytes], bool], seconds: float = 15.0) -> list[bytes]:
        return _read(lambda: self.sock.recv(65536), self.sock.fileno(), until, seconds)


def _read(read: Callable[[], bytes], fd: int, until: Callable[[bytes], bool], seconds: float) -> list[bytes]:
    seen: list[bytes] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        frame = read()
        seen.append(frame)
        if until(frame):
            return seen
    raise TimeoutError(f"no awaited frame in {seconds}s ({len(seen)} other frames)")


def forwarding(netns: str, tap: str, seconds: float = 10.0) -> None:
    """Until the kernel has seen the carrier an attached tap now has, and a bridge forwards on it: the link
    watcher applies a carrier change later (up to a second), and a port still down drops what is sent."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        link = json.loads(subprocess.run(["ip", "-n", netns, "-j", "link", "show", "dev", tap], capture_output=True,
                                         text=True, check=True).stdout)[0]
        if "LOWER_UP" in link.get("flags", []):
            if "master" not in link:
                return
            ports = json.loads(subprocess.run(["ip", "netns", "exec", netns, "bridge", "-j", "link", "show", "dev",
                                               tap], capture_output=True, text=True, check=True).stdout or "[]")
            if ports and ports[0].get("state") == "forwarding":
                return
        time.sleep(0.02)
    raise TimeoutError(f"tap {tap} did not come up on its bridge within {seconds}s")


@contextmanager
def attached(netns: str, *taps: str) -> Iterator[list[TapGuest]]:
    guests = [TapGuest(netns, tap) for tap in taps]
    try:
        for tap in taps:
            forwarding(netns, tap)
        yield guests
    finally:
        for g in guests:
            g.close()


# --- frames ---------------------------------------------------------------------------------------


def mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def ip4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def ether(dst: str, src: str, kind: int, payload: bytes) -> bytes:
    return mac(dst) + mac(src) + struct.pack("!H", kind) + payload


def arp(src_mac: str, src_ip: str, dst_ip: str, *, reply_to: str | None = None, frame_src: str | None = None) -> bytes:
    """An ARP request (or, with ``reply_to``, a reply to that MAC) saying ``src_ip`` is at ``src_mac``."""
    op = 2 if reply_to else 1
    body = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, op) + mac(src_mac) + ip4(src_ip)
    body += (mac(reply_to) if reply_to else bytes(6)) + ip4(dst_ip)
    return ether(reply_to or BROADCAST, frame_src or src_mac, ETH_P_ARP, body)


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x1234, 0, ttl, proto, 0, ip4(src), ip4(dst))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def icmp_echo(ident: int, seq: int = 1, payload: bytes = b"umlstate-test") -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def tcp_syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)
    pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, 6, len(header))
    return header[:16] + struct.pack("!H", checksum(pseudo + header)) + header[18:]


def router_advert(src_mac: str, src_ip6: str) -> bytes:
    """An IPv6 router advertisement to all nodes: lifetime 1800 s, prefix 2001:db8:bad::/64 (autonomous)."""
    src, dst = ipaddress.IPv6Address(src_ip6).packed, ipaddress.IPv6Address("ff02::1").packed
    prefix = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + ipaddress.IPv6Address("2001:db8:bad::").packed
    lladdr = struct.pack("!BB", 1, 1) + mac(src_mac)
    body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + prefix + lladdr
    pseudo = src + dst + struct.pack("!I3xB", len(body), 58)
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    header = struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + src + dst
    return ether("33:33:00:00:00:01", src_mac, ETH_P_IPV6, header + body)


def neighbour_advert(src_mac: str, src_ip6: str, target: str, dst_mac: str, dst_ip6: str, *,
                     lladdr: str | None = None) -> bytes:
    """An unsolicited IPv6 neighbour advertisement (override set): TARGET is at LLADDR (default: SRC_MAC)."""
    option = struct.pack("!BB", 2, 1) + mac(lladdr or src_mac)  # target link-layer address
    body = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + ipaddress.IPv6Address(target).packed + option
    return ether(dst_mac, src_mac, ETH_P_IPV6, icmpv6(src_ip6, dst_ip6, body, hop_limit=255))


def neighbour_solicit(src_mac: str, src_ip6: str, target: str) -> bytes:
    """A neighbour solicitation for TARGET to its solicited-node group; from ``::``, duplicate address detection's
    probe (no link-layer address option), else with SRC_MAC as its source link-layer address."""
    packed = ipaddress.IPv6Address(target).packed
    group = ipaddress.IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + packed[13:])
    option = b"" if src_ip6 == "::" else struct.pack("!BB", 1, 1) + mac(src_mac)
    body = struct.pack("!BBHI", 135, 0, 0, 0) + packed + option
    return ether("33:33:" + ":".join(f"{b:02x}" for b in group.packed[12:]), src_mac, ETH_P_IPV6,
                 icmpv6(src_ip6, str(group), body, hop_limit=255))


def router_solicit(src_mac: str, src_ip6: str, *, lladdr: str | None = None) -> bytes:
    """A router solicitation to all routers, its source link-layer address option LLADDR (default: SRC_MAC)."""
    body = struct.pack("!BBHI", 133, 0, 0, 0) + struct.pack("!BB", 1, 1) + mac(lladdr or src_mac)
    return ether("33:33:00:00:00:02", src_mac, ETH_P_IPV6, icmpv6(src_ip6, "ff02::2", body, hop_limit=255))


def icmpv6(src_ip6: str, dst_ip6: str, body: bytes, *, hop_limit: int = 64) -> bytes:
    """An IPv6 packet carrying the ICMPv6 message ``body`` (its checksum filled in)."""
    src, dst = ipaddress.IPv6Address(src_ip6).packed, ipaddress.IPv6Address(dst_ip6).packed
    pseudo = src + dst + struct.pack("!I3xB", len(body), 58)
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    return struct.pack("!IHBB", 6 << 28, len(body), 58, hop_limit) + src + dst + body


def icmpv6_of(frame: bytes) -> tuple[int, str, bytes] | None:
    """An IPv6 frame's ICMPv6 type, source address and message (no extension headers), or None."""
    if len(frame) < 58 or frame[12:14] != struct.pack("!H", ETH_P_IPV6) or frame[20] != 58:
        return None
    return frame[54], str(ipaddress.IPv6Address(frame[22:38])), frame[54:]


def is_ipv4(frame: bytes, proto: int | None = None, src: str | None = None, dst: str | None = None) -> bool:
    if len(frame) < 34 or frame[12:14] != struct.pack("!H", ETH_P_IP):
        return False
    return ((proto is None or frame[23] == proto) and (src is None or frame[26:30] == ip4(src))
            and (dst is None or frame[30:34] == ip4(dst)))


def is_arp_request_for(frame: bytes, address: str) -> bool:
    return len(frame) >= 42 and frame[12:14] == struct.pack("!H", ETH_P_ARP) and frame[21] == 1 \
        and frame[38:42] == ip4(address)


def ipv6_echo(src: str, dst: str, ident: int) -> bytes:
    """An IPv6 packet carrying an ICMPv6 echo request."""
    return icmpv6(src, dst, struct.pack("!BBHHH", 128, 0, 0, ident, 1) + b"umlstate-test")


def is_solicitation_for(frame: bytes, target: str) -> bool:
    """An IPv6 neighbour solicitation (ICMPv6 135) asking for ``target``."""
    return len(frame) >= 78 and frame[12:14] == struct.pack("!H", ETH_P_IPV6) and frame[20] == 58 \
        and frame[54] == 135 and frame[62:78] == ipaddress.IPv6Address(target).packed
