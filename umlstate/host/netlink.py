"""The kernel's network state, read and changed over rtnetlink.

Host layer. Used by observation (reads) and apply (writes), always inside the
namespace the process already entered. Messages are built and read here with
``struct``: umlstate needs six fixed layouts, and a general library cost more
than the work itself (pyroute2 0.9 takes 0.2 s to import and ~0.2 ms to encode
each request; a 1000-tap apply sends 4000). The tests check every layout
against pyroute2's encoder, byte for byte. Taps themselves are made with
ioctls: ``tun``.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator

from umlstate.errors import ActionError
from umlstate.model.snapshot import Link

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

_NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_NDMSG = struct.Struct("=BxxxiHBB")  # family, index, state, flags, type
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst len, src len, tos, table, protocol, scope, type, flags
_NLA = struct.Struct("=HH")


# --- encoding ---------------------------------------------------------------------------


def _nla(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    length = _NLA.size + len(payload)
    return _NLA.pack(length, kind) + payload + bytes(-length % 4)


def _u32(kind: int, value: int) -> bytes:
    return _nla(kind, struct.pack("=I", value))


def _ipv4(kind: int, address: ipaddress.IPv4Address) -> bytes:
    return _nla(kind, address.packed)


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _bridge_info(fdb_max: int) -> bytes:
    data = _u32(IFLA_BR_FDB_MAX_LEARNED, fdb_max)
    return _nla(IFLA_LINKINFO, _nla(IFLA_INFO_KIND, b"bridge") + _nla(IFLA_INFO_DATA, data))


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSG.pack(_NLMSG.size + len(body), kind, flags, seq, 0) + body


def link_request(index: int, *, alias: str | None = None, group: int | None = None, up: bool = False,
                 master: int | None = None, name: str | None = None, kind: str | None = None) -> bytes:
    """ifinfomsg (+ IFLA_IFALIAS, IFLA_GROUP, IFLA_MASTER, ...): the body of RTM_NEWLINK / RTM_DELLINK.

    ``name`` (with index 0) addresses a link by name, or names a new one; ``kind`` makes one of that kind.
    """
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, IFF_UP if up else 0)
    if name is not None:
        body += _nla(IFLA_IFNAME, name.encode() + b"\0")
    if kind is not None:
        body += _nla(IFLA_LINKINFO, _nla(IFLA_INFO_KIND, kind.encode()))
    if master is not None:
        body += _u32(IFLA_MASTER, master)
    if alias is not None:
        body += _nla(IFLA_IFALIAS, alias.encode() + b"\0")
    if group is not None:
        body += _u32(IFLA_GROUP, group)
    return body


def address_request(index: int, address: ipaddress.IPv4Interface, *, add: bool) -> bytes:
    """ifaddrmsg + IFA_LOCAL, IFA_ADDRESS (+ IFA_BROADCAST when adding), as `ip addr add|del`."""
    body = _IFADDR.pack(socket.AF_INET, address.network.prefixlen, 0, 0, index)
    body += _ipv4(IFA_LOCAL, address.ip) + _ipv4(IFA_ADDRESS, address.ip)
    if add:
        body += _ipv4(IFA_BROADCAST, address.network.broadcast_address)
    return body


def proxy_request(index: int, address: ipaddress.IPv4Address) -> bytes:
    """ndmsg with NTF_PROXY + NDA_DST, as `ip neigh add|del proxy ADDR dev DEV`."""
    return _NDMSG.pack(socket.AF_INET, index, NUD_PERMANENT, NTF_PROXY, 0) + _ipv4(NDA_DST, address)


def route_request(to: ipaddress.IPv4Network | None, via: ipaddress.IPv4Address) -> bytes:
    """rtmsg + RTA_DST (none: the default route) + RTA_GATEWAY, in the main table with umlstate's protocol,
    as `ip route add|del TO via VIA proto 186`."""
    body = _RTMSG.pack(socket.AF_INET, to.prefixlen if to else 0, 0, 0, RT_TABLE_MAIN, RTPROT_UMLSTATE,
                       RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    if to is not None:
        body += _ipv4(RTA_DST, to.network_address)
    return body + _ipv4(RTA_GATEWAY, via)


def link_dump_request(kind: str | None) -> bytes:
    """All links, or only those of one kind (filtered in the kernel), without statistics."""
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
    if kind is not None:
        body += _nla(IFLA_LINKINFO, _nla(IFLA_INFO_KIND, kind.encode() + b"\0"))
    return body


# --- decoding ---------------------------------------------------------------------------


def _attrs(buf: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """Netlink attributes in buf[start:end]: type -> (data start, data end)."""
    found = {}
    while start + 4 <= end:
        length, kind = _NLA.unpack_from(buf, start)
        if length < 4:
            break
        found[kind & 0x3FFF] = (start + 4, start + length)
        start += (length + 3) & ~3
    return found


def _messages(sock: socket.socket) -> Iterator[tuple[int, int, bytes, int, int]]:
    """(type, sequence, buffer, body start, body end) of each message received, until a dump's end."""
    while True:
        buf = sock.recv(1 << 20)
        offset = 0
        while offset + _NLMSG.size <= len(buf):
            length, kind, _flags, seq, _port = _NLMSG.unpack_from(buf, offset)
            if kind == NLMSG_DONE:
                return
            if length < _NLMSG.size:  # malformed: it would never advance
                raise ActionError(f"netlink: a message of {length} bytes, shorter than its header")
            yield kind, seq, buf, offset + _NLMSG.size, min(offset + length, len(buf))
            offset += (length + 3) & ~3


