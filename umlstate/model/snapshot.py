"""The observed state: one immutable snapshot of the host, read once per run.

``observe`` fills it from the kernel, /etc and ``state_dir``; golden tests
load it from ``observed.json``; the planner reads it and simulates its own
actions on copies of it (``dataclasses.replace``). Pure data: no I/O here, so
the planner can import it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import TypeAdapter

IPv4Interface = ipaddress.IPv4Interface
IPv4Address = ipaddress.IPv4Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_ADDRESSES = (ipaddress.IPv4Interface, ipaddress.IPv4Address, ipaddress.IPv6Interface, ipaddress.IPv6Address)
FLOOD_MAC = "00:00:00:00:00:00"  # a VXLAN forwarding entry for this MAC is where frames for unknown MACs go


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
    master: str | None = None  # the bridge it is enslaved to
    mac: str | None = None
    vni: int | None = None  # a VXLAN's id
    local: str | None = None  # a VXLAN's local underlay address
    learning: bool = False  # a VXLAN that learns where MACs are from what the underlay sends it
    autoconf: bool | None = None  # takes IPv6 router advertisements or autoconfigures; None: no IPv6 on it
    fdb_max: int | None = None  # a bridge's bound on learned MACs (0: none); None: the kernel has none (< 6.8)

    @property
    def is_tap(self) -> bool:
        return self.kind == "tun" and self.tun_type == "tap"


@dataclass(frozen=True)
class Proc:
    """A switch or guest process as root recorded it when it started it (host.identity)."""

    pid: int
    uid: int
    argv: tuple[str, ...]  # as spawned: what the planner compares with the wanted command line
    started: float  # seconds since the epoch, for uptimes
    start: int = 0  # clock ticks since boot: with the pid, unique for the boot (0: never recorded)
    cgroup: str | None = None  # its own cgroup; None where only its session marks it
    sid: int = 0  # its session
    console: str | None = None  # a guest's console, the pty slave root made for it (host.console)


def unit_of(kind: str, name: str) -> str:
    """The key of a switch's or guest's process record, and the name of its cgroup: ``guest-web``."""
    return f"{kind}-{name}"


# How a policy listing's digest (RulesetRecord.listed, RulesetState.listed) begins: the form nftables was asked
# to list in. A record made from another form cannot be compared with today's listing (host.nft.digest).
LISTING_FORM = "text:"


@dataclass(frozen=True)
class RulesetRecord:
    """The traffic policy umlstate last loaded: its tables, the digest of what it rendered, and the digest
    of how nftables listed it right after (a listing that differs later was changed by someone else)."""

    tables: frozenset[str]  # "family name"
    rendered: str
    listed: str
    # Ports whose chain was left out: their link did not exist (before Linux 6.16, nftables cannot hook a
    # device that is not there, and the whole transaction would fail). Loaded once the link is there.
    left_out: frozenset[str] = frozenset()
    # nftables' ruleset generation right after the load: while it stays the same nothing in this namespace's
    # nftables changed, and the listing need not be read again (host.nft.generation).
    generation: str = ""
    inputs: str = ""  # what the render was made from (plan.ruleset.inputs_of)


@dataclass(frozen=True)
class RulesetState:
    """umlstate's nftables tables in this namespace, as they are."""

    tables: frozenset[str] = frozenset()  # "family name" of those present
    listed: str | None = None  # digest of their listing (handles left out); None: none present
    available: bool = True  # libnftables can be loaded (Debian: nftables)
    readable: bool = True  # False: read by a user without CAP_NET_ADMIN; the rest is what the records say
    generation: str | None = None  # nftables' ruleset generation here (host.nft.generation); None: unknown


@dataclass(frozen=True)
class SeedRecord:
    """A guest's seed disk as root wrote it: where, and the digest of what it holds (plan/seed.py)."""

    path: str
    digest: str
    user: str = ""  # who may read it: the guest's user when it was written


