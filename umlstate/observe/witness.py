"""What a full observation read, read again without the topology: the quick in-sync pass's evidence.

Observation layer. A full pass that finds the host in sync keeps a ``Probe``:
the names its observation read (links, sysctls, users, recorded processes,
files, kernels...), derived from the topology, the records and the snapshot
(``probe_of``). ``read`` reads those names again through the same functions
(``observe.reads``, ``host.*``) and returns one digest. The next pass
(``cli.quick``) compares digests: equal means every input of the snapshot is
as it was, so the plan is as it was; anything else, a full pass.

Nothing here imports the topology's model or pydantic: a quick pass costs the
reads, not the imports. ``COVERS`` says which reading stands for each field of
the Snapshot; a test holds it to the dataclass, so a new field cannot be
forgotten here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from umlstate.host import kconfig, logs, nft, records, sysctl
from umlstate.host.cgroups import Cgroups
from umlstate.host.netlink import Netlink
from umlstate.model.snapshot import Proc, Snapshot, compact, plain, unit_of
from umlstate.observe import reads

if TYPE_CHECKING:
    from umlstate.model.topology import Topology

# Snapshot field -> the reading of ``read`` that covers it. `now` is the clock, no input of the host; the plan
# reads it only for crash-loop backoff, and a plan that waits on one is never kept for a quick pass.
COVERS: Mapping[str, str] = {
    "netns": "netns", "boot_id": "boot_id", "users": "users", "primary_gids": "users", "groups": "groups",
    "tun": "tun", "sysctls": "sysctls", "links": "network", "addresses": "network", "proxies": "network",
    "routes": "network", "fdb": "network", "records": "records", "switches": "processes", "guests": "processes",
    "programs": "programs", "files": "files", "cows": "cows", "user_names": "user_names",
    "group_names": "group_names", "kernels": "kernels", "ruleset": "ruleset", "seeds": "seeds",
}
NOT_READ = frozenset({"now"})
GUEST = unit_of("guest", "")


class Unwitnessable(Exception):
    """Something the full pass read cannot be read again cheaply here (nftables' generation, say)."""


@dataclass(frozen=True)
class Probe:
    """The names an in-sync full pass read, to read them again."""

    netns: str | None
    topology: str  # absolute path
    run_dir: str
    state_dir: str
    taps: tuple[str, ...]
    uplinks: tuple[str, ...]
    routes: bool
    sysctls: tuple[str, ...]
    users: tuple[str, ...]
    groups: tuple[str, ...]
    tun: str
    programs: tuple[str, ...]
    kernels: tuple[str, ...]
    files: tuple[str, ...]
    cows: tuple[tuple[str, str], ...]
    instance: str  # the topology's cgroup folder
    units: Mapping[str, Proc | None] = field(default_factory=dict)  # every switch and guest -> recorded process
    sockets: Mapping[str, str] = field(default_factory=dict)  # switch -> its socket
    umids: Mapping[str, str] = field(default_factory=dict)  # guest of the topology -> its umid folder
    uids: tuple[int, ...] = ()  # on taps and processes: their names
    gids: tuple[int, ...] = ()
    seeds: tuple[str, ...] = ()
    policy_generation: str = ""  # nftables' generation the records' policy was listed at

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = plain(self)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Probe:
        known = {f.name for f in fields(cls)}
        if set(data) != known:
            raise ValueError(f"a probe has the fields {sorted(known)}")
        given: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        given["cows"] = tuple((str(a), str(b)) for a, b in data["cows"])
        given["units"] = {u: None if p is None else Proc(**{**p, "argv": tuple(p["argv"])})
                          for u, p in data["units"].items()}
        return cls(**given)


def probe_of(t: Topology, topology_path: str, snapshot: Snapshot) -> Probe:
    """What ``observe`` read for this (host's slice of the) topology, as it found the host."""
    from umlstate.observe import observe as o

    recs = snapshot.records
    recorded = o.recorded_processes(recs, snapshot.boot_id)
    procs = [sw.proc for sw in snapshot.switches.values() if sw.proc] + [g.proc for g in snapshot.guests.values()
                                                                          if g.proc]
    return Probe(
        netns=snapshot.netns, topology=os.path.abspath(topology_path),
        run_dir=t.run_dir, state_dir=t.state_dir,
        taps=tuple(sorted(tap.name for tap in t.taps)),
        uplinks=t.uplinks,
        routes=bool(t.host.routes or recs.routes),
        sysctls=tuple(sorted(o.sysctl_keys(t, recs))), users=tuple(sorted(o.user_names(t))),
        groups=tuple(sorted(o.group_names(t, recs))), tun=o.tun_path(t, recs),
        programs=tuple(sorted(o.program_names(t, recs))), kernels=tuple(o.kernel_paths(t, snapshot.programs)),
        files=tuple(o.file_paths(t)), cows=tuple(o.cow_pairs(t)), instance=t.instance,
        units={unit_of(kind, n): recorded.get(unit_of(kind, n))
               for kind, names in (("switch", snapshot.switches), ("guest", snapshot.guests)) for n in names},
        sockets={n: s for n in snapshot.switches if (s := o.socket_of(t, n)) is not None},
        umids={n: u for n in snapshot.guests if (u := o.umid_folder(t, n)) is not None},
        uids=tuple(sorted({x for x in [*(link.owner for link in snapshot.links.values()),
                                        *(p.uid for p in procs)] if x is not None})),
        gids=tuple(sorted({x for link in snapshot.links.values() if (x := link.tun_group) is not None})),
        seeds=tuple(sorted(r.path for r in recs.seeds.values())),
        policy_generation=recs.ruleset.generation if recs.ruleset is not None else "",
    )


def read(probe: Probe, netlink: Netlink, known: reads.LinksRead | None = None) -> tuple[str, reads.LinksRead]:
    """The digest of reading everything the probe names, in the namespace this process is in (as root); and
    the links as read, which spare the next read their decoding while the kernel answers the same bytes."""
    found, links = readings(probe, netlink, known)
    # compact() orders sets and mappings itself, and dataclasses keep their fields' order: no sort_keys needed.
    return hashlib.sha256(json.dumps(compact(found), separators=(",", ":")).encode()).hexdigest(), links


def readings(probe: Probe, netlink: Netlink, known: reads.LinksRead | None = None) -> tuple[dict[str, Any],
                                                                                              reads.LinksRead]:
    """Each reading by name (COVERS), plus what a pass depends on besides the snapshot; and the links as read."""
    if probe.netns is not None and not _in_netns(probe.netns):
        raise Unwitnessable(f"not in network namespace {probe.netns}")
    cgroups = Cgroups.here(probe.instance)
    boot_id = reads.boot_id()
    folders = cgroups.folders() if cgroups is not None else None
    units = {u: reads.process(u, {u: p} if p is not None else {}, cgroups, folders) for u, p in probe.units.items()}
    running = {u: p for u, (p, _n) in units.items() if p is not None}
    users = reads.users(probe.users)
    network, links = reads.network_witnessed(netlink, probe.taps, set(probe.uplinks), routes=probe.routes,
                                             known=known)
    return {
        # Besides the snapshot: whether a log is due to be cut.
        "logs_due": _logs_due(probe.state_dir, sorted({u.partition("-")[2] for u in running})),
        "netns": probe.netns,
        "boot_id": boot_id,
        "users": users,
        "groups": reads.groups(probe.groups),
        "tun": reads.tun_node(probe.tun),
        "sysctls": {key: sysctl.read(key) for key in probe.sysctls},
        "network": network,
        "records": hashlib.sha256(records.read(probe.state_dir) or b"").hexdigest(),
        "processes": {
            "units": units,
            "cgroups": cgroups.units(folders) if cgroups is not None else None,
            "answers": {u: reads.answers(p, u.removeprefix(GUEST)) for u, p in running.items() if u.startswith(GUEST)},
            "sockets": {n: os.path.exists(s) for n, s in probe.sockets.items()},
            "umids": {n: os.path.lexists(u) for n, u in probe.umids.items()},
            # A guest root started in this boot, gone: its log says why.
            "last_words": {u: reads.last_words(probe.state_dir, u.removeprefix(GUEST)) for u, p in probe.units.items()
                           if u.startswith(GUEST) and p is not None and u not in running},
        },
        "programs": {name: reads.program(name) for name in probe.programs},
        "files": {p: os.path.exists(p) for p in probe.files},
        "cows": {path: reads.cow_file(path, base) for path, base in probe.cows},
        "user_names": reads.user_names(probe.uids),
        "group_names": reads.group_names(probe.gids),
        "kernels": {path: kconfig.stamp(path) for path in probe.kernels},
        "ruleset": _policy(probe),
        "seeds": {path: reads.regular(path) for path in probe.seeds},
    }, links


def _in_netns(name: str) -> bool:
    """This process is in the named namespace (the quick pass entered it; a full pass runs in it)."""
    try:
        return os.stat(f"/run/netns/{name}").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


def _logs_due(state_dir: str, running: list[str]) -> list[str]:
    """The running processes whose log a pass would cut now (every root pass keeps them bounded)."""
    folder = logs.open_folder(state_dir) if running else None
    if folder is None:
        return []
    with folder:
        return [name for name in running if logs.over_cap(folder.fd, name)]


def _policy(probe: Probe) -> tuple[str, bool | None]:
    """nftables' generation: equal, and nothing in this namespace's nftables changed since the full pass.
    Where the records' own generation is not it, that pass also asked whether libnftables loads."""
    generation = nft.generation()
    if generation is None:
        raise Unwitnessable("nftables' generation cannot be read here")
    return generation, None if generation == probe.policy_generation else nft.available()
