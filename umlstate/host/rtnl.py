"""rtnetlink's wire format: the numbers, the six message layouts umlstate needs, one request or dump.

Host layer, below ``netlink`` (the reads and writes umlstate makes with them).
Messages are built and read here with ``struct``: a general library cost more
than the work itself (pyroute2 0.9 takes 0.2 s to import and ~0.2 ms to encode
each request; a 1000-tap apply sends 4000). The tests check every layout
against pyroute2's encoder, byte for byte.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator

from umlstate.errors import ActionError

IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
TUN_TYPES = {1: "tun", 2: "tap"}

# linux/netlink.h, rtnetlink.h, if_link.h, if_addr.h, neighbour.h: the numbers umlstate uses.
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTA_DST, RTA_GATEWAY, RTA_TABLE = 1, 5, 15
RT_TABLE_MAIN, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 0, 1
RT_SCOPE_LINK = 253
IFA_F_NODAD = 0x02
# The protocol umlstate's routes carry (`ip route ... proto 186`): its mark, as the ifalias is a link's.
RTPROT_UMLSTATE = 186
IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_AF_SPEC = 3, 10, 18, 20, 26
IFLA_GROUP, IFLA_EXT_MASK = 27, 29
IFLA_INET6_CONF, DEVCONF_ACCEPT_RA, DEVCONF_AUTOCONF = 2, 3, 5  # IPv6's per-link sysctls, as an s32 array
IFLA_BR_FDB_MAX_LEARNED = 49  # Linux 6.8; older kernels ignore it (a bridge's attributes are parsed leniently)
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_TUN_OWNER, IFLA_TUN_GROUP, IFLA_TUN_TYPE, IFLA_TUN_PI, IFLA_TUN_PERSIST = 1, 2, 3, 4, 6
IFLA_ADDRESS = 1
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT = 1, 4, 7, 15
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
NDA_DST, NDA_LLADDR = 1, 2
NTF_PROXY, NTF_SELF = 0x08, 0x02
NUD_PERMANENT = 0x80
NLM_F_APPEND = 0x800
AF_BRIDGE = 7
RTEXT_FILTER_SKIP_STATS = 1 << 3

NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port
IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
NDMSG = struct.Struct("=BxxxiHBB")  # family, index, state, flags, type
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst len, src len, tos, table, protocol, scope, type, flags
NLA = struct.Struct("=HH")


# --- encoding ---------------------------------------------------------------------------


def nla(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    length = NLA.size + len(payload)
    return NLA.pack(length, kind) + payload + bytes(-length % 4)


def u32(kind: int, value: int) -> bytes:
    return nla(kind, struct.pack("=I", value))


def ipv4(kind: int, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """An address attribute: 4 bytes for IPv4, 16 for IPv6."""
    return nla(kind, address.packed)


def family_of(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def bridge_info(fdb_max: int) -> bytes:
    data = u32(IFLA_BR_FDB_MAX_LEARNED, fdb_max)
    return nla(IFLA_LINKINFO, nla(IFLA_INFO_KIND, b"bridge") + nla(IFLA_INFO_DATA, data))


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return NLMSG.pack(NLMSG.size + len(body), kind, flags, seq, 0) + body


def link_request(index: int, *, alias: str | None = None, group: int | None = None, up: bool = False,
                 master: int | None = None, name: str | None = None, kind: str | None = None) -> bytes:
    """ifinfomsg (+ IFLA_IFALIAS, IFLA_GROUP, IFLA_MASTER, ...): the body of RTM_NEWLINK / RTM_DELLINK.

    ``name`` (with index 0) addresses a link by name, or names a new one; ``kind`` makes one of that kind.
    """
    body = IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, IFF_UP if up else 0)
    if name is not None:
        body += nla(IFLA_IFNAME, name.encode() + b"\0")
    if kind is not None:
        body += nla(IFLA_LINKINFO, nla(IFLA_INFO_KIND, kind.encode()))
    if master is not None:
        body += u32(IFLA_MASTER, master)
    if alias is not None:
        body += nla(IFLA_IFALIAS, alias.encode() + b"\0")
    if group is not None:
        body += u32(IFLA_GROUP, group)
    return body


def address_request(index: int, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface, *, add: bool) -> bytes:
    """ifaddrmsg + IFA_LOCAL, IFA_ADDRESS (+ IFA_BROADCAST when adding IPv4), as `ip addr add|del`; an IPv6
    gateway without duplicate address detection (`nodad`): it serves at once, and the subnet is the host's."""
    v6 = address.version == 6
    body = IFADDR.pack(family_of(address.ip), address.network.prefixlen, IFA_F_NODAD if v6 else 0, 0, index)
    body += ipv4(IFA_LOCAL, address.ip) + ipv4(IFA_ADDRESS, address.ip)
    if add and not v6:
        body += ipv4(IFA_BROADCAST, address.network.broadcast_address)
    return body