@dataclass(frozen=True)
class Records:
    """What umlstate remembers it owns, from ``<state_dir>/state.json``.

    Links carry their mark (ifalias); everything else that umlstate changes is
    recorded here, before the change, so a crash never orphans it.
    """

    sysctl_originals: Mapping[str, str] = field(default_factory=dict)
    proxies: frozenset[tuple[str, str]] = frozenset()  # (uplink, address)
    routes: frozenset[tuple[str, str]] = frozenset()  # (to, via) of host routes umlstate added
    groups_created: frozenset[str] = frozenset()
    members_added: frozenset[tuple[str, str]] = frozenset()  # (group, user)
    tun_created: bool = False
    tun_original: tuple[int, int] | None = None  # (mode, gid) before umlstate changed it
    tun_path: str | None = None  # the node tun_created and tun_original speak of
    pending_taps: frozenset[str] = frozenset()  # taps being created when a run stopped
    held: frozenset[str] = frozenset()  # guests stopped by `umlstate stop`: apply leaves them down
    boot_id: str | None = None  # the boot the last apply ran in: processes recorded in another boot are gone
    processes: Mapping[str, Proc] = field(default_factory=dict)  # unit (guest-web) -> what root recorded at spawn
    ruleset: RulesetRecord | None = None  # the traffic policy's tables, owned like marked links
    crashes: Mapping[str, int] = field(default_factory=dict)  # guest -> times in a row it died soon after starting
    seeds: Mapping[str, SeedRecord] = field(default_factory=dict)  # guest -> its seed disk, written by root


@dataclass(frozen=True)
class SwitchState:
    proc: Proc | None
    socket_exists: bool = False
    leftovers: int = 0  # processes still in its cgroup after the recorded one died


@dataclass(frozen=True)
class GuestState:
    proc: Proc | None  # the main process, whose pid UML writes to <uml_dir>/<umid>/pid
    answers: bool = False  # mconsole answered `version`
    stale: bool = False  # a umid folder left by a crash or a reboot
    leftovers: int = 0  # processes still in its cgroup after the main one died: they hold its COW file
    panic: str | None = None  # its recorded process died, and its log's latest run says why: "Kernel panic - ..."
    last_lines: tuple[str, ...] = ()  # the end of that run, sanitized, when it died
    ended: float | None = None  # when its recorded process stopped writing its log: about when it died
    checks: Mapping[int, tuple[bool, float, str]] = field(default_factory=dict)  # check -> (ok, when, detail)
    no_ipv6: str | None = None  # its kernel's version, when its latest boot said it has no IPv6 (its own word)


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
class KernelFacts:
    """What a UML kernel was built with, read from its file (never by running it)."""

    path: str
    version: str | None = None
    transports: frozenset[str] = frozenset()  # daemon, vde, tuntap (legacy), vector
    vector_transports: frozenset[str] = frozenset()  # tap, raw, hybrid, vde, ... when vector is built in


@dataclass(frozen=True)
class Snapshot:
    netns: str | None = None
    boot_id: str | None = None
    users: Mapping[str, int | None] = field(default_factory=dict)  # name -> uid, None: unknown
    primary_gids: Mapping[str, int] = field(default_factory=dict)  # user name -> their primary group's gid
    groups: Mapping[str, HostGroup | None] = field(default_factory=dict)  # None: no such group
    tun: TunNode | None = None
    sysctls: Mapping[str, str | None] = field(default_factory=dict)  # None: no such key
    links: Mapping[str, Link] = field(default_factory=dict)
    addresses: Mapping[str, frozenset[IPInterface]] = field(default_factory=dict)  # IPv6: global scope only
    proxies: frozenset[tuple[str, IPAddress]] = frozenset()
    routes: frozenset[tuple[str, IPv4Address]] = frozenset()  # (to, via) of routes with umlstate's protocol
    # (vxlan link, MAC, remote underlay): its static forwarding entries; FLOOD_MAC's are where unknown go
    fdb: frozenset[tuple[str, str, IPv4Address]] = frozenset()
    records: Records = Records()
    switches: Mapping[str, SwitchState] = field(default_factory=dict)
    guests: Mapping[str, GuestState] = field(default_factory=dict)
    programs: Mapping[str, str | None] = field(default_factory=dict)  # name -> resolved path, None: missing
    files: Mapping[str, bool] = field(default_factory=dict)  # disk images and the like: exist?
    cows: Mapping[str, CowFile] = field(default_factory=dict)  # existing COW file path -> its header
    user_names: Mapping[int, str] = field(default_factory=dict)  # uids seen on taps and processes -> names
    group_names: Mapping[int, str] = field(default_factory=dict)  # gids seen on taps -> names
    kernels: Mapping[str, KernelFacts] = field(default_factory=dict)  # kernel path -> what it was built with
    ruleset: RulesetState = RulesetState()
    seeds: Mapping[str, SeedRecord] = field(default_factory=dict)  # recorded seed disks still there, by guest
    now: float = 0.0  # seconds since the epoch when observed (crash-loop backoff); not part of the fingerprint

    def uid(self, user: str) -> int | None:
        return int(user) if user.isdigit() else self.users.get(user)

    def gid(self, group: str) -> int | None:
        if group.isdigit():
            return int(group)
        found = self.groups.get(group)
        return found.gid if found else None

    def fingerprint(self) -> str:
        """The host as a plan depends on it: not the time, nor what guests say of themselves."""
        guests = {n: dataclasses.replace(g, checks={}, no_ipv6=None) if g.checks or g.no_ipv6 else g
                  for n, g in self.guests.items()}
        return hashlib.sha256(dumps(dataclasses.replace(self, now=0.0, guests=guests)).encode()).hexdigest()[:16]


