"""The actions a plan is made of: frozen dataclasses, one per kind of change.

Each action knows its op, kind, target and a human detail, carries the reason
the planner chose it, and can ``simulate`` its effect on a snapshot so the
planner's later steps see the host as it will be. Carrying them out is the
executor's job; nothing here touches the host.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import ClassVar, Literal, TypeAlias

from umlstate.model.snapshot import GuestState, HostGroup, Link, Proc, Snapshot, SwitchState, TunNode
from umlstate.plan import cmdline

Op = Literal["create", "update", "delete", "replace"]
Kind = Literal["tun-device", "group", "sysctl", "tap", "address", "proxy-neigh", "switch", "guest"]

# What carrying out each kind of change takes, for the message a run without
# it gets before it changes anything (rather than EPERM at its first step).
PRIVILEGE: dict[Kind, str] = {
    "tun-device": "making a device node and setting its group needs root (CAP_MKNOD, CAP_CHOWN)",
    "group": "editing /etc/group needs root",
    "sysctl": "writing /proc/sys/net needs root",
    "tap": "persistent taps need CAP_NET_ADMIN",
    "address": "addresses need CAP_NET_ADMIN",
    "proxy-neigh": "proxy ARP entries need CAP_NET_ADMIN",
    "switch": "starting or signalling a process as its declared user needs root (CAP_SETUID, CAP_KILL)",
    "guest": "starting or signalling a process as its declared user needs root (CAP_SETUID, CAP_KILL)",
}


@dataclass(frozen=True)
class Action:
    op: ClassVar[Op]
    kind: ClassVar[Kind]
    reason: str

    @property
    def target(self) -> str:
        raise NotImplementedError

    @property
    def detail(self) -> str:
        raise NotImplementedError

    def simulate(self, s: Snapshot) -> Snapshot:
        raise NotImplementedError

    def to_json(self) -> dict[str, str]:
        return {"op": self.op, "kind": self.kind, "target": self.target,
                "detail": self.detail, "reason": self.reason}


class _Named:
    """For actions whose target is the name of what they act on."""

    name: str

    @property
    def target(self) -> str:
        return self.name


def _mode(mode: int | None) -> str:
    return "unchanged" if mode is None else f"{mode:04o}"


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
        return f"tunctl: owner {self.owner}{group}, persistent, no PI, alias {self.alias}"

    def simulate(self, s: Snapshot) -> Snapshot:
        link = Link(self.name, kind="tun", tun_type="tap", up=False, alias=self.alias, group=self.link_group,
                    owner=s.uid(self.owner), tun_group=s.gid(self.group) if self.group else None,
                    persist=True, pi=False)
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
        links = {k: v for k, v in s.links.items() if k != self.name}
        addresses = {k: v for k, v in s.addresses.items() if k != self.name}
        return replace(s, links=links, addresses=addresses,
                       records=replace(s.records, pending_taps=s.records.pending_taps - {self.name}))


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


# --- switches and guests -------------------------------------------------------------


@dataclass(frozen=True)
class StartSwitch(_Named, Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "switch"
    name: str
    argv: tuple[str, ...]
    user: str
    socket: str
    tap: str | None
    holds_stdin: bool = False  # vde_switch: a stdin that never ends keeps it in the foreground

    @property
    def detail(self) -> str:
        return f"start as {self.user}: {' '.join(self.argv)}"

    def simulate(self, s: Snapshot) -> Snapshot:
        proc = Proc(0, s.uid(self.user) or 0, self.argv, 0.0)
        s = _carrier(s, self.tap, True)
        return replace(s, switches={**s.switches, self.name: SwitchState(proc, socket_exists=True)})


@dataclass(frozen=True)
class StopSwitch(_Named, Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "switch"
    name: str
    proc: Proc

    @property
    def detail(self) -> str:
        return f"stop pid {self.proc.pid} (SIGTERM) and whatever else runs in its cgroup"

    def simulate(self, s: Snapshot) -> Snapshot:
        s = _carrier(s, cmdline.tap_in(self.proc.argv), False)
        return replace(s, switches={**s.switches, self.name: SwitchState(None)})


@dataclass(frozen=True)
class ReplaceSwitch(Action):
    op: ClassVar[Op] = "replace"
    kind: ClassVar[Kind] = "switch"
    stop: StopSwitch
    start: StartSwitch

    @property
    def target(self) -> str:
        return self.start.name

    @property
    def detail(self) -> str:
        return argv_diff(self.stop.proc.argv, self.start.argv)

    def simulate(self, s: Snapshot) -> Snapshot:
        return self.start.simulate(self.stop.simulate(s))


@dataclass(frozen=True)
class StartGuest(_Named, Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "guest"
    name: str
    argv: tuple[str, ...]
    user: str
    cow: str | None
    base: str | None

    @property
    def detail(self) -> str:
        mem = next((w for w in self.argv if w.startswith("mem=")), "")
        nics = sum(1 for w in self.argv if w.startswith("eth"))
        return f"boot as {self.user}: {self.argv[0]} {mem}, {nics} nic(s)"

    def simulate(self, s: Snapshot) -> Snapshot:
        proc = Proc(0, s.uid(self.user) or 0, self.argv, 0.0)
        return replace(s, guests={**s.guests, self.name: GuestState(proc, answers=True)})


@dataclass(frozen=True)
class StopGuest(_Named, Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "guest"
    name: str
    proc: Proc

    @property
    def detail(self) -> str:
        return f"stop pid {self.proc.pid}: mconsole cad, then halt, then signals; then all its processes"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, guests={**s.guests, self.name: GuestState(None)})


@dataclass(frozen=True)
class ReplaceGuest(Action):
    op: ClassVar[Op] = "replace"
    kind: ClassVar[Kind] = "guest"
    stop: StopGuest
    start: StartGuest

    @property
    def target(self) -> str:
        return self.start.name

    @property
    def detail(self) -> str:
        return argv_diff(self.stop.proc.argv, self.start.argv)

    def simulate(self, s: Snapshot) -> Snapshot:
        return self.start.simulate(self.stop.simulate(s))


@dataclass(frozen=True)
class EndSwitchLeftovers(_Named, Action):
    """Processes left in a dead switch's cgroup: ended before it starts again."""

    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "switch"
    name: str
    count: int

    @property
    def detail(self) -> str:
        return f"end the {self.count} process(es) its dead run left in its cgroup"

    def simulate(self, s: Snapshot) -> Snapshot:
        state = s.switches.get(self.name, SwitchState(None))
        return replace(s, switches={**s.switches, self.name: replace(state, leftovers=0)})


