"""Actions on VXLAN links (a bridge stretched between hosts) and their static forwarding entries."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import ClassVar

from umlstate.model.snapshot import Link, Snapshot
from umlstate.plan.actions.base import Action, Kind, Op, _Named
from umlstate.plan.actions.tap import without_link


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
