"""Actions on the host itself: the tun device node, groups and their members, sysctls."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from umlstate.model.snapshot import HostGroup, Snapshot, TunNode
from umlstate.plan.actions.base import Action, Kind, Op, _mode, _Named

# --- tun device ----------------------------------------------------------------


@dataclass(frozen=True)
class CreateTunNode(Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "tun-device"
    path: str
    mode: int | None
    group: str | None

    @property
    def target(self) -> str:
        return self.path

    @property
    def detail(self) -> str:
        return f"mknod c 10 200, mode {_mode(self.mode)}, group {self.group or 'unchanged'}"

    def simulate(self, s: Snapshot) -> Snapshot:
        gid = s.gid(self.group) if self.group else 0
        node = TunNode(self.path, exists=True, is_tun=True, mode=self.mode if self.mode is not None else 0o600,
                       gid=gid)
        return replace(s, tun=node, records=replace(s.records, tun_created=True, tun_path=self.path))


@dataclass(frozen=True)
class FixTunNode(Action):
    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "tun-device"
    path: str
    mode: int | None  # None: leave as is
    group: str | None
    gid_now: int | None = None
    mode_now: int | None = None

    @property
    def target(self) -> str:
        return self.path

    @property
    def detail(self) -> str:
        parts = []
        if self.mode is not None:
            parts.append(f"chmod {_mode(self.mode)}")
        if self.group is not None:
            parts.append(f"chgrp {self.group}")
        return ", ".join(parts)

    def simulate(self, s: Snapshot) -> Snapshot:
        assert s.tun is not None
        node = replace(s.tun, mode=self.mode if self.mode is not None else s.tun.mode,
                       gid=s.gid(self.group) if self.group is not None else s.tun.gid)
        original = s.records.tun_original
        if original is None and s.tun.mode is not None and s.tun.gid is not None:
            original = (s.tun.mode, s.tun.gid)
        return replace(s, tun=node, records=replace(s.records, tun_original=original, tun_path=self.path))


@dataclass(frozen=True)
class RestoreTunNode(Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "tun-device"
    path: str
    mode: int
    gid: int

    @property
    def target(self) -> str:
        return self.path

    @property
    def detail(self) -> str:
        return f"restore mode {self.mode:04o}, gid {self.gid}"

    def simulate(self, s: Snapshot) -> Snapshot:
        assert s.tun is not None
        return replace(s, tun=replace(s.tun, mode=self.mode, gid=self.gid),
                       records=replace(s.records, tun_original=None, tun_path=None))


@dataclass(frozen=True)
class DeleteTunNode(Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "tun-device"
    path: str

    @property
    def target(self) -> str:
        return self.path

    @property
    def detail(self) -> str:
        return "remove the node umlstate made"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, tun=TunNode(self.path, exists=False),
                       records=replace(s.records, tun_created=False, tun_original=None, tun_path=None))


# --- groups ----------------------------------------------------------------------


@dataclass(frozen=True)
class CreateGroup(_Named, Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "group"
    name: str

    @property
    def detail(self) -> str:
        return "groupadd"

    def simulate(self, s: Snapshot) -> Snapshot:
        groups = {**s.groups, self.name: HostGroup(self.name, None)}
        return replace(s, groups=groups,
                       records=replace(s.records, groups_created=s.records.groups_created | {self.name}))


@dataclass(frozen=True)
class AddGroupMember(Action):
    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "group"
    group: str
    user: str

    @property
    def target(self) -> str:
        return self.group

    @property
    def detail(self) -> str:
        return f"add member {self.user}"

    def simulate(self, s: Snapshot) -> Snapshot:
        g = s.groups[self.group]
        assert g is not None
        groups = {**s.groups, self.group: replace(g, members=g.members | {self.user})}
        added = s.records.members_added | {(self.group, self.user)}
        return replace(s, groups=groups, records=replace(s.records, members_added=added))


@dataclass(frozen=True)
class RemoveGroupMember(Action):
    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "group"
    group: str
    user: str

    @property
    def target(self) -> str:
        return self.group

    @property
    def detail(self) -> str:
        return f"remove member {self.user}"

    def simulate(self, s: Snapshot) -> Snapshot:
        g = s.groups.get(self.group)
        groups = dict(s.groups)
        if g is not None:
            groups[self.group] = replace(g, members=g.members - {self.user})
        added = s.records.members_added - {(self.group, self.user)}
        return replace(s, groups=groups, records=replace(s.records, members_added=added))


@dataclass(frozen=True)
class ForgetGroupMember(Action):
    """A membership umlstate added, already gone from the host: only the record goes.

    An action, not a silent edit of the planner's working snapshot, so that
    apply saves the shorter record: otherwise a later run could remove a
    membership someone else added after it.
    """

    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "group"
    group: str
    user: str

    @property
    def target(self) -> str:
        return self.group

    @property
    def detail(self) -> str:
        return f"forget member {self.user} (umlstate added it; it is gone already)"

    def simulate(self, s: Snapshot) -> Snapshot:
        added = s.records.members_added - {(self.group, self.user)}
        return replace(s, records=replace(s.records, members_added=added))


@dataclass(frozen=True)
class DeleteGroup(_Named, Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "group"
    name: str

    @property
    def detail(self) -> str:
        return "groupdel"

    def simulate(self, s: Snapshot) -> Snapshot:
        groups = {**s.groups, self.name: None}
        added = frozenset(m for m in s.records.members_added if m[0] != self.name)
        return replace(s, groups=groups, records=replace(
            s.records, groups_created=s.records.groups_created - {self.name}, members_added=added))


# --- sysctls ---------------------------------------------------------------------


@dataclass(frozen=True)
class SetSysctl(Action):
    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "sysctl"
    key: str
    value: str
    previous: str

    @property
    def target(self) -> str:
        return self.key

    @property
    def detail(self) -> str:
        return f"{self.previous} -> {self.value}"

    def simulate(self, s: Snapshot) -> Snapshot:
        originals = dict(s.records.sysctl_originals)
        originals.setdefault(self.key, self.previous)
        return replace(s, sysctls={**s.sysctls, self.key: self.value},
                       records=replace(s.records, sysctl_originals=originals))


@dataclass(frozen=True)
class RestoreSysctl(Action):
    """Put back the value umlstate found before it first changed the key."""

    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "sysctl"
    key: str
    value: str
    current: str | None

    @property
    def target(self) -> str:
        return self.key

    @property
    def detail(self) -> str:
        if self.current == self.value:
            return f"forget {self.value} (already the value umlstate found)"
        return f"{self.current} -> {self.value} (the value umlstate found)"

    def simulate(self, s: Snapshot) -> Snapshot:
        originals = {k: v for k, v in s.records.sysctl_originals.items() if k != self.key}
        sysctls = {**s.sysctls, self.key: self.value} if self.key in s.sysctls else dict(s.sysctls)
        return replace(s, sysctls=sysctls, records=replace(s.records, sysctl_originals=originals))
