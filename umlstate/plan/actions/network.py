"""Actions on the kernel's network: taps, bridges, VXLAN links and their forwarding entries, addresses, proxy ARP."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import ClassVar

from umlstate.model.snapshot import Link, Snapshot
from umlstate.plan.actions.base import Action, Kind, Op, _Named

# What a bridge learns at most: far above a farm's guests, far below what a MAC flood would leave.
BRIDGE_FDB_MAX = 1024

# --- taps ------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateTap(_Named, Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "tap"
    name: str
    owner: str
    group: str | None
    alias: str
    link_group: int

    @property
    def detail(self) -> str:
        group = f", group {self.group}" if self.group else ""
        return f"tunctl: owner {self.owner}{group}, persistent, no PI, alias {self.alias}, no IPv6 autoconf"

    def simulate(self, s: Snapshot) -> Snapshot:
        link = Link(self.name, kind="tun", tun_type="tap", up=False, alias=self.alias, group=self.link_group,
                    owner=s.uid(self.owner), tun_group=s.gid(self.group) if self.group else None,
                    persist=True, pi=False, autoconf=False)
        return replace(s, links={**s.links, self.name: link},
                       addresses={**s.addresses, self.name: frozenset()})


@dataclass(frozen=True)
class FixTap(_Named, Action):
    """Change owner/group in place (TUNSETOWNER/TUNSETGROUP on an attached fd)."""

    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "tap"
    name: str
    owner: str
    group: str | None

    @property
    def detail(self) -> str:
        return f"owner {self.owner}, group {self.group or 'none'}"

    def simulate(self, s: Snapshot) -> Snapshot:
        link = replace(s.links[self.name], owner=s.uid(self.owner),
                       tun_group=s.gid(self.group) if self.group else None)
        return replace(s, links={**s.links, self.name: link})


@dataclass(frozen=True)
class MarkTap(_Named, Action):
    """Put umlstate's mark on a tap: one it adopts, or one a crashed run made."""

    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "tap"
    name: str
    alias: str
    link_group: int

    @property
    def detail(self) -> str:
        return f"mark: alias {self.alias}, link group {self.link_group}"

    def simulate(self, s: Snapshot) -> Snapshot:
        link = replace(s.links[self.name], alias=self.alias, group=self.link_group)
        return replace(s, links={**s.links, self.name: link})


@dataclass(frozen=True)
class SetLinkUp(_Named, Action):
    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "tap"
    name: str

    @property
    def detail(self) -> str:
        return "link up"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, links={**s.links, self.name: replace(s.links[self.name], up=True)})


def without_link(s: Snapshot, name: str) -> Snapshot:
    """What deleting a link of any kind does in the kernel: its addresses, its flood entries and the
    enslavement of its ports go with it; its pending record (made before a crash could mark it) too."""
    links = {k: (replace(v, master=None) if v.master == name else v) for k, v in s.links.items() if k != name}
    addresses = {k: v for k, v in s.addresses.items() if k != name}
    fdb = frozenset(f for f in s.fdb if f[0] != name)
    return replace(s, links=links, addresses=addresses, fdb=fdb,
                   records=replace(s.records, pending_taps=s.records.pending_taps - {name}))