def proxy_request(index: int, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """ndmsg with NTF_PROXY + NDA_DST, as `ip neigh add|del proxy ADDR dev DEV` (`ip -6` for IPv6)."""
    return NDMSG.pack(family_of(address), index, NUD_PERMANENT, NTF_PROXY, 0) + ipv4(NDA_DST, address)


def route_request(to: ipaddress.IPv4Network | None, via: ipaddress.IPv4Address) -> bytes:
    """rtmsg + RTA_DST (none: the default route) + RTA_GATEWAY, in the main table with umlstate's protocol,
    as `ip route add|del TO via VIA proto 186`."""
    body = RTMSG.pack(socket.AF_INET, to.prefixlen if to else 0, 0, 0, RT_TABLE_MAIN, RTPROT_UMLSTATE,
                       RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    if to is not None:
        body += ipv4(RTA_DST, to.network_address)
    return body + ipv4(RTA_GATEWAY, via)


def vxlan_request(name: str, *, vni: int, local: ipaddress.IPv4Address, port: int, master: int, group: int) -> bytes:
    """A new VXLAN link, up, without learning, in ``master`` and ``group``."""
    data = (u32(IFLA_VXLAN_ID, vni) + ipv4(IFLA_VXLAN_LOCAL, local) + nla(IFLA_VXLAN_LEARNING, b"\0")
            + nla(IFLA_VXLAN_PORT, struct.pack("!H", port)))
    return (IFINFO.pack(socket.AF_UNSPEC, 0, 0, IFF_UP, IFF_UP) + nla(IFLA_IFNAME, name.encode() + b"\0")
            + nla(IFLA_LINKINFO, nla(IFLA_INFO_KIND, b"vxlan") + nla(IFLA_INFO_DATA, data))
            + u32(IFLA_MASTER, master) + u32(IFLA_GROUP, group))


def link_dump_request(kind: str | None) -> bytes:
    """All links, or only those of one kind (filtered in the kernel), without statistics."""
    body = IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
    if kind is not None:
        body += nla(IFLA_LINKINFO, nla(IFLA_INFO_KIND, kind.encode() + b"\0"))
    return body


# --- decoding ---------------------------------------------------------------------------


def attrs(buf: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """Netlink attributes in buf[start:end]: type -> (data start, data end)."""
    found = {}
    unpack = NLA.unpack_from  # every attribute of every link of a dump: the observation's inner loop
    while start + 4 <= end:
        length, kind = unpack(buf, start)
        if length < 4:
            break
        found[kind & 0x3FFF] = (start + 4, start + length)
        start += (length + 3) & ~3
    return found


def messages(sock: socket.socket) -> Iterator[tuple[int, int, bytes, int, int]]:
    """(type, sequence, buffer, body start, body end) of each message received, until a dump's end."""
    while True:
        buf = sock.recv(1 << 20)
        offset = 0
        while offset + NLMSG.size <= len(buf):
            length, kind, _flags, seq, _port = NLMSG.unpack_from(buf, offset)
            if kind == NLMSG_DONE:
                return
            if length < NLMSG.size:  # malformed: it would never advance
                raise ActionError(f"netlink: a message of {length} bytes, shorter than its header")
            yield kind, seq, buf, offset + NLMSG.size, min(offset + length, len(buf))
            offset += (length + 3) & ~3


def error(buf: bytes, start: int) -> int:
    """The errno of an NLMSG_ERROR message (0: an ack)."""
    return -int(struct.unpack_from("=i", buf, start)[0])


def open_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    return sock


def dump(what: str, kind: int, body: bytes) -> Iterator[tuple[int, bytes, int, int]]:
    """One dump request on a socket of this namespace; (type, buffer, start, end) of each answer."""
    with open_socket() as sock:
        sock.send(message(kind, NLM_F_REQUEST | NLM_F_DUMP, 1, body))
        for msg_kind, _seq, buf, start, end in messages(sock):
            if msg_kind == NLMSG_ERROR:
                raise ActionError(f"{what} dump: {os.strerror(error(buf, start))}")
            yield msg_kind, buf, start, end


def request(what: str, kind: int, flags: int, body: bytes) -> None:
    """One change, acknowledged; a refusal is an ActionError naming ``what``."""
    with open_socket() as sock:
        sock.send(message(kind, NLM_F_REQUEST | NLM_F_ACK | flags, 1, body))
        for msg_kind, _seq, buf, start, _end in messages(sock):
            if msg_kind == NLMSG_ERROR:
                code = error(buf, start)
                if code:
                    raise ActionError(f"{what}: {os.strerror(code)} (netlink error {code})")
                return