def _error(buf: bytes, start: int) -> int:
    """The errno of an NLMSG_ERROR message (0: an ack)."""
    return -int(struct.unpack_from("=i", buf, start)[0])


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    return sock


def _dump(what: str, kind: int, body: bytes) -> Iterator[tuple[int, bytes, int, int]]:
    """One dump request on a socket of this namespace; (type, buffer, start, end) of each answer."""
    with _socket() as sock:
        sock.send(_message(kind, NLM_F_REQUEST | NLM_F_DUMP, 1, body))
        for msg_kind, _seq, buf, start, end in _messages(sock):
            if msg_kind == NLMSG_ERROR:
                raise ActionError(f"{what} dump: {os.strerror(_error(buf, start))}")
            yield msg_kind, buf, start, end


def _request(what: str, kind: int, flags: int, body: bytes) -> None:
    """One change, acknowledged; a refusal is an ActionError naming ``what``."""
    with _socket() as sock:
        sock.send(_message(kind, NLM_F_REQUEST | NLM_F_ACK | flags, 1, body))
        for msg_kind, _seq, buf, start, _end in _messages(sock):
            if msg_kind == NLMSG_ERROR:
                code = _error(buf, start)
                if code:
                    raise ActionError(f"{what}: {os.strerror(code)} (netlink error {code})")
                return


