"""Actions on Linux bridges: create, up, the gateway's MAC, a bounded forwarding table, delete; a tap on one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from umlstate.model.snapshot import Link, Snapshot
from umlstate.plan.actions.base import Action, Kind, Op, _Named
from umlstate.plan.actions.tap import without_link

# What a bridge learns at most: far above a farm's guests, far below what a MAC flood would leave.
BRIDGE_FDB_MAX = 1024


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
