"""The observed state: one immutable snapshot of the host, read once per run.

``observe`` fills it from the kernel, /etc and ``state_dir``; golden tests
load it from ``observed.json``; the planner reads it and simulates its own
actions on copies of it (``dataclasses.replace``). Pure data: no I/O here, so
the planner can import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

IPv4Interface = ipaddress.IPv4Interface
IPv4Address = ipaddress.IPv4Address


@dataclass(frozen=True)
class TunNode:
    """What stands at the tun device path."""

    path: str
    exists: bool
    is_tun: bool = False  # a character device 10:200
    mode: int | None = None  # permission bits only
    gid: int | None = None


@dataclass(frozen=True)
class HostGroup:
    name: str
    gid: int | None  # None: being created by the plan, number not yet known
    members: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Link:
    """A network interface; tun fields are None for other kinds."""

    name: str
    kind: str | None = None  # "tun" for taps, "veth", ...
    up: bool = False
    alias: str | None = None
    group: int = 0
    tun_type: str | None = None  # "tap" or "tun"
    owner: int | None = None  # None: anyone may attach (uid -1)
    tun_group: int | None = None
    persist: bool = False
    pi: bool = False
    carrier: bool = False  # IFF_LOWER_UP: for a tap, a process (switch, guest) is attached

    @property
    def is_tap(self) -> bool:
        return self.kind == "tun" and self.tun_type == "tap"


@dataclass(frozen=True)
class Records:
    """What umlstate remembers it owns, from ``<state_dir>/state.json``.

    Links carry their mark (ifalias); everything else that umlstate changes is
    recorded here, before the change, so a crash never orphans it.
    """

    sysctl_originals: Mapping[str, str] = field(default_factory=dict)
    proxies: frozenset[tuple[str, str]] = frozenset()  # (uplink, address)
    groups_created: frozenset[str] = frozenset()
    members_added: frozenset[tuple[str, str]] = frozenset()  # (group, user)
    tun_created: bool = False
    tun_original: tuple[int, int] | None = None  # (mode, gid) before umlstate changed it
    tun_path: str | None = None  # the node tun_created and tun_original speak of
    pending_taps: frozenset[str] = frozenset()  # taps being created when a run stopped
    held: frozenset[str] = frozenset()  # guests stopped by `umlstate stop`: apply leaves them down
    boot_id: str | None = None  # the boot the last apply ran in: pid files from another boot are stale


@dataclass(frozen=True)
class Proc:
    """A host process umlstate identified as one of its switches or guests."""

    pid: int
    uid: int
    argv: tuple[str, ...]
    started: float  # seconds since the epoch: tells a live pid from a reused one


@dataclass(frozen=True)
class SwitchState:
    proc: Proc | None
    socket_exists: bool = False


@dataclass(frozen=True)
class GuestState:
    proc: Proc | None  # the main process, whose pid UML writes to <uml_dir>/<umid>/pid
    answers: bool = False  # mconsole answered `version`
    stale: bool = False  # a pid file or umid folder left by a crash or a reboot


@dataclass(frozen=True)
class CowFile:
    """A COW file's header beside its base image as it is now.

    UML records the base's mtime and size in the COW header and refuses to
    open the pair when either changed ("mtime mismatch ... of COW header vs
    backing file", then EINVAL): an updated base image strands every COW
    file made from it.
    """

    base_mtime: int  # as the header recorded it
    base_size: int
    now_mtime: int | None  # the base as it is; None: missing
    now_size: int | None

    @property
    def matches(self) -> bool:
        return (self.now_mtime, self.now_size) in ((None, None), (self.base_mtime, self.base_size))


@dataclass(frozen=True)
class Snapshot:
    netns: str | None = None
    boot_id: str | None = None
    users: Mapping[str, int | None] = field(default_factory=dict)  # name -> uid, None: unknown
    groups: Mapping[str, HostGroup | None] = field(default_factory=dict)  # None: no such group
    tun: TunNode | None = None
    sysctls: Mapping[str, str | None] = field(default_factory=dict)  # None: no such key
    links: Mapping[str, Link] = field(default_factory=dict)
    addresses: Mapping[str, frozenset[IPv4Interface]] = field(default_factory=dict)
    proxies: frozenset[tuple[str, IPv4Address]] = frozenset()
    records: Records = Records()
    switches: Mapping[str, SwitchState] = field(default_factory=dict)
    guests: Mapping[str, GuestState] = field(default_factory=dict)
    programs: Mapping[str, str | None] = field(default_factory=dict)  # name -> resolved path, None: missing
    files: Mapping[str, bool] = field(default_factory=dict)  # disk images and the like: exist?
    cows: Mapping[str, CowFile] = field(default_factory=dict)  # existing COW file path -> its header
    user_names: Mapping[int, str] = field(default_factory=dict)  # uids seen on taps and processes -> names
    group_names: Mapping[int, str] = field(default_factory=dict)  # gids seen on taps -> names
    transports: Mapping[str, frozenset[str]] = field(default_factory=dict)  # kernel path -> built-in transports

    def uid(self, user: str) -> int | None:
        return int(user) if user.isdigit() else self.users.get(user)

    def gid(self, group: str) -> int | None:
        if group.isdigit():
            return int(group)
        found = self.groups.get(group)
        return found.gid if found else None

    def fingerprint(self) -> str:
        return hashlib.sha256(dumps(self).encode()).hexdigest()[:16]


# JSON codec, for observed.json in golden tests and for saved plans.


def to_json(snapshot: Snapshot) -> dict[str, Any]:
    def conv(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: conv(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return {str(k): conv(v) for k, v in sorted(value.items())}
        if isinstance(value, (frozenset, set)):
            return sorted((conv(v) for v in value), key=json.dumps)
        if isinstance(value, tuple):
            return [conv(v) for v in value]
        if isinstance(value, (IPv4Interface, IPv4Address)):
            return str(value)
        return value

    result = conv(snapshot)
    assert isinstance(result, dict)
    return result


def dumps(snapshot: Snapshot) -> str:
    return json.dumps(to_json(snapshot), sort_keys=True, indent=1)


def from_json(data: Mapping[str, Any]) -> Snapshot:
    """Build a snapshot from JSON; absent keys take their defaults (compact fixtures)."""
    tun = data.get("tun")
    rec = data.get("records", {})
    return Snapshot(
        netns=data.get("netns"),
        boot_id=data.get("boot_id"),
        users=dict(data.get("users", {})),
        groups={
            name: HostGroup(name, g["gid"], frozenset(g.get("members", ()))) if g is not None else None
            for name, g in data.get("groups", {}).items()
        },
        tun=TunNode(**tun) if tun is not None else None,
        sysctls=dict(data.get("sysctls", {})),
        links={name: Link(name=name, **{k: v for k, v in link.items() if k != "name"})
               for name, link in data.get("links", {}).items()},
        addresses={name: frozenset(IPv4Interface(a) for a in addrs)
                   for name, addrs in data.get("addresses", {}).items()},
        proxies=frozenset((dev, IPv4Address(addr)) for dev, addr in data.get("proxies", ())),
        switches={name: SwitchState(_proc(sw.get("proc")), sw.get("socket_exists", False))
                  for name, sw in data.get("switches", {}).items()},
        guests={name: GuestState(_proc(g.get("proc")), g.get("answers", False), g.get("stale", False))
                for name, g in data.get("guests", {}).items()},
        programs=dict(data.get("programs", {})),
        files=dict(data.get("files", {})),
        cows={path: CowFile(**c) for path, c in data.get("cows", {}).items()},
        user_names={int(uid): name for uid, name in data.get("user_names", {}).items()},
        group_names={int(gid): name for gid, name in data.get("group_names", {}).items()},
        transports={k: frozenset(v) for k, v in data.get("transports", {}).items()},
        records=Records(
            sysctl_originals=dict(rec.get("sysctl_originals", {})),
            proxies=frozenset((d, a) for d, a in rec.get("proxies", ())),
            groups_created=frozenset(rec.get("groups_created", ())),
            members_added=frozenset((g, u) for g, u in rec.get("members_added", ())),
            tun_created=rec.get("tun_created", False),
            tun_path=rec.get("tun_path"),
            tun_original=(rec["tun_original"][0], rec["tun_original"][1]) if rec.get("tun_original") else None,
            pending_taps=frozenset(rec.get("pending_taps", ())),
            held=frozenset(rec.get("held", ())),
            boot_id=rec.get("boot_id"),
        ),
    )


def _proc(data: Mapping[str, Any] | None) -> Proc | None:
    if data is None:
        return None
    return Proc(data["pid"], data["uid"], tuple(data["argv"]), data.get("started", 0.0))
