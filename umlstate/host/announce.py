"""Tell the LAN that this host now answers for guest addresses: a gratuitous ARP, an unsolicited NA.

Host layer, used by apply right after the kernel acked new proxy entries on an
uplink. A guest moved from another host keeps its address and MAC, but the
LAN's router and peers still hold the old host's MAC for that address: they
go on sending there, relayed by the old host while it serves the stretched
bridge, and lost once it leaves (measured: 37 s until the LAN's cache gave
up on it). The kernel announces its own addresses this way (``arp_notify``,
``ndisc_notify``), never proxied ones, so umlstate does it for them, once per
new entry, as the kernel does for its own. A peer that holds no entry for
the address ignores the announcement (``arp_accept`` and
``accept_untracked_na`` are off by default): a first start changes nothing.

What goes out is the topology's addresses and the uplink's own MAC; nothing a
user or guest wrote. Sent from the namespace this process entered.

An announcement overrides what the LAN's neighbours had (the guest moved:
the new host must win). So a guest given an address that a LAN machine
really has takes it over in the neighbours' caches too, where before the
real owner usually answered the LAN's ARP first (``proxy_delay``). Such an
address is a mistake in the topology either way; README's Several hosts says so.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

ETH_P_ARP = 0x0806
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
SIOCGIFFLAGS, SIOCGIFHWADDR = 0x8913, 0x8927
IFF_NOARP = 0x80
ND_NEIGHBOR_ADVERT = 136
NA_OVERRIDE = 0x20000000  # replace the cached MAC: the guest moved, this host now answers for it
ND_OPT_TARGET_LLADDR = 2
ALL_NODES = "ff02::1"
BROADCAST = b"\xff" * 6
FULL_WAIT, RETRY_WAIT = 0.2, 0.005  # a full queue (a shaped uplink) is waited out for 0.2 s per family in all

_IFREQ = struct.Struct("16s24x")  # struct ifreq: the name, then a 24-byte union
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_NA = struct.Struct("!BBHI16sBB6s")  # ICMPv6 header and flags, target, one target link-layer address option

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def hardware_address(link: str) -> bytes | None:
    """The link's Ethernet MAC; None when it has none or does no neighbour discovery (a tunnel, WireGuard)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = _IFREQ.pack(link.encode())
        (flags,) = struct.unpack_from("H", fcntl.ioctl(sock, SIOCGIFFLAGS, request), 16)
        if flags & IFF_NOARP:
            return None
        reply = fcntl.ioctl(sock, SIOCGIFHWADDR, request)
    (family,) = struct.unpack_from("H", reply, 16)
    return reply[18:24] if family == ARPHRD_ETHER else None


def gratuitous_arp(mac: bytes, address: ipaddress.IPv4Address) -> bytes:
    """An ARP request for ``address`` from ``address`` at ``mac``, as the kernel's arp_notify sends it."""
    return _ARP.pack(ARPHRD_ETHER, 0x0800, 6, 4, ARPOP_REQUEST, mac, address.packed, bytes(6), address.packed)


def neighbour_advert(mac: bytes, address: ipaddress.IPv6Address) -> bytes:
    """An unsolicited, overriding NA: ``address`` is at ``mac`` (the kernel fills in the checksum)."""
    return _NA.pack(ND_NEIGHBOR_ADVERT, 0, 0, NA_OVERRIDE, address.packed, ND_OPT_TARGET_LLADDR, 1, mac)


def announce(uplink: str, addresses: Sequence[Address]) -> dict[Address, str]:
    """One announcement per address on ``uplink``; the addresses that could not be announced, and why (none
    on a link without ARP or a MAC: there is nothing to announce on).

    Never blocks: a full queue (a shaped uplink) is waited out for a moment, once per family; when it stays
    full, or a filter drops what is sent, the family's other addresses are given up with the same cause.
    Raises OSError when the link is missing."""
    mac = hardware_address(uplink)
    if mac is None:
        return {}
    failed: dict[Address, str] = {}
    v4 = [a for a in addresses if isinstance(a, ipaddress.IPv4Address)]
    v6 = [a for a in addresses if isinstance(a, ipaddress.IPv6Address)]
    if v4:
        frames = [(a, gratuitous_arp(mac, a)) for a in v4]
        to: tuple[Any, ...] = (uplink, ETH_P_ARP, 0, ARPHRD_ETHER, BROADCAST)
        # Protocol 0: the socket sends ARP but receives nothing while it is open.
        _send_all(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0), frames, to, failed)
    if v6:
        def icmpv6() -> socket.socket:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)  # or receivers drop it
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)  # for the LAN, not this host
            return sock

        frames6 = [(a, neighbour_advert(mac, a)) for a in v6]
        _send_all(icmpv6, frames6, (ALL_NODES, 0, 0, socket.if_nametoindex(uplink)), failed)
    return failed


def _send_all(opened: Callable[[], socket.socket], frames: Sequence[tuple[Address, bytes]], to: tuple[Any, ...],
              failed: dict[Address, str]) -> None:
    """Each frame once; what cannot be sent goes into ``failed``, with why (a host without IPv6: the family's
    socket itself)."""
    try:
        sock = opened()
    except OSError as exc:
        failed.update((a, exc.strerror or str(exc)) for a, _ in frames)
        return
    with sock:
        waited = 0.0
        for i, (address, frame) in enumerate(frames):
            while True:
                try:
                    sock.sendto(frame, socket.MSG_DONTWAIT, to)
                    break
                except OSError as exc:
                    full = isinstance(exc, BlockingIOError) or exc.errno == errno.ENOBUFS
                    if not full:
                        failed[address] = exc.strerror or str(exc)
                        break
                    if waited >= FULL_WAIT:  # the queue stays full, or a filter drops ARP: the rest too
                        failed.update((a, exc.strerror or str(exc)) for a, _ in frames[i:])
                        return
                    time.sleep(RETRY_WAIT)
                    waited += RETRY_WAIT
