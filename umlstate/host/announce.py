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
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from collections.abc import Sequence

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


def announce(uplink: str, addresses: Sequence[Address]) -> int:
    """One announcement per address on ``uplink``; how many went out (0 on a link without ARP or a MAC).

    Raises OSError when the link is missing or down, or has no IPv6 link-local address yet."""
    mac = hardware_address(uplink)
    if mac is None:
        return 0
    v4 = [a for a in addresses if isinstance(a, ipaddress.IPv4Address)]
    v6 = [a for a in addresses if isinstance(a, ipaddress.IPv6Address)]
    if v4:
        # Protocol 0: the socket sends ARP but receives nothing while it is open.
        with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0) as sock:
            for a in v4:
                sock.sendto(gratuitous_arp(mac, a), (uplink, ETH_P_ARP, 0, ARPHRD_ETHER, BROADCAST))
    if v6:
        index = socket.if_nametoindex(uplink)
        with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)  # or receivers drop it
            for a6 in v6:
                sock.sendto(neighbour_advert(mac, a6), (ALL_NODES, 0, 0, index))
    return len(v4) + len(v6)
