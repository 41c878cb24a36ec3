"""Observe the host once, into an immutable ``Snapshot``.

Second stage of the pipeline: runs inside the target namespace (the CLI
entered it) and reads only what the topology names or umlstate owns: the
users and groups it refers to, the tun node, its sysctls, tun links and
uplinks (over netlink: /sys/class/net follows the sysfs mount, not setns),
their IPv4 addresses, proxy entries, the records under ``state_dir``, the
switch and guest processes root recorded when it started them (and whatever
is left in their cgroups), and the programs, disk images, COW headers and
kernel features the topology needs.

What a guest's user controls is read with bounds and never acted on: no
pid file is trusted, no process is recognised by what its argv says, no
kernel is run (its configuration is read from the file), every read of a
COW header or mconsole reply is bounded in bytes and time.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import stat
import time
from collections.abc import Callable
from typing import Any

from umlstate.host import cow, folders, kconfig, logs, mconsole, processes, records, sysctl
from umlstate.host.cgroups import Cgroups
from umlstate.host.netlink import Netlink
from umlstate.model.snapshot import (
    CowFile,
    GuestState,
    HostGroup,
    KernelFacts,
    Proc,
    Records,
    Snapshot,
    SwitchState,
    TunNode,
    unit_of,
)
from umlstate.model.topology import DEFAULT_TUN, Topology
from umlstate.observe import ruleset
from umlstate.plan import checks

TUN_MAJOR, TUN_MINOR = 10, 200
ALWAYS_READ_SYSCTLS = ("net.ipv4.ip_forward",)  # proxy ARP needs it: the planner warns


def observe(topology: Topology, netlink: Netlink, netns: str | None) -> Snapshot:
    recs = records.load(topology.state_dir)
    uplinks = {s.proxy_arp.uplink for s in topology.subnets if s.proxy_arp}
    links, index = netlink.links({t.name for t in topology.taps} | uplinks)
    ours = {n for n, link in links.items() if link.kind in ("tun", "bridge")} | uplinks
    programs = _programs(topology, recs)
    boot_id = read_boot_id()
    # After a reboot every process recorded before is gone, whatever its pid names now.
    rebooted = recs.boot_id is not None and recs.boot_id != boot_id
    recorded = {} if rebooted else dict(recs.processes)
    cgroups = Cgroups.here(topology.instance)
    switches = _switches(topology, recorded, cgroups)
    guests = _guests(topology, recorded, cgroups)
    procs = [sw.proc for sw in switches.values() if sw.proc] + [g.proc for g in guests.values() if g.proc]
    users, primary_gids = _users(topology)
    return Snapshot(
        netns=netns,
        boot_id=boot_id,
        users=users,
        primary_gids=primary_gids,
        groups=_groups(topology, recs),
        tun=read_tun_node(topology.host.tun.path if topology.host.tun else recs.tun_path or DEFAULT_TUN),
        sysctls={key: sysctl.read(key) for key in sorted(_sysctl_keys(topology, recs))},
        links=links,
        addresses=netlink.addresses(index, {n for n in ours if n in links}),
        proxies=netlink.proxies(index),
        routes=netlink.routes() if topology.host.routes or recs.routes else frozenset(),
        fdb=netlink.fdb(index, {n for n, link in links.items() if link.kind == "vxlan"}),
        records=recs,
        switches=switches,
        guests=guests,
        programs=programs,
        files=_files(topology),
        cows=cows(topology),
        kernels={path: KernelFacts(path, info.version, info.transports, info.vector_transports)
                 for name in {g.kernel for g in topology.guests}
                 if (path := programs.get(name)) is not None and (info := kconfig.inspect(path)) is not None},
        user_names=_names({link.owner for link in links.values()} | {p.uid for p in procs}, pwd.getpwuid),
        group_names=_names({link.tun_group for link in links.values()}, grp.getgrgid),
        ruleset=ruleset.observe(topology, recs),
        seeds={g: r for g, r in recs.seeds.items() if _regular(r.path)},
        now=time.time(),
    )


def _names(ids: set[int | None], lookup: Callable[[int], Any]) -> dict[int, str]:
    """uid or gid -> name, for the ids that have one (messages say "nobody (65534)")."""
    found: dict[int, str] = {}
    for i in sorted(x for x in ids if x is not None):
        with contextlib.suppress(KeyError):
            found[i] = lookup(i)[0]
    return found


def _programs(t: Topology, recs: Records) -> dict[str, str | None]:
    names = {sw.kind for sw in t.switch_processes} | {g.kernel for g in t.guests}
    if t.host.groups or recs.groups_created or recs.members_added:
        names |= {"groupadd", "groupdel", "gpasswd"}
    if any(t.has_seed(g) for g in t.guests):
        names |= {"mkfs.vfat", "mcopy"}
    out: dict[str, str | None] = {}
    for name in sorted(names):
        if "/" in name:
            out[name] = name if os.access(name, os.X_OK) else None
        else:
            out[name] = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin")
    return out


def _regular(path: str) -> bool:
    """A regular file is there (root's own, in state_dir: looked at, never followed)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _files(t: Topology) -> dict[str, bool]:
    paths = {p for g in t.guests for p in (g.disk.base, g.disk.image, t.cow_of(g)) if p}
    return {p: os.path.exists(p) for p in sorted(paths)}


def cows(t: Topology) -> dict[str, CowFile]:
    """Each existing COW file's record of its base, beside the base as it is now."""
    found: dict[str, CowFile] = {}
    for g in t.guests:
        path = t.cow_of(g)
        if path is None or g.disk.base is None:
            continue
        header = cow.read_header(path)  # bounded, never blocks: the file may be the guest user's
        if header is None:
            continue  # missing, or an older layout: let UML judge it
        try:
            st = os.stat(g.disk.base)
            now: tuple[int | None, int | None] = (int(st.st_mtime), st.st_size)
        except OSError:
            now = (None, None)
        found[path] = CowFile(header.base_mtime, header.base_size, *now)
    return found


def _recorded(unit: str, recorded: dict[str, Proc], cgroups: Cgroups | None) -> tuple[Proc | None, int]:
    """The recorded process if it still runs as started, else how many processes its cgroup still holds."""
    proc = recorded.get(unit)
    if proc is not None and processes.alive(proc):
        return proc, 0
    return None, len(processes.remaining(unit, cgroups, proc))


def _units(kind: str, recorded: dict[str, Proc], cgroups: Cgroups | None) -> set[str]:
    """Names of this kind that root recorded or that still have a cgroup: ours, in or out of the topology."""
    prefix = unit_of(kind, "")
    units = set(recorded) | (set(cgroups.units()) if cgroups is not None else set())
    return {u[len(prefix):] for u in units if u.startswith(prefix)}


def _switches(t: Topology, recorded: dict[str, Proc], cgroups: Cgroups | None) -> dict[str, SwitchState]:
    found: dict[str, SwitchState] = {}
    for name in sorted({sw.name for sw in t.switch_processes} | _units("switch", recorded, cgroups)):
        proc, leftovers = _recorded(unit_of("switch", name), recorded, cgroups)
        sw = t.switch(name)
        socket = t.socket_of(sw) if sw is not None and not sw.is_bridge else None
        found[name] = SwitchState(proc, socket is not None and os.path.exists(socket), leftovers)
    return found


def read_boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read(64).strip()
    except OSError:
        return None


def _guests(t: Topology, recorded: dict[str, Proc], cgroups: Cgroups | None) -> dict[str, GuestState]:
    found: dict[str, GuestState] = {}
    for name in sorted({g.name for g in t.guests} | _units("guest", recorded, cgroups)):
        proc, leftovers = _recorded(unit_of("guest", name), recorded, cgroups)
        guest = t.guest(name)
        if proc is not None:
            # The socket sits in the user's folder: the client checks it is theirs, and bounds the reply.
            path = processes.mconsole_path(proc, name)
            found[name] = GuestState(proc, answers=path is not None and mconsole.answers(path, owner=proc.uid),
                                     leftovers=leftovers, checks=_check_results(t, name))
        else:
            stale = guest is not None and os.path.lexists(f"{t.uml_dir_of(guest)}/{name}")
            panic, lines, ended = _last_words(t, name) if unit_of("guest", name) in recorded else (None, (), None)
            found[name] = GuestState(None, stale=stale, leftovers=leftovers, panic=panic,
                                     last_lines=lines if panic else (), ended=ended)
    return found


def _check_results(t: Topology, name: str) -> dict[int, tuple[bool, float, str]]:
    """The latest result of each check the guest runs, from its log's latest run (bounded; its own word)."""
    if not any(c.from_ == name for c in t.checks):
        return {}
    folder = folders.open_logs(t)
    if folder is None:
        return {}
    with folder:
        said = checks.results(t, name, logs.tail(folder.fd, name))
    return {n: (r.ok, r.when, r.detail) for n, r in said.items()}


def _last_words(t: Topology, name: str) -> tuple[str | None, tuple[str, ...], float | None]:
    """Why and about when a guest root started in this boot is gone, from its log (bounded): a panic or
    nothing known, and when the log was last written."""
    folder = folders.open_logs(t)
    if folder is None:
        return None, (), None
    with folder:
        return (*logs.last_words(folder.fd, name), logs.modified(folder.fd, name))


def _users(t: Topology) -> tuple[dict[str, int | None], dict[str, int]]:
    """Each user the topology names -> uid (None: no such user), and -> their primary group's gid."""
    names = {tap.owner for tap in t.taps} | {s.runs_as for s in t.switch_processes} | {g.user for g in t.guests}
    names |= {m for g in t.host.groups for m in g.members}
    uids: dict[str, int | None] = {}
    gids: dict[str, int] = {}
    for name in sorted(n for n in names if not n.isdigit()):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            uids[name] = None
        else:
            uids[name], gids[name] = entry.pw_uid, entry.pw_gid
    return uids, gids


def _groups(t: Topology, recs: Records) -> dict[str, HostGroup | None]:
    names = {g.name for g in t.host.groups} | {tap.group for tap in t.taps if tap.group}
    names |= set(recs.groups_created) | {g for g, _ in recs.members_added}
    if t.host.tun and t.host.tun.group:
        names.add(t.host.tun.group)
    out: dict[str, HostGroup | None] = {}
    for name in sorted(n for n in names if not n.isdigit()):
        try:
            entry = grp.getgrnam(name)
        except KeyError:
            out[name] = None
        else:
            out[name] = HostGroup(name, entry.gr_gid, frozenset(entry.gr_mem))
    return out


def _sysctl_keys(t: Topology, recs: Records) -> set[str]:
    return set(t.host.sysctl) | set(recs.sysctl_originals) | set(ALWAYS_READ_SYSCTLS)


def read_tun_node(path: str) -> TunNode:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return TunNode(path, exists=False)
    is_tun = stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (TUN_MAJOR, TUN_MINOR)
    return TunNode(path, exists=True, is_tun=is_tun, mode=stat.S_IMODE(st.st_mode), gid=st.st_gid)
