"""The kernel's network state, read and changed: netlink (pyroute2) and tun ioctls.

Used by ``observe`` (reads) and ``executor`` (writes), always inside the
namespace the process already entered, so one netlink socket serves the whole
run. pyroute2 is imported here only, and lazily: commands that never touch the
kernel (validate, schema, graph) do not pay its import time.

Taps are made with ioctls on the tun node, not pyroute2's tuntap emulation:
that forks a helper per tap inside a namespace and, worse, silently re-attaches
to an existing tap and resets its flags. Callers check existence first.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from umlstate.errors import ActionError
from umlstate.snapshot import Link

if TYPE_CHECKING:
    from pyroute2 import IPRoute

# linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
NTF_PROXY = 0x08
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
TUN_TYPES = {1: "tun", 2: "tap"}


class Netlink:
    """One rtnetlink socket in the current namespace, opened on first use."""

    def __init__(self) -> None:
        self._ipr: IPRoute | None = None

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    # --- reads ---------------------------------------------------------------------

    def links(self, names: Iterable[str]) -> tuple[dict[str, Link], dict[int, str]]:
        """Every tun link, plus the named ones whatever their kind; and index -> name of those."""
        out: dict[str, Link] = {}
        index: dict[int, str] = {}
        for link_index, link in _dump_links(kind="tun"):
            out[link.name] = link
            index[link_index] = link.name
        missing = set(names) - set(out)
        if missing:  # uplinks, and whatever else stands under a wanted tap's name: one more dump
            for link_index, link in _dump_links(kind=None):
                if link.name in missing:
                    out[link.name] = link
                    index[link_index] = link.name
        return out, index

    def addresses(self, index: dict[int, str], names: set[str]) -> dict[str, frozenset[ipaddress.IPv4Interface]]:
        found: dict[str, set[ipaddress.IPv4Interface]] = {n: set() for n in names}
        for msg in self.ipr.addr("dump", family=socket.AF_INET):
            name = index.get(msg["index"])
            if name in found:
                found[name].add(ipaddress.IPv4Interface(f"{msg.get('address')}/{msg['prefixlen']}"))
        return {n: frozenset(a) for n, a in found.items()}

    def proxies(self, index: dict[int, str]) -> frozenset[tuple[str, ipaddress.IPv4Address]]:
        # The kernel dumps proxy entries only when NTF_PROXY is a flag of the request.
        out = set()
        for msg in self.ipr.neigh("dump", dump_filter=None, flags=NTF_PROXY):
            dst = msg.get("dst")
            if msg["family"] == socket.AF_INET and dst and msg["ifindex"] in index:
                out.add((index[msg["ifindex"]], ipaddress.IPv4Address(dst)))
        return frozenset(out)

    def carrier(self, name: str) -> bool:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            (msg,) = self.ipr.link("get", ifname=name)
        except NetlinkError:
            return False
        return bool(msg["flags"] & IFF_LOWER_UP)

    # --- writes (the rest go in bulk: Batch) ---------------------------------------

    def delete_group(self, group: int) -> None:
        """One RTM_DELLINK for a whole link group: ~1000x cheaper than one by one."""
        self._call(f"delete link group {group}", self.ipr.link, "del", group=group)

    @staticmethod
    def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            fn(*args, **kwargs)
        except NetlinkError as exc:
            raise ActionError(f"{what}: {os.strerror(exc.code)} (netlink error {exc.code})") from None


def _index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise ActionError(f"interface {name} does not exist") from None


# --- the tun link dump: the hot path of every observation -------------------------------

# rtnetlink numbers (linux/rtnetlink.h, if_link.h): the few this decoder reads.
RTM_NEWLINK, NLMSG_ERROR, NLMSG_DONE = 16, 2, 3
IFLA_IFNAME, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_GROUP = 3, 18, 20, 27
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_TUN_OWNER, IFLA_TUN_GROUP, IFLA_TUN_TYPE, IFLA_TUN_PI, IFLA_TUN_PERSIST = 1, 2, 3, 4, 6
RTEXT_FILTER_SKIP_STATS = 1 << 3
_NLMSG = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_NLA = struct.Struct("=HH")


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


def _dump_links(kind: str | None) -> Iterator[tuple[int, Link]]:
    """Ask the kernel for links of one kind (or all), without statistics; decode only what a Link holds.

    A 1000-tap host answers with ~1.2 MB; pyroute2 decodes every attribute
    of every link (~0.3 ms each), which made observation grow with the host.
    pyroute2 still builds the request; the reply is read with the few struct
    calls below, on a socket of this process's namespace.
    """
    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_GETLINK
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    request = ifinfmsg()
    request["family"] = socket.AF_UNSPEC
    request["attrs"] = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
    if kind is not None:  # filtered in the kernel: a host's other links are never sent
        request["attrs"].append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]}))
    request["header"]["type"] = RTM_GETLINK
    request["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    request["header"]["sequence_number"] = 1
    request.encode()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.send(request.data)
        while True:
            buf = sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSG.size <= len(buf):
                length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(buf, offset)
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", buf, offset + _NLMSG.size)
                    raise ActionError(f"link dump: {os.strerror(-code)}")
                if kind == RTM_NEWLINK:
                    yield _decode_link(buf, offset + _NLMSG.size, offset + length)
                offset += (length + 3) & ~3


def _decode_link(buf: bytes, start: int, end: int) -> tuple[int, Link]:
    _family, _type, index, flags, _change = _IFINFO.unpack_from(buf, start)
    attrs = _attrs(buf, start + _IFINFO.size, end)

    def text(where: tuple[int, int] | None) -> str | None:
        return buf[where[0]:where[1]].split(b"\0", 1)[0].decode() if where else None

    def u32(where: tuple[int, int] | None) -> int | None:
        return struct.unpack_from("=I", buf, where[0])[0] if where else None

    def u8(where: tuple[int, int] | None) -> int | None:
        return buf[where[0]] if where else None

    info = attrs.get(IFLA_LINKINFO)
    linkinfo = _attrs(buf, *info) if info else {}
    data_at = linkinfo.get(IFLA_INFO_DATA)
    data = _attrs(buf, *data_at) if data_at else {}
    owner, group = u32(data.get(IFLA_TUN_OWNER)), u32(data.get(IFLA_TUN_GROUP))
    return index, Link(
        name=text(attrs.get(IFLA_IFNAME)) or f"if{index}",
        kind=text(linkinfo.get(IFLA_INFO_KIND)),
        up=bool(flags & IFF_UP),
        carrier=bool(flags & IFF_LOWER_UP),
        alias=text(attrs.get(IFLA_IFALIAS)) or None,
        group=u32(attrs.get(IFLA_GROUP)) or 0,
        tun_type=TUN_TYPES.get(u8(data.get(IFLA_TUN_TYPE)) or 0),
        owner=None if owner in (None, 0xFFFFFFFF) else owner,
        tun_group=None if group in (None, 0xFFFFFFFF) else group,
        persist=bool(u8(data.get(IFLA_TUN_PERSIST))),
        pi=bool(u8(data.get(IFLA_TUN_PI))),
    )


# --- tun ioctls ----------------------------------------------------------------------


def _attach(tun_path: str, name: str) -> int:
    """Open the tun node and attach to (or create) tap ``name``; return the fd."""
    try:
        fd = os.open(tun_path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        why = {errno.ENODEV: "; the kernel has no tun driver: modprobe tun (CONFIG_TUN)",
               errno.ENXIO: "; the kernel has no tun driver: modprobe tun (CONFIG_TUN)",
               errno.ENOENT: "; declare host.tun so that umlstate makes the node (c 10 200)"}.get(exc.errno or 0, "")
        raise ActionError(f"cannot open the tun device {tun_path}: {exc.strerror}{why}") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        if exc.errno == errno.EBUSY:
            raise ActionError(f"tap {name} is in use by a process (a switch or guest is attached); "
                              "stop it first") from None
        raise ActionError(f"TUNSETIFF {name}: {exc.strerror}") from None
    return fd


def create_tap(tun_path: str, name: str, uid: int, gid: int | None) -> None:
    """tunctl -u UID [-g GID] -t NAME: a persistent tap without packet information."""
    fd = _attach(tun_path, name)
    try:
        _set_owner(fd, name, uid, gid)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as exc:
        raise ActionError(f"tap {name}: {exc.strerror}") from None
    finally:
        os.close(fd)


def fix_tap(tun_path: str, name: str, uid: int, gid: int | None) -> None:
    """Change the owner and group of an existing persistent tap in place."""
    fd = _attach(tun_path, name)
    try:
        _set_owner(fd, name, uid, gid)
    finally:
        os.close(fd)


def _set_owner(fd: int, name: str, uid: int, gid: int | None) -> None:
    try:
        fcntl.ioctl(fd, TUNSETOWNER, uid)
        # The kernel refuses (gid_t)-1: a group can be set but never cleared,
        # so the planner replaces a tap whose group must go.
        if gid is not None:
            fcntl.ioctl(fd, TUNSETGROUP, gid)
    except OSError as exc:
        raise ActionError(f"tap {name}: setting owner {uid}/group {gid}: {exc.strerror}") from None


# --- batched writes: many requests sent together, their acks collected once ---------------


class Batch:
    """Netlink change requests sent in bulk on one socket of this namespace.

    One request and one wait per change costs a round trip each (~0.3 ms in
    pyroute2's request path); a thousand taps need four thousand. Here each
    request is still built by pyroute2's message classes, but they go out
    back to back and the kernel's acks are read afterwards, matched to their
    request by sequence number. The kernel handles them in order, as if sent
    one by one.
    """

    def __init__(self) -> None:
        self._messages: list[bytes] = []
        self.labels: list[object] = []

    def __len__(self) -> int:
        return len(self._messages)

    def _add(self, msg: Any, kind: int, flags: int, label: object) -> None:
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST

        msg["header"]["type"] = kind
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        msg["header"]["sequence_number"] = len(self._messages) + 1
        msg.encode()
        self._messages.append(bytes(msg.data))
        self.labels.append(label)

    def set_link(self, label: object, name: str, *, alias: str | None = None, group: int | None = None,
                 up: bool = False) -> None:
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        msg = ifinfmsg()
        msg["index"] = _index(name)
        if up:
            msg["flags"] = msg["change"] = IFF_UP
        attrs: list[tuple[str, object]] = []
        if alias is not None:
            attrs.append(("IFLA_IFALIAS", alias))
        if group is not None:
            attrs.append(("IFLA_GROUP", group))
        msg["attrs"] = attrs
        self._add(msg, RTM_NEWLINK, 0, label)

    def delete_link(self, label: object, name: str) -> None:
        from pyroute2.netlink.rtnl import RTM_DELLINK
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        msg = ifinfmsg()
        msg["index"] = _index(name)
        self._add(msg, RTM_DELLINK, 0, label)

    def address(self, label: object, name: str, address: ipaddress.IPv4Interface, *, add: bool) -> None:
        from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL
        from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_NEWADDR
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET
        msg["prefixlen"] = address.network.prefixlen
        msg["index"] = _index(name)
        msg["attrs"] = [("IFA_LOCAL", str(address.ip)), ("IFA_ADDRESS", str(address.ip))]
        if add:
            msg["attrs"].append(("IFA_BROADCAST", str(address.network.broadcast_address)))
        self._add(msg, RTM_NEWADDR if add else RTM_DELADDR, NLM_F_CREATE | NLM_F_EXCL if add else 0, label)

    def proxy(self, label: object, uplink: str, address: ipaddress.IPv4Address, *, add: bool) -> None:
        from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL
        from pyroute2.netlink.rtnl import RTM_DELNEIGH, RTM_NEWNEIGH
        from pyroute2.netlink.rtnl.ndmsg import ndmsg

        msg = ndmsg()
        msg["family"] = socket.AF_INET
        msg["ifindex"] = _index(uplink)
        msg["flags"] = NTF_PROXY
        msg["attrs"] = [("NDA_DST", str(address))]
        self._add(msg, RTM_NEWNEIGH if add else RTM_DELNEIGH, NLM_F_CREATE | NLM_F_EXCL if add else 0, label)

    def send(self, limit: int | None = None) -> list[tuple[object, int]]:
        """Send the first ``limit`` (default: all) requests; return (label, errno) for each, 0 when it took."""
        messages = self._messages[:limit] if limit is not None else self._messages
        results: dict[int, int] = {}
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
            # Bounded windows, so the acks of one window never overflow the receive buffer.
            for start in range(0, len(messages), 256):
                window = messages[start:start + 256]
                sock.sendall(b"".join(window))
                while len(results) < start + len(window):
                    buf = sock.recv(1 << 20)
                    offset = 0
                    while offset + _NLMSG.size <= len(buf):
                        length, kind, _flags, seq, _pid = _NLMSG.unpack_from(buf, offset)
                        if kind == NLMSG_ERROR:
                            (code,) = struct.unpack_from("=i", buf, offset + _NLMSG.size)
                            results[seq] = -code
                        offset += (length + 3) & ~3
        out = [(self.labels[i], results.get(i + 1, errno.EIO)) for i in range(len(messages))]
        self._messages.clear()
        self.labels.clear()
        return out