# JSON codec, for observed.json in golden tests and for saved plans.


def plain(value: Any) -> Any:
    """Dataclasses, mappings, sets and addresses as JSON's plain values, in one order whatever the hash seed."""
    kind = type(value)
    if kind in _SCALARS:  # most of a snapshot, so first
        return value
    if hasattr(kind, "__dataclass_fields__"):  # its scalar fields inline: a thousand links' worth of calls saved
        return {name: v if type(v := getattr(value, name)) in _SCALARS else plain(v)
                for name in kind.__dataclass_fields__}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (frozenset, set)):
        return sorted((plain(v) for v in value), key=repr)  # plain values print the same in every process
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, _ADDRESSES):
        return str(value)
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})


def compact(value: Any) -> Any:
    """As ``plain``, in the same order whatever the hash seed, but each dataclass as its fields' values alone,
    read in C, and the common types first: for a digest, where only equality matters (a thousand links' and
    their addresses' readings in a third of plain's time)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind in _ADDRESS_KINDS:
        return str(value)
    if kind is tuple or kind is list:
        return [v if type(v) in _SCALARS else compact(v) for v in value]
    if kind is frozenset or kind is set:
        return [compact(v) for v in value] if len(value) < 2 else sorted((compact(v) for v in value), key=repr)
    if kind is dict:
        return {str(k): compact(v) for k, v in sorted(value.items())}
    fields = _FIELDS.get(kind)
    if fields is None and dataclasses.is_dataclass(kind):
        # Values without names: a reading's shape is fixed by the code, which the quick pass's key covers.
        fields = _FIELDS[kind] = _getter(tuple(f.name for f in dataclasses.fields(kind)))
    if fields is not None:
        values = fields(value)
        return values if all(type(v) in _SCALARS for v in values) else [compact(v) for v in values]
    if isinstance(value, Mapping):
        return {str(k): compact(v) for k, v in sorted(value.items())}
    return value


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The fields' values as a tuple, read in C (attrgetter gives one field's value bare, and needs one)."""
    if len(names) > 1:
        many: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*names)
        return many
    if names:
        one = operator.attrgetter(names[0])
        return lambda v: (one(v),)
    return lambda v: ()


_ADDRESS_KINDS = frozenset(_ADDRESSES)
_FIELDS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def to_json(snapshot: Snapshot | Records) -> dict[str, Any]:
    result = plain(snapshot)
    assert isinstance(result, dict)
    return result


def dumps(snapshot: Snapshot) -> str:
    return json.dumps(to_json(snapshot), sort_keys=True, indent=1)


def from_json(data: Mapping[str, Any]) -> Snapshot:
    """Build a snapshot from JSON; absent keys take their defaults (compact fixtures); links and groups may
    leave out the name their key already says."""
    links = {name: {"name": name, **link} for name, link in data.get("links", {}).items()}
    groups = {name: None if g is None else {"name": name, **g} for name, g in data.get("groups", {}).items()}
    return _snapshots().validate_python({**data, "links": links, "groups": groups})


def records_from_json(data: Mapping[str, Any]) -> Records:
    return _records().validate_python(data)


# One codec per persisted type, derived from the type itself (a new field needs no edit here);
# built on first use, since building one costs ~0.1 s and most runs never parse a snapshot (and pydantic is
# imported then too: the quick pass, cli.quick, reads a snapshot's parts without it).
@functools.cache
def _snapshots() -> TypeAdapter[Snapshot]:
    from pydantic import TypeAdapter

    return TypeAdapter(Snapshot)


@functools.cache
def _records() -> TypeAdapter[Records]:
    from pydantic import TypeAdapter

    return TypeAdapter(Records)