class Netlink:
    """rtnetlink in the current namespace: the reads of an observation, and the one-off changes."""

    def close(self) -> None:
        """Nothing is held between requests: each opens its own socket (cheap, and never stale)."""

    # --- reads ---------------------------------------------------------------------

    def links(self, names: Iterable[str]) -> tuple[dict[str, Link], dict[int, str]]:
        """Every tun link and bridge, plus the named ones whatever their kind; and index -> name of those."""
        out: dict[str, Link] = {}
        index: dict[int, str] = {}
        masters: dict[str, int] = {}

        def keep(link_index: int, link: Link, master: int) -> None:
            out[link.name] = link
            index[link_index] = link.name
            if master:
                masters[link.name] = master

        for kind in ("tun", "bridge", "vxlan"):
            for found in _dump_links(kind=kind):
                keep(*found)
        missing = set(names) - set(out)
        if missing:  # uplinks, and whatever else stands under a wanted tap's name: one more dump
            for found in _dump_links(kind=None):
                if found[1].name in missing:
                    keep(*found)
        for name, master in masters.items():  # a master umlstate did not dump is not one of its bridges
            out[name] = dataclasses.replace(out[name], master=index.get(master, f"ifindex {master}"))
        return out, index

    def addresses(self, index: dict[int, str], names: set[str]) -> dict[str, frozenset[ipaddress.IPv4Interface]]:
        found: dict[str, set[ipaddress.IPv4Interface]] = {n: set() for n in names}
        body = _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)
        for kind, buf, start, end in _dump("address", RTM_GETADDR, body):
            if kind != RTM_NEWADDR:
                continue
            family, prefix, _flags, _scope, link_index = _IFADDR.unpack_from(buf, start)
            name = index.get(link_index)
            if family != socket.AF_INET or name not in found:
                continue
            attrs = _attrs(buf, start + _IFADDR.size, end)
            where = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if where:
                ip = ipaddress.IPv4Address(buf[where[0]:where[0] + 4])
                found[name].add(ipaddress.IPv4Interface((ip, prefix)))
        return {n: frozenset(a) for n, a in found.items()}

    def proxies(self, index: dict[int, str]) -> frozenset[tuple[str, ipaddress.IPv4Address]]:
        # The kernel dumps proxy entries only when NTF_PROXY is a flag of the request.
        out = set()
        body = _NDMSG.pack(socket.AF_INET, 0, 0, NTF_PROXY, 0)
        for kind, buf, start, end in _dump("proxy neighbour", RTM_GETNEIGH, body):
            if kind != RTM_NEWNEIGH:
                continue
            family, link_index, _state, _flags, _type = _NDMSG.unpack_from(buf, start)
            where = _attrs(buf, start + _NDMSG.size, end).get(NDA_DST)
            if family == socket.AF_INET and where and link_index in index and where[1] - where[0] == 4:
                out.add((index[link_index], ipaddress.IPv4Address(buf[where[0]:where[1]])))
        return frozenset(out)

    def routes(self) -> frozenset[tuple[str, ipaddress.IPv4Address]]:
        """(to, via) of each IPv4 route of the main table that carries umlstate's protocol (to: a network, or
        ``default``)."""
        out = set()
        for kind, buf, start, end in _dump("route", RTM_GETROUTE, _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
            if kind != RTM_NEWROUTE:
                continue
            family, dst_len, _src, _tos, table, protocol, _scope, _type, _flags = _RTMSG.unpack_from(buf, start)
            attrs = _attrs(buf, start + _RTMSG.size, end)
            if (t := attrs.get(RTA_TABLE)) and t[1] - t[0] == 4:
                (table,) = struct.unpack_from("=I", buf, t[0])
            gw = attrs.get(RTA_GATEWAY)
            if family != socket.AF_INET or protocol != RTPROT_UMLSTATE or table != RT_TABLE_MAIN or not gw \
                    or gw[1] - gw[0] != 4:
                continue
            dst = attrs.get(RTA_DST)
            to = str(ipaddress.IPv4Network((bytes(buf[dst[0]:dst[0] + 4]), dst_len))) if dst and dst_len else "default"
            out.add((to, ipaddress.IPv4Address(bytes(buf[gw[0]:gw[1]]))))
        return frozenset(out)

    def fdb(self, index: dict[int, str], names: set[str]) -> frozenset[tuple[str, str, ipaddress.IPv4Address]]:
        """(vxlan link, MAC, remote underlay) of each forwarding entry with a destination on the named VXLANs."""
        out = set()
        if not names:
            return frozenset()
        body = _NDMSG.pack(AF_BRIDGE, 0, 0, 0, 0)
        for kind, buf, start, end in _dump("bridge forwarding", RTM_GETNEIGH, body):
            if kind != RTM_NEWNEIGH:
                continue
            family, link_index, _state, _flags, _type = _NDMSG.unpack_from(buf, start)
            if family != AF_BRIDGE or index.get(link_index) not in names:
                continue
            attrs = _attrs(buf, start + _NDMSG.size, end)
            mac, dst = attrs.get(NDA_LLADDR), attrs.get(NDA_DST)
            if mac and dst and mac[1] - mac[0] == 6 and dst[1] - dst[0] == 4:
                out.add((index[link_index], _mac_text(buf[mac[0]:mac[1]]), ipaddress.IPv4Address(buf[dst[0]:dst[1]])))
        return frozenset(out)

    def carrier(self, name: str) -> bool:
        try:
            link_index = socket.if_nametoindex(name)
        except OSError:
            return False
        with _socket() as sock:
            sock.send(_message(RTM_GETLINK, NLM_F_REQUEST, 1, link_request(link_index)))
            for kind, _seq, buf, start, _end in _messages(sock):
                if kind == RTM_NEWLINK:
                    return bool(_IFINFO.unpack_from(buf, start)[3] & IFF_LOWER_UP)
                return False
        return False

    # --- writes (the rest go in bulk: Batch) ---------------------------------------

    def delete_group(self, group: int) -> None:
        """One RTM_DELLINK for a whole link group: ~1000x cheaper than one by one."""
        _request(f"delete link group {group}", RTM_DELLINK, 0, link_request(0, group=group))


def _index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise ActionError(f"interface {name} does not exist") from None


# --- the tun link dump: the hot path of every observation -------------------------------


def _dump_links(kind: str | None) -> Iterator[tuple[int, Link, int]]:
    """Links of one kind (or all); decode only what a Link holds (a 1000-tap host sends ~1.2 MB)."""
    for msg_kind, buf, start, end in _dump("link", RTM_GETLINK, link_dump_request(kind)):
        if msg_kind == RTM_NEWLINK:
            yield _decode_link(buf, start, end)


def _decode_link(buf: bytes, start: int, end: int) -> tuple[int, Link, int]:
    """(ifindex, the link, its master's ifindex or 0)."""
    _family, _type, index, flags, _change = _IFINFO.unpack_from(buf, start)
    attrs = _attrs(buf, start + _IFINFO.size, end)

    def text(where: tuple[int, int] | None) -> str | None:
        return buf[where[0]:where[1]].split(b"\0", 1)[0].decode() if where else None

    def u32(where: tuple[int, int] | None) -> int | None:
        return struct.unpack_from("=I", buf, where[0])[0] if where and where[1] - where[0] >= 4 else None

    def u8(where: tuple[int, int] | None) -> int | None:
        return buf[where[0]] if where and where[1] > where[0] else None

    info = attrs.get(IFLA_LINKINFO)
    linkinfo = _attrs(buf, *info) if info else {}
    kind = text(linkinfo.get(IFLA_INFO_KIND))
    data_at = linkinfo.get(IFLA_INFO_DATA)
    # IFLA_INFO_DATA is the link kind's own: a bridge's forward delay is no tun owner.
    data = _attrs(buf, *data_at) if data_at and kind == "tun" else {}
    vxlan = _attrs(buf, *data_at) if data_at and kind == "vxlan" else {}
    bridge = _attrs(buf, *data_at) if data_at and kind == "bridge" else {}
    spec = attrs.get(IFLA_AF_SPEC)
    inet6 = _attrs(buf, *spec).get(socket.AF_INET6) if spec else None
    conf = _attrs(buf, *inet6).get(IFLA_INET6_CONF) if inet6 else None
    autoconf = None
    if conf and conf[1] - conf[0] > 4 * DEVCONF_AUTOCONF:
        ra, auto = (struct.unpack_from("=i", buf, conf[0] + 4 * i)[0] for i in (DEVCONF_ACCEPT_RA, DEVCONF_AUTOCONF))
        autoconf = bool(ra or auto)
    mac_at = attrs.get(IFLA_ADDRESS)
    mac = _mac_text(buf[mac_at[0]:mac_at[1]]) if mac_at and mac_at[1] - mac_at[0] == 6 else None
    local_at = vxlan.get(IFLA_VXLAN_LOCAL)
    local = str(ipaddress.IPv4Address(buf[local_at[0]:local_at[1]])) if local_at and local_at[1] - local_at[0] == 4 \
        else None
    owner, group = u32(data.get(IFLA_TUN_OWNER)), u32(data.get(IFLA_TUN_GROUP))
    return index, Link(
        name=text(attrs.get(IFLA_IFNAME)) or f"if{index}",
        kind=kind,
        up=bool(flags & IFF_UP),
        carrier=bool(flags & IFF_LOWER_UP),
        alias=text(attrs.get(IFLA_IFALIAS)) or None,
        group=u32(attrs.get(IFLA_GROUP)) or 0,
        tun_type=TUN_TYPES.get(u8(data.get(IFLA_TUN_TYPE)) or 0),
        owner=None if owner in (None, 0xFFFFFFFF) else owner,
        tun_group=None if group in (None, 0xFFFFFFFF) else group,
        persist=bool(u8(data.get(IFLA_TUN_PERSIST))),
        pi=bool(u8(data.get(IFLA_TUN_PI))),
        mac=mac,
        vni=u32(vxlan.get(IFLA_VXLAN_ID)),
        local=local,
        learning=bool(u8(vxlan.get(IFLA_VXLAN_LEARNING))),
        autoconf=autoconf,
        fdb_max=u32(bridge.get(IFLA_BR_FDB_MAX_LEARNED)),
    ), u32(attrs.get(IFLA_MASTER)) or 0


# --- batched writes: many requests sent together, their acks collected once ---------------


class Batch:
    """Netlink change requests sent in bulk on one socket of this namespace.

    One request and one wait per change costs a round trip each; a thousand
    taps need four thousand. Here the requests go out back to back and the
    kernel's acks are read afterwards, matched to their request by sequence
    number. The kernel handles them in order, as if sent one by one.
    """

    def __init__(self) -> None:
        self._messages: list[bytes] = []
        self.labels: list[object] = []
        self.said: list[str] = []  # each request in `ip`'s words, for people and the golden host-call tests

    @staticmethod
    def index(name: str) -> int:
        """The ifindex of a link that exists now (a request about it carries the number)."""
        return _index(name)

    def __len__(self) -> int:
        return len(self._messages)

    def _add(self, kind: int, flags: int, body: bytes, label: object, said: str) -> None:
        self._messages.append(_message(kind, NLM_F_REQUEST | NLM_F_ACK | flags, len(self._messages) + 1, body))
        self.labels.append(label)
        self.said.append(said)

    def create_bridge(self, label: object, name: str, *, group: int, fdb_max: int, mac: str | None = None) -> None:
        """ip link add NAME type bridge fdb_max_learned N group GROUP [address MAC]; its mark (ifalias) follows
        by name."""
        body = (_IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _nla(IFLA_IFNAME, name.encode() + b"\0")
                + _bridge_info(fdb_max) + _u32(IFLA_GROUP, group))
        if mac is not None:
            body += _nla(IFLA_ADDRESS, _mac_bytes(mac))
        address = f" address {mac}" if mac else ""
        self._add(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, label,
                  f"link add {name}{address} group {group} type bridge fdb_max_learned {fdb_max}")

    def limit_fdb(self, label: object, name: str, fdb_max: int) -> None:
        """ip link set NAME type bridge fdb_max_learned N."""
        self._add(RTM_NEWLINK, 0, link_request(self.index(name)) + _bridge_info(fdb_max), label,
                  f"link set {name} type bridge fdb_max_learned {fdb_max}")

    def set_mac(self, label: object, name: str, mac: str) -> None:
        body = link_request(self.index(name)) + _nla(IFLA_ADDRESS, _mac_bytes(mac))
        self._add(RTM_NEWLINK, 0, body, label, f"link set {name} address {mac}")

    def create_vxlan(self, label: object, name: str, *, vni: int, local: ipaddress.IPv4Address, port: int,
                     bridge: str, group: int) -> None:
        """ip link add NAME type vxlan id VNI local LOCAL dstport PORT nolearning master BRIDGE group GROUP up.

        No learning: a frame from the underlay never teaches the VXLAN where a MAC is (anyone who can send
        UDP to the port could); unknown destinations flood to the other hosts' flood entries."""
        data = (_u32(IFLA_VXLAN_ID, vni) + _ipv4(IFLA_VXLAN_LOCAL, local) + _nla(IFLA_VXLAN_LEARNING, b"\0")
                + _nla(IFLA_VXLAN_PORT, struct.pack("!H", port)))
        body = (_IFINFO.pack(socket.AF_UNSPEC, 0, 0, IFF_UP, IFF_UP) + _nla(IFLA_IFNAME, name.encode() + b"\0")
                + _nla(IFLA_LINKINFO, _nla(IFLA_INFO_KIND, b"vxlan") + _nla(IFLA_INFO_DATA, data))
                + _u32(IFLA_MASTER, self.index(bridge)) + _u32(IFLA_GROUP, group))
        self._add(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, label,
                  f"link add {name} up master {bridge} group {group} type vxlan id {vni} local {local} "
                  f"dstport {port} nolearning")

    def fdb(self, label: object, vxlan: str, mac: str, remote: ipaddress.IPv4Address, *, add: bool) -> None:
        """bridge fdb append|del MAC dev VXLAN dst REMOTE (FLOOD_MAC: frames for unknown MACs go there too)."""
        body = (_NDMSG.pack(AF_BRIDGE, self.index(vxlan), NUD_PERMANENT, NTF_SELF, 0)
                + _nla(NDA_LLADDR, _mac_bytes(mac)) + _ipv4(NDA_DST, remote))
        flags = NLM_F_CREATE | NLM_F_APPEND if add else 0
        self._add(RTM_NEWNEIGH if add else RTM_DELNEIGH, flags, body, label,
                  f"fdb {'append' if add else 'del'} {mac} dev {vxlan} dst {remote}")

    def mark_by_name(self, label: object, name: str, *, alias: str) -> None:
        """Set the ifalias of a link made earlier in this batch (its index is not known yet)."""
        self._add(RTM_NEWLINK, 0, link_request(0, name=name, alias=alias), label, f"link set {name} alias {alias}")

    def enslave(self, label: object, name: str, bridge: str) -> None:
        self._add(RTM_NEWLINK, 0, link_request(self.index(name), master=self.index(bridge)), label,
                  f"link set {name} master {bridge}")

    def set_link(self, label: object, name: str, *, alias: str | None = None, group: int | None = None,
                 up: bool = False) -> None:
        words = [w for w, on in ((f"alias {alias}", alias is not None), (f"group {group}", group is not None),
                                 ("up", up)) if on]
        self._add(RTM_NEWLINK, 0, link_request(self.index(name), alias=alias, group=group, up=up), label,
                  f"link set {name} {' '.join(words)}")

    def delete_link(self, label: object, name: str) -> None:
        self._add(RTM_DELLINK, 0, link_request(self.index(name)), label, f"link del {name}")

    def address(self, label: object, name: str, address: ipaddress.IPv4Interface, *, add: bool) -> None:
        body = address_request(self.index(name), address, add=add)
        self._add(RTM_NEWADDR if add else RTM_DELADDR, NLM_F_CREATE | NLM_F_EXCL if add else 0, body, label,
                  f"addr {'add' if add else 'del'} {address} dev {name}")

    def proxy(self, label: object, uplink: str, address: ipaddress.IPv4Address, *, add: bool) -> None:
        body = proxy_request(self.index(uplink), address)
        self._add(RTM_NEWNEIGH if add else RTM_DELNEIGH, NLM_F_CREATE | NLM_F_EXCL if add else 0, body, label,
                  f"neigh {'add' if add else 'del'} proxy {address} dev {uplink}")

    def route(self, label: object, to: str, via: ipaddress.IPv4Address, *, add: bool) -> None:
        body = route_request(None if to == "default" else ipaddress.IPv4Network(to), via)
        self._add(RTM_NEWROUTE if add else RTM_DELROUTE, NLM_F_CREATE | NLM_F_EXCL if add else 0, body, label,
                  f"route {'add' if add else 'del'} {to} via {via} proto {RTPROT_UMLSTATE}")

    def send(self, limit: int | None = None) -> list[tuple[object, int]]:
        """Send the first ``limit`` (default: all) requests; return (label, errno) for each, 0 when it took."""
        messages = self._messages[:limit] if limit is not None else self._messages
        results: dict[int, int] = {}
        with _socket() as sock:
            # Bounded windows, so the acks of one window never overflow the receive buffer.
            for start in range(0, len(messages), 256):
                window = messages[start:start + 256]
                sock.sendall(b"".join(window))
                while len(results) < start + len(window):
                    buf = sock.recv(1 << 20)
                    offset = 0
                    while offset + _NLMSG.size <= len(buf):
                        length, kind, _flags, seq, _pid = _NLMSG.unpack_from(buf, offset)
                        if length < _NLMSG.size:  # malformed: it would never advance
                            raise ActionError(f"netlink: an ack of {length} bytes, shorter than its header")
                        if kind == NLMSG_ERROR:
                            (code,) = struct.unpack_from("=i", buf, offset + _NLMSG.size)
                            results[seq] = -code
                        offset += (length + 3) & ~3
        out = [(self.labels[i], results.get(i + 1, errno.EIO)) for i in range(len(messages))]
        self._messages.clear()
        self.labels.clear()
        self.said.clear()
        return out
