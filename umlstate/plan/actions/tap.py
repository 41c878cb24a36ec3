"""Actions on taps, the links umlstate makes for guests and switches: create, fix, mark, up, delete, replace."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from umlstate.model.snapshot import Link, Snapshot
from umlstate.plan.actions.base import Action, Kind, Op, _Named


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