@dataclass(frozen=True)
class EndGuestLeftovers(_Named, Action):
    """A guest whose main process died (SIGKILL, the OOM killer) while its helpers live on, holding its COW file."""

    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "guest"
    name: str
    count: int

    @property
    def detail(self) -> str:
        return f"end the {self.count} helper process(es) of its dead run, which hold its disk"

    def simulate(self, s: Snapshot) -> Snapshot:
        state = s.guests.get(self.name, GuestState(None))
        return replace(s, guests={**s.guests, self.name: replace(state, leftovers=0)})


# Every action there is: apply's dispatch matches on this union, and mypy
# (assert_never) turns an action without a handler into a type error.
AnyAction: TypeAlias = (
    CreateTunNode | FixTunNode | RestoreTunNode | DeleteTunNode
    | CreateGroup | AddGroupMember | RemoveGroupMember | ForgetGroupMember | DeleteGroup
    | SetSysctl | RestoreSysctl
    | CreateTap | FixTap | MarkTap | SetLinkUp | DeleteTap | ReplaceTap
    | AddAddress | RemoveAddress | AddProxy | RemoveProxy
    | StartSwitch | StopSwitch | ReplaceSwitch | EndSwitchLeftovers
    | StartGuest | StopGuest | ReplaceGuest | EndGuestLeftovers
)


def argv_diff(old: tuple[str, ...], new: tuple[str, ...]) -> str:
    """The words that differ, as -old +new: what a replace changes."""
    removed = [w for w in old if w not in new]
    added = [w for w in new if w not in old]
    if not removed and not added:
        return "same command line, restarted"
    return " ".join([*(f"-{w}" for w in removed), *(f"+{w}" for w in added)])


def _carrier(s: Snapshot, tap: str | None, on: bool) -> Snapshot:
    if tap is None or tap not in s.links:
        return s
    return replace(s, links={**s.links, tap: replace(s.links[tap], carrier=on)})
