"""The kernel's network state, read and changed over rtnetlink.

Host layer. Used by observation (reads) and apply (writes), always inside the
namespace the process already entered. Messages are encoded and decoded in
``rtnl``, with ``struct``. Taps themselves are made with ioctls: ``tun``.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator

from umlstate.errors import ActionError
from umlstate.host import rtnl
from umlstate.model.snapshot import IPAddress, IPInterface, Link

_CREATE = rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL  # a new entry: EEXIST if one is there
_SIZES = {socket.AF_INET: 4, socket.AF_INET6: 16}  # an address's bytes, by family
_ASKED_BY_NAME = 16  # more links missing from the dumps than this: one dump of all is cheaper


class Netlink:
    """rtnetlink in the current namespace: the reads of an observation, and the one-off changes."""

    def close(self) -> None:
        """Nothing is held between requests: each opens its own socket (cheap, and never stale)."""

    # --- reads ---------------------------------------------------------------------

    def links(self, names: Iterable[str]) -> tuple[dict[str, Link], dict[int, str]]:
        """Every tun link and bridge, plus the named ones whatever their kind; and index -> name of those."""
        return links_of(self.link_answers(names))

    def link_answers(self, names: Iterable[str]) -> list[bytes]:
        """The kernel's answers to an observation's link requests, in order: every tun link, bridge and VXLAN
        (a dump of each kind), then the named links those lack (by name; a dump of all when many are). The
        same answers decode to the same links (links_of): a quick pass compares these bytes first."""
        answers = [m for kind in ("tun", "bridge", "vxlan") for m in _dump_links(kind=kind)]
        missing = set(names) - {_name_of(m) for m in answers}
        if len(missing) <= _ASKED_BY_NAME:  # the uplinks, mostly: asked for by name, not found in a dump of all
            answers += [m if m is not None else b"" for name in sorted(missing) for m in [_get_link(name)]]
        else:  # whatever else stands under wanted taps' names (a first apply): one more dump
            answers += [m for m in _dump_links(kind=None) if _name_of(m) in missing]
        return answers

    def addresses(self, index: dict[int, str], names: set[str]) -> dict[str, frozenset[IPInterface]]:
        """The IPv4 addresses and global IPv6 ones of the named links (a link-local address is the kernel's)."""
        found: dict[str, set[IPInterface]] = {n: set() for n in names}
        for name, size, ip, prefix in _address_entries(index, names):
            # As an int: given an address, the interface would print and parse it again (~35 us each).
            found[name].add(ipaddress.IPv4Interface((ip, prefix)) if size == 4
                            else ipaddress.IPv6Interface((ip, prefix)))
        return {n: frozenset(a) for n, a in found.items()}

    def address_keys(self, index: dict[int, str], names: set[str]) -> dict[str, list[tuple[int, int, int]]]:
        """What ``addresses`` reads, undecoded: (size, address, prefix) of each, sorted, by link; for a digest
        (the quick pass's), where a thousand addresses' objects would cost more than the rest of the read."""
        found: dict[str, list[tuple[int, int, int]]] = {n: [] for n in names}
        for name, size, ip, prefix in _address_entries(index, names):
            found[name].append((size, ip, prefix))
        return {n: sorted(a) for n, a in found.items()}

    def proxies(self, index: dict[int, str]) -> frozenset[tuple[str, IPAddress]]:
        """Proxy ARP and proxy NDP entries on the indexed links."""
        return frozenset((name, ipaddress.ip_address(raw)) for name, raw in _proxy_entries(index))

    def proxy_keys(self, index: dict[int, str]) -> list[tuple[str, str]]:
        """What ``proxies`` reads, undecoded: (link, address bytes in hex), sorted; for a digest."""
        return sorted((name, raw.hex()) for name, raw in _proxy_entries(index))

    def routes(self) -> frozenset[tuple[str, ipaddress.IPv4Address]]:
        """(to, via) of each IPv4 route of the main table that carries umlstate's protocol (to: a network, or
        ``default``)."""
        out = set()
        request = rtnl.RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        for kind, buf, start, end in rtnl.dump("route", rtnl.RTM_GETROUTE, request):
            if kind != rtnl.RTM_NEWROUTE:
                continue
            family, dst_len, _src, _tos, table, protocol, _scope, _type, _flags = rtnl.RTMSG.unpack_from(buf, start)
            attrs = rtnl.attrs(buf, start + rtnl.RTMSG.size, end)
            if (t := attrs.get(rtnl.RTA_TABLE)) and t[1] - t[0] == 4:
                (table,) = struct.unpack_from("=I", buf, t[0])
            gw = attrs.get(rtnl.RTA_GATEWAY)
            if family != socket.AF_INET or protocol != rtnl.RTPROT_UMLSTATE or table != rtnl.RT_TABLE_MAIN or not gw \
                    or gw[1] - gw[0] != 4:
                continue
            dst = attrs.get(rtnl.RTA_DST)
            to = str(ipaddress.IPv4Network((bytes(buf[dst[0]:dst[0] + 4]), dst_len))) if dst and dst_len else "default"
            out.add((to, ipaddress.IPv4Address(bytes(buf[gw[0]:gw[1]]))))
        return frozenset(out)

    def fdb(self, index: dict[int, str], names: set[str]) -> frozenset[tuple[str, str, ipaddress.IPv4Address]]:
        """(vxlan link, MAC, remote underlay) of each forwarding entry with a destination on the named VXLANs."""
        out = set()
        if not names:
            return frozenset()
        body = rtnl.NDMSG.pack(rtnl.AF_BRIDGE, 0, 0, 0, 0)
        for kind, buf, start, end in rtnl.dump("bridge forwarding", rtnl.RTM_GETNEIGH, body):
            if kind != rtnl.RTM_NEWNEIGH:
                continue
            family, link_index, _state, _flags, _type = rtnl.NDMSG.unpack_from(buf, start)
            if family != rtnl.AF_BRIDGE or index.get(link_index) not in names:
                continue
            attrs = rtnl.attrs(buf, start + rtnl.NDMSG.size, end)
            mac, dst = attrs.get(rtnl.NDA_LLADDR), attrs.get(rtnl.NDA_DST)
            if mac and dst and mac[1] - mac[0] == 6 and dst[1] - dst[0] == 4:
                address = ipaddress.IPv4Address(buf[dst[0]:dst[1]])
                out.add((index[link_index], rtnl.mac_text(buf[mac[0]:mac[1]]), address))
        return frozenset(out)

    def carrier(self, name: str) -> bool:
        try:
            link_index = socket.if_nametoindex(name)
        except OSError:
            return False
        with rtnl.open_socket() as sock:
            sock.send(rtnl.message(rtnl.RTM_GETLINK, rtnl.NLM_F_REQUEST, 1, rtnl.link_request(link_index)))
            for kind, _seq, buf, start, _end in rtnl.messages(sock):
                if kind == rtnl.RTM_NEWLINK:
                    return bool(rtnl.IFINFO.unpack_from(buf, start)[3] & rtnl.IFF_LOWER_UP)
                return False
        return False

    # --- writes (the rest go in bulk: Batch) ---------------------------------------

    def delete_group(self, group: int) -> None:
        """One rtnl.RTM_DELLINK for a whole link group: ~1000x cheaper than one by one."""
        rtnl.request(f"delete link group {group}", rtnl.RTM_DELLINK, 0, rtnl.link_request(0, group=group))


def _index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise ActionError(f"interface {name} does not exist") from None


# --- the tun link dump: the hot path of every observation -------------------------------


def _dump_links(kind: str | None) -> list[bytes]:
    """Links of one kind (or all), each message's body as bytes (a 1000-tap host sends ~1.2 MB)."""
    return [bytes(buf[start:end]) for msg_kind, buf, start, end
            in rtnl.dump("link", rtnl.RTM_GETLINK, rtnl.link_dump_request(kind)) if msg_kind == rtnl.RTM_NEWLINK]


def _get_link(name: str) -> bytes | None:
    """One link's message body, by name; None when there is none."""
    body = rtnl.link_request(0, name=name) + rtnl.u32(rtnl.IFLA_EXT_MASK, rtnl.RTEXT_FILTER_SKIP_STATS)
    with rtnl.open_socket() as sock:
        sock.send(rtnl.message(rtnl.RTM_GETLINK, rtnl.NLM_F_REQUEST, 1, body))
        for kind, _seq, buf, start, end in rtnl.messages(sock):
            return bytes(buf[start:end]) if kind == rtnl.RTM_NEWLINK else None  # else ENODEV
    return None


def _name_of(message: bytes) -> str | None:
    """A link message's name, from its attributes (the kernel puts it first: the walk stops there)."""
    start, unpack = rtnl.IFINFO.size, rtnl.NLA.unpack_from
    while start + 4 <= len(message):
        length, kind = unpack(message, start)
        if length < 4:
            return None
        if kind & 0x3FFF == rtnl.IFLA_IFNAME:
            return message[start + 4:start + length].split(b"\0", 1)[0].decode()
        start += (length + 3) & ~3
    return None


def _address_entries(index: dict[int, str], names: set[str]) -> Iterator[tuple[str, int, int, int]]:
    """(link, address size, address as an int, prefix) of each IPv4 and global IPv6 address of the named links."""
    body = rtnl.IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    for kind, buf, start, end in rtnl.dump("address", rtnl.RTM_GETADDR, body):
        if kind != rtnl.RTM_NEWADDR:
            continue
        family, prefix, _flags, scope, link_index = rtnl.IFADDR.unpack_from(buf, start)
        name = index.get(link_index)
        size = _SIZES.get(family)
        if size is None or name not in names or (family == socket.AF_INET6 and scope == rtnl.RT_SCOPE_LINK):
            continue
        attrs = rtnl.attrs(buf, start + rtnl.IFADDR.size, end)
        where = attrs.get(rtnl.IFA_LOCAL) or attrs.get(rtnl.IFA_ADDRESS)
        if where and where[1] - where[0] == size:
            yield name, size, int.from_bytes(buf[where[0]:where[1]], "big"), prefix


def _proxy_entries(index: dict[int, str]) -> Iterator[tuple[str, bytes]]:
    """(link, address bytes) of each proxy ARP and proxy NDP entry on the indexed links."""
    # The kernel dumps proxy entries only when rtnl.NTF_PROXY is a flag of the request; AF_UNSPEC: every
    # family's table.
    body = rtnl.NDMSG.pack(socket.AF_UNSPEC, 0, 0, rtnl.NTF_PROXY, 0)
    for kind, buf, start, end in rtnl.dump("proxy neighbour", rtnl.RTM_GETNEIGH, body):
        if kind != rtnl.RTM_NEWNEIGH:
            continue
        family, link_index, _state, _flags, _type = rtnl.NDMSG.unpack_from(buf, start)
        where = rtnl.attrs(buf, start + rtnl.NDMSG.size, end).get(rtnl.NDA_DST)
        size = _SIZES.get(family)
        if size and where and link_index in index and where[1] - where[0] == size:
            yield index[link_index], bytes(buf[where[0]:where[1]])


def links_of(answers: Iterable[bytes]) -> tuple[dict[str, Link], dict[int, str]]:
    """The links the answers of link_answers name, and index -> name of those; an empty answer (a named
    link that is not there) names none."""
    out: dict[str, Link] = {}
    index: dict[int, str] = {}
    masters: dict[str, int] = {}
    for message in answers:
        if not message:
            continue
        link_index, link, master = _decode_link(message, 0, len(message))
        out[link.name] = link
        index[link_index] = link.name
        if master:
            masters[link.name] = master
    for name, master in masters.items():  # a master umlstate did not dump is not one of its bridges
        out[name] = dataclasses.replace(out[name], master=index.get(master, f"ifindex {master}"))
    return out, index


def _decode_link(buf: bytes, start: int, end: int) -> tuple[int, Link, int]:
    """(ifindex, the link, its master's ifindex or 0)."""
    _family, _type, index, flags, _change = rtnl.IFINFO.unpack_from(buf, start)
    attrs = rtnl.attrs(buf, start + rtnl.IFINFO.size, end)

    def text(where: tuple[int, int] | None) -> str | None:
        return buf[where[0]:where[1]].split(b"\0", 1)[0].decode() if where else None

    def u32(where: tuple[int, int] | None) -> int | None:
        return struct.unpack_from("=I", buf, where[0])[0] if where and where[1] - where[0] >= 4 else None

    def u8(where: tuple[int, int] | None) -> int | None:
        return buf[where[0]] if where and where[1] > where[0] else None

    info = attrs.get(rtnl.IFLA_LINKINFO)
    linkinfo = rtnl.attrs(buf, *info) if info else {}
    kind = text(linkinfo.get(rtnl.IFLA_INFO_KIND))
    data_at = linkinfo.get(rtnl.IFLA_INFO_DATA)
    # rtnl.IFLA_INFO_DATA is the link kind's own: a bridge's forward delay is no tun owner.
    data = rtnl.attrs(buf, *data_at) if data_at and kind == "tun" else {}
    vxlan = rtnl.attrs(buf, *data_at) if data_at and kind == "vxlan" else {}
    bridge = rtnl.attrs(buf, *data_at) if data_at and kind == "bridge" else {}
    spec = attrs.get(rtnl.IFLA_AF_SPEC)
    inet6 = rtnl.attrs(buf, *spec).get(socket.AF_INET6) if spec else None
    conf = rtnl.attrs(buf, *inet6).get(rtnl.IFLA_INET6_CONF) if inet6 else None
    autoconf = None
    if conf and conf[1] - conf[0] > 4 * rtnl.DEVCONF_AUTOCONF:
        ra, auto = (struct.unpack_from("=i", buf, conf[0] + 4 * i)[0]
                    for i in (rtnl.DEVCONF_ACCEPT_RA, rtnl.DEVCONF_AUTOCONF))
        autoconf = bool(ra or auto)
    mac_at = attrs.get(rtnl.IFLA_ADDRESS)
    mac = rtnl.mac_text(buf[mac_at[0]:mac_at[1]]) if mac_at and mac_at[1] - mac_at[0] == 6 else None
    local_at = vxlan.get(rtnl.IFLA_VXLAN_LOCAL)
    local = str(ipaddress.IPv4Address(buf[local_at[0]:local_at[1]])) if local_at and local_at[1] - local_at[0] == 4 \
        else None
    owner, group = u32(data.get(rtnl.IFLA_TUN_OWNER)), u32(data.get(rtnl.IFLA_TUN_GROUP))
    return index, Link(
        name=text(attrs.get(rtnl.IFLA_IFNAME)) or f"if{index}",
        kind=kind,
        up=bool(flags & rtnl.IFF_UP),
        carrier=bool(flags & rtnl.IFF_LOWER_UP),
        alias=text(attrs.get(rtnl.IFLA_IFALIAS)) or None,
        group=u32(attrs.get(rtnl.IFLA_GROUP)) or 0,
        tun_type=rtnl.TUN_TYPES.get(u8(data.get(rtnl.IFLA_TUN_TYPE)) or 0),
        owner=None if owner in (None, 0xFFFFFFFF) else owner,
        tun_group=None if group in (None, 0xFFFFFFFF) else group,
        persist=bool(u8(data.get(rtnl.IFLA_TUN_PERSIST))),
        pi=bool(u8(data.get(rtnl.IFLA_TUN_PI))),
        mac=mac,
        vni=u32(vxlan.get(rtnl.IFLA_VXLAN_ID)),
        local=local,
        learning=bool(u8(vxlan.get(rtnl.IFLA_VXLAN_LEARNING))),
        autoconf=autoconf,
        fdb_max=u32(bridge.get(rtnl.IFLA_BR_FDB_MAX_LEARNED)),
    ), u32(attrs.get(rtnl.IFLA_MASTER)) or 0


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
        flags |= rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK
        self._messages.append(rtnl.message(kind, flags, len(self._messages) + 1, body))
        self.labels.append(label)
        self.said.append(said)

    def create_bridge(self, label: object, name: str, *, group: int, fdb_max: int, mac: str | None = None) -> None:
        """ip link add NAME type bridge fdb_max_learned N group GROUP [address MAC]; its mark (ifalias) follows
        by name."""
        body = (rtnl.IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + rtnl.nla(rtnl.IFLA_IFNAME, name.encode() + b"\0")
                + rtnl.bridge_info(fdb_max) + rtnl.u32(rtnl.IFLA_GROUP, group))
        if mac is not None:
            body += rtnl.nla(rtnl.IFLA_ADDRESS, rtnl.mac_bytes(mac))
        address = f" address {mac}" if mac else ""
        self._add(rtnl.RTM_NEWLINK, _CREATE, body, label,
                  f"link add {name}{address} group {group} type bridge fdb_max_learned {fdb_max}")

    def limit_fdb(self, label: object, name: str, fdb_max: int) -> None:
        """ip link set NAME type bridge fdb_max_learned N."""
        self._add(rtnl.RTM_NEWLINK, 0, rtnl.link_request(self.index(name)) + rtnl.bridge_info(fdb_max), label,
                  f"link set {name} type bridge fdb_max_learned {fdb_max}")

    def set_mac(self, label: object, name: str, mac: str) -> None:
        body = rtnl.link_request(self.index(name)) + rtnl.nla(rtnl.IFLA_ADDRESS, rtnl.mac_bytes(mac))
        self._add(rtnl.RTM_NEWLINK, 0, body, label, f"link set {name} address {mac}")

    def create_vxlan(self, label: object, name: str, *, vni: int, local: ipaddress.IPv4Address, port: int,
                     bridge: str, group: int) -> None:
        """ip link add NAME type vxlan id VNI local LOCAL dstport PORT nolearning master BRIDGE group GROUP up.

        No learning: a frame from the underlay never teaches the VXLAN where a MAC is (anyone who can send
        UDP to the port could); unknown destinations flood to the other hosts' flood entries."""
        body = rtnl.vxlan_request(name, vni=vni, local=local, port=port, master=self.index(bridge), group=group)
        self._add(rtnl.RTM_NEWLINK, _CREATE, body, label,
                  f"link add {name} up master {bridge} group {group} type vxlan id {vni} local {local} "
                  f"dstport {port} nolearning")

    def fdb(self, label: object, vxlan: str, mac: str, remote: ipaddress.IPv4Address, *, add: bool) -> None:
        """bridge fdb append|del MAC dev VXLAN dst REMOTE (FLOOD_MAC: frames for unknown MACs go there too)."""
        body = (rtnl.NDMSG.pack(rtnl.AF_BRIDGE, self.index(vxlan), rtnl.NUD_PERMANENT, rtnl.NTF_SELF, 0)
                + rtnl.nla(rtnl.NDA_LLADDR, rtnl.mac_bytes(mac)) + rtnl.ipv4(rtnl.NDA_DST, remote))
        flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_APPEND if add else 0
        self._add(rtnl.RTM_NEWNEIGH if add else rtnl.RTM_DELNEIGH, flags, body, label,
                  f"fdb {'append' if add else 'del'} {mac} dev {vxlan} dst {remote}")

    def mark_by_name(self, label: object, name: str, *, alias: str) -> None:
        """Set the ifalias of a link made earlier in this batch (its index is not known yet)."""
        self._add(rtnl.RTM_NEWLINK, 0, rtnl.link_request(0, name=name, alias=alias), label,
                  f"link set {name} alias {alias}")

    def enslave(self, label: object, name: str, bridge: str) -> None:
        self._add(rtnl.RTM_NEWLINK, 0, rtnl.link_request(self.index(name), master=self.index(bridge)), label,
                  f"link set {name} master {bridge}")

    def set_link(self, label: object, name: str, *, alias: str | None = None, group: int | None = None,
                 up: bool = False) -> None:
        words = [w for w, on in ((f"alias {alias}", alias is not None), (f"group {group}", group is not None),
                                 ("up", up)) if on]
        self._add(rtnl.RTM_NEWLINK, 0, rtnl.link_request(self.index(name), alias=alias, group=group, up=up), label,
                  f"link set {name} {' '.join(words)}")

    def delete_link(self, label: object, name: str) -> None:
        self._add(rtnl.RTM_DELLINK, 0, rtnl.link_request(self.index(name)), label, f"link del {name}")

    def address(self, label: object, name: str, address: IPInterface, *, add: bool) -> None:
        body = rtnl.address_request(self.index(name), address, add=add)
        self._add(rtnl.RTM_NEWADDR if add else rtnl.RTM_DELADDR, _CREATE if add else 0, body, label,
                  f"addr {'add' if add else 'del'} {address} dev {name}")

    def proxy(self, label: object, uplink: str, address: IPAddress, *, add: bool) -> None:
        body = rtnl.proxy_request(self.index(uplink), address)
        self._add(rtnl.RTM_NEWNEIGH if add else rtnl.RTM_DELNEIGH, _CREATE if add else 0, body, label,
                  f"{'-6 ' if address.version == 6 else ''}neigh {'add' if add else 'del'} proxy {address} "
                  f"dev {uplink}")

    def route(self, label: object, to: str, via: ipaddress.IPv4Address, *, add: bool) -> None:
        body = rtnl.route_request(None if to == "default" else ipaddress.IPv4Network(to), via)
        self._add(rtnl.RTM_NEWROUTE if add else rtnl.RTM_DELROUTE, _CREATE if add else 0, body, label,
                  f"route {'add' if add else 'del'} {to} via {via} proto {rtnl.RTPROT_UMLSTATE}")

    def send(self, limit: int | None = None) -> list[tuple[object, int]]:
        """Send the first ``limit`` (default: all) requests; return (label, errno) for each, 0 when it took."""
        messages = self._messages[:limit] if limit is not None else self._messages
        results: dict[int, int] = {}
        with rtnl.open_socket() as sock:
            # Bounded windows, so the acks of one window never overflow the receive buffer.
            for start in range(0, len(messages), 256):
                window = messages[start:start + 256]
                sock.sendall(b"".join(window))
                while len(results) < start + len(window):
                    buf = sock.recv(1 << 20)
                    offset = 0
                    while offset + rtnl.NLMSG.size <= len(buf):
                        length, kind, _flags, seq, _pid = rtnl.NLMSG.unpack_from(buf, offset)
                        if length < rtnl.NLMSG.size:  # malformed: it would never advance
                            raise ActionError(f"netlink: an ack of {length} bytes, shorter than its header")
                        if kind == rtnl.NLMSG_ERROR:
                            (code,) = struct.unpack_from("=i", buf, offset + rtnl.NLMSG.size)
                            results[seq] = -code
                        offset += (length + 3) & ~3
        out = [(self.labels[i], results.get(i + 1, errno.EIO)) for i in range(len(messages))]
        self._messages.clear()
        self.labels.clear()
        self.said.clear()
        return out
