"""Actions on the host's addresses on its links, and on proxy entries (ARP, NDP) on the uplinks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import ClassVar

from umlstate.model.snapshot import Snapshot
from umlstate.plan.actions.base import Action, Kind, Op


@dataclass(frozen=True)
class AddAddress(Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "address"
    ifname: str
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface

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
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface

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
    address: ipaddress.IPv4Address | ipaddress.IPv6Address

    @property
    def target(self) -> str:
        return f"{self.uplink} {self.address}"

    @property
    def detail(self) -> str:
        return f"ip {'-6 ' if self.address.version == 6 else ''}neigh add proxy {self.address} dev {self.uplink}"

    def simulate(self, s: Snapshot) -> Snapshot:
        owned = s.records.proxies | {(self.uplink, str(self.address))}
        return replace(s, proxies=s.proxies | {(self.uplink, self.address)},
                       records=replace(s.records, proxies=owned))


@dataclass(frozen=True)
class RemoveProxy(Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "proxy-neigh"
    uplink: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address

    @property
    def target(self) -> str:
        return f"{self.uplink} {self.address}"

    @property
    def detail(self) -> str:
        return f"ip {'-6 ' if self.address.version == 6 else ''}neigh del proxy {self.address} dev {self.uplink}"

    def simulate(self, s: Snapshot) -> Snapshot:
        owned = s.records.proxies - {(self.uplink, str(self.address))}
        return replace(s, proxies=s.proxies - {(self.uplink, self.address)},
                       records=replace(s.records, proxies=owned))