@dataclass(frozen=True)
class DeleteTap(_Named, Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "tap"
    name: str
    link_group: int

    @property
    def detail(self) -> str:
        return "ip link del"

    def simulate(self, s: Snapshot) -> Snapshot:
        return without_link(s, self.name)


@dataclass(frozen=True)
class ReplaceTap(Action):
    """A tap the kernel cannot fix in place (tun type, PI flag): delete and create."""

    op: ClassVar[Op] = "replace"
    kind: ClassVar[Kind] = "tap"
    create: CreateTap

    @property
    def target(self) -> str:
        return self.create.name

    @property
    def detail(self) -> str:
        return self.create.detail

    def simulate(self, s: Snapshot) -> Snapshot:
        gone = DeleteTap(self.reason, self.create.name, self.create.link_group).simulate(s)
        return self.create.simulate(gone)


# --- addresses and proxy entries ---------------------------------------------------


@dataclass(frozen=True)
class AddAddress(Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "address"
    ifname: str
    address: ipaddress.IPv4Interface

    @property
    def target(self) -> str:
        return f"{self.ifname} {self.address}"

    @property
    def detail(self) -> str:
        return f"ip addr add {self.address} dev {self.ifname}"

    def simulate(self, s: Snapshot) -> Snapshot:
        current = s.addresses.get(self.ifname, frozenset())
        return replace(s, addresses={**s.addresses, self.ifname: current | {self.address}})


@dataclass(frozen=True)
class RemoveAddress(Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "address"
    ifname: str
    address: ipaddress.IPv4Interface

    @property
    def target(self) -> str:
        return f"{self.ifname} {self.address}"

    @property
    def detail(self) -> str:
        return f"ip addr del {self.address} dev {self.ifname}"

    def simulate(self, s: Snapshot) -> Snapshot:
        current = s.addresses.get(self.ifname, frozenset())
        return replace(s, addresses={**s.addresses, self.ifname: current - {self.address}})


@dataclass(frozen=True)
class AddProxy(Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "proxy-neigh"
    uplink: str
    address: ipaddress.IPv4Address

    @property
    def target(self) -> str:
        return f"{self.uplink} {self.address}"

    @property
    def detail(self) -> str:
        return f"ip neigh add proxy {self.address} dev {self.uplink}"

    def simulate(self, s: Snapshot) -> Snapshot:
        owned = s.records.proxies | {(self.uplink, str(self.address))}
        return replace(s, proxies=s.proxies | {(self.uplink, self.address)},
                       records=replace(s.records, proxies=owned))


@dataclass(frozen=True)
class RemoveProxy(Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "proxy-neigh"
    uplink: str
    address: ipaddress.IPv4Address

    @property
    def target(self) -> str:
        return f"{self.uplink} {self.address}"

    @property
    def detail(self) -> str:
        return f"ip neigh del proxy {self.address} dev {self.uplink}"

    def simulate(self, s: Snapshot) -> Snapshot:
        owned = s.records.proxies - {(self.uplink, str(self.address))}
        return replace(s, proxies=s.proxies - {(self.uplink, self.address)},
                       records=replace(s.records, proxies=owned))


# --- bridges ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateBridge(_Named, Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "bridge"
    name: str
    alias: str
    link_group: int
    mac: str | None = None  # the gateway's MAC, the same on every host that serves the subnet

    @property
    def detail(self) -> str:
        address = f" address {self.mac}" if self.mac else ""
        return (f"ip link add {self.name}{address} type bridge fdb_max_learned {BRIDGE_FDB_MAX}, alias {self.alias}, "
                "no IPv6 autoconf")

    def simulate(self, s: Snapshot) -> Snapshot:
        link = Link(self.name, kind="bridge", up=False, alias=self.alias, group=self.link_group, mac=self.mac,
                    autoconf=False, fdb_max=BRIDGE_FDB_MAX)
        return replace(s, links={**s.links, self.name: link}, addresses={**s.addresses, self.name: frozenset()},
                       records=replace(s.records, pending_taps=s.records.pending_taps | {self.name}))


@dataclass(frozen=True)
class DeleteBridge(_Named, Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "bridge"
    name: str
    link_group: int

    @property
    def detail(self) -> str:
        return "ip link del"

    def simulate(self, s: Snapshot) -> Snapshot:
        return without_link(s, self.name)


@dataclass(frozen=True)
class SetBridgeUp(_Named, Action):
    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "bridge"
    name: str

    @property
    def detail(self) -> str:
        return "link up"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, links={**s.links, self.name: replace(s.links[self.name], up=True)})


@dataclass(frozen=True)
class Enslave(_Named, Action):
    """Put a guest NIC's tap on its bridge."""

    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "tap"
    name: str
    bridge: str

    @property
    def detail(self) -> str:
        return f"ip link set {self.name} master {self.bridge}"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, links={**s.links, self.name: replace(s.links[self.name], master=self.bridge)})


@dataclass(frozen=True)
class SetBridgeMac(_Named, Action):
    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "bridge"
    name: str
    mac: str

    @property
    def detail(self) -> str:
        return f"ip link set {self.name} address {self.mac} (the gateway's MAC on every host)"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, links={**s.links, self.name: replace(s.links[self.name], mac=self.mac)})


@dataclass(frozen=True)
class LimitFdb(_Named, Action):
    """A bound on the MACs a bridge learns: a guest sending from random MACs fills no more (Linux 6.8)."""

    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "bridge"
    name: str

    @property
    def detail(self) -> str:
        return f"ip link set {self.name} type bridge fdb_max_learned {BRIDGE_FDB_MAX}"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, links={**s.links, self.name: replace(s.links[self.name], fdb_max=BRIDGE_FDB_MAX)})


@dataclass(frozen=True)
class QuietIpv6(Action):
    """No IPv6 router advertisements taken and no autoconfiguration on a link umlstate made: a guest's RA
    would give the host a route and an address (its port's policy drops RAs too, unless switched off)."""

    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "sysctl"
    link: str

    @property
    def target(self) -> str:
        return f"net.ipv6.conf.{self.link}"

    @property
    def detail(self) -> str:
        return "accept_ra 0, autoconf 0"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, links={**s.links, self.link: replace(s.links[self.link], autoconf=False)})


# --- VXLAN: a bridge stretched between hosts -----------------------------------------------


@dataclass(frozen=True)
class CreateVxlan(_Named, Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "vxlan"
    name: str
    vni: int
    local: ipaddress.IPv4Address
    port: int
    bridge: str
    alias: str
    link_group: int

    @property
    def detail(self) -> str:
        return (f"ip link add {self.name} type vxlan id {self.vni} local {self.local} dstport {self.port} nolearning, "
                f"master {self.bridge}, up")

    def simulate(self, s: Snapshot) -> Snapshot:
        link = Link(self.name, kind="vxlan", up=True, alias=self.alias, group=self.link_group, master=self.bridge,
                    vni=self.vni, local=str(self.local), autoconf=False)
        return replace(s, links={**s.links, self.name: link},
                       records=replace(s.records, pending_taps=s.records.pending_taps | {self.name}))


@dataclass(frozen=True)
class DeleteVxlan(_Named, Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "vxlan"
    name: str
    link_group: int

    @property
    def detail(self) -> str:
        return "ip link del (its flood entries go with it)"

    def simulate(self, s: Snapshot) -> Snapshot:
        return without_link(s, self.name)


@dataclass(frozen=True)
class AddFdb(Action):
    """A static forwarding entry of a VXLAN: frames for MAC go to that host (bridge fdb append); FLOOD_MAC's
    entries are where frames for MACs without one go."""

    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "fdb"
    vxlan: str
    mac: str
    remote: ipaddress.IPv4Address

    @property
    def target(self) -> str:
        return f"{self.vxlan} {self.mac} {self.remote}"

    @property
    def detail(self) -> str:
        return f"bridge fdb append {self.mac} dev {self.vxlan} dst {self.remote}"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, fdb=s.fdb | {(self.vxlan, self.mac, self.remote)})


@dataclass(frozen=True)
class RemoveFdb(Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "fdb"
    vxlan: str
    mac: str
    remote: ipaddress.IPv4Address

    @property
    def target(self) -> str:
        return f"{self.vxlan} {self.mac} {self.remote}"

    @property
    def detail(self) -> str:
        return f"bridge fdb del {self.mac} dev {self.vxlan} dst {self.remote}"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, fdb=s.fdb - {(self.vxlan, self.mac, self.remote)})
