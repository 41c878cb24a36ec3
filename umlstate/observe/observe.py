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

import os
import time
from collections.abc import Mapping

from umlstate.host import folders, kconfig, logs, records, sysctl
from umlstate.host.cgroups import Cgroups
from umlstate.host.netlink import Netlink
from umlstate.model.snapshot import (
    CowFile,
    GuestState,
    KernelFacts,
    Proc,
    Records,
    Snapshot,
    SwitchState,
    unit_of,
)
from umlstate.model.topology import DEFAULT_TUN, Topology
from umlstate.observe import reads, ruleset
from umlstate.plan import checks

ALWAYS_READ_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")  # proxy ARP, NDP need them: plan warns


def observe(topology: Topology, netlink: Netlink, netns: str | None) -> Snapshot:
    recs = records.load(topology.state_dir)
    uplinks = set(topology.uplinks)
    net = reads.network(netlink, {t.name for t in topology.taps}, uplinks,
                        routes=bool(topology.host.routes or recs.routes))
    programs = {name: reads.program(name) for name in sorted(program_names(topology, recs))}
    boot_id = reads.boot_id()
    recorded = recorded_processes(recs, boot_id)
    cgroups = Cgroups.here(topology.instance)
    switches = _switches(topology, recorded, cgroups)
    guests = _guests(topology, recorded, cgroups)
    procs = [sw.proc for sw in switches.values() if sw.proc] + [g.proc for g in guests.values() if g.proc]
    users, primary_gids = reads.users(user_names(topology))
    return Snapshot(
        netns=netns,
        boot_id=boot_id,
        users=users,
        primary_gids=primary_gids,
        groups=reads.groups(group_names(topology, recs)),
        tun=reads.tun_node(tun_path(topology, recs)),
        sysctls={key: sysctl.read(key) for key in sorted(sysctl_keys(topology, recs))},
        links=net.links,
        addresses=net.addresses,
        proxies=net.proxies,
        routes=net.routes,
        fdb=net.fdb,
        records=recs,
        switches=switches,
        guests=guests,
        programs=programs,
        files={p: os.path.exists(p) for p in file_paths(topology)},
        cows=cows(topology),
        kernels={path: KernelFacts(path, info.version, info.transports, info.vector_transports)
                 for path in kernel_paths(topology, programs) if (info := kconfig.inspect(path)) is not None},
        user_names=reads.user_names({link.owner for link in net.links.values()} | {p.uid for p in procs}),
        group_names=reads.group_names({link.tun_group for link in net.links.values()}),
        ruleset=ruleset.observe(topology, recs),
        seeds={g: r for g, r in recs.seeds.items() if reads.regular(r.path)},
        now=time.time(),
    )


# What the observation reads, by name: the quick pass (observe.witness) reads the same names again.


def program_names(t: Topology, recs: Records) -> set[str]:
    names = {sw.kind for sw in t.switch_processes} | {g.kernel for g in t.guests}
    if t.host.groups or recs.groups_created or recs.members_added:
        names |= {"groupadd", "groupdel", "gpasswd"}
    if any(t.has_seed(g) for g in t.guests):
        names |= {"mkfs.vfat", "mcopy"}
    return names


def kernel_paths(t: Topology, programs: Mapping[str, str | None]) -> list[str]:
    return sorted({path for name in {g.kernel for g in t.guests} if (path := programs.get(name)) is not None})


def file_paths(t: Topology) -> list[str]:
    return sorted({p for g in t.guests for p in (g.disk.base, g.disk.image, t.cow_of(g)) if p})


def cow_pairs(t: Topology) -> list[tuple[str, str]]:
    """(COW file, its base) of each guest that boots from one."""
    return [(path, g.disk.base) for g in t.guests if (path := t.cow_of(g)) is not None and g.disk.base is not None]


def cows(t: Topology) -> dict[str, CowFile]:
    """Each existing COW file's record of its base, beside the base as it is now."""
    return {path: found for path, base in cow_pairs(t) if (found := reads.cow_file(path, base)) is not None}


def tun_path(t: Topology, recs: Records) -> str:
    return t.host.tun.path if t.host.tun else recs.tun_path or DEFAULT_TUN


def user_names(t: Topology) -> set[str]:
    names = {tap.owner for tap in t.taps} | {s.runs_as for s in t.switch_processes} | {g.user for g in t.guests}
    return names | {m for g in t.host.groups for m in g.members}


def group_names(t: Topology, recs: Records) -> set[str]:
    names = {g.name for g in t.host.groups} | {tap.group for tap in t.taps if tap.group}
    names |= set(recs.groups_created) | {g for g, _ in recs.members_added}
    if t.host.tun and t.host.tun.group:
        names.add(t.host.tun.group)
    return names


def sysctl_keys(t: Topology, recs: Records) -> set[str]:
    return set(t.sysctls) | set(recs.sysctl_originals) | set(ALWAYS_READ_SYSCTLS)


def recorded_processes(recs: Records, boot_id: str | None) -> dict[str, Proc]:
    """What root recorded it started, unless in an earlier boot: every process recorded then is gone."""
    return {} if recs.boot_id is not None and recs.boot_id != boot_id else dict(recs.processes)


def socket_of(t: Topology, switch: str) -> str | None:
    """The socket of a switch process the topology runs (a bridge has none)."""
    sw = t.switch(switch)
    return t.socket_of(sw) if sw is not None and not sw.is_bridge else None


def umid_folder(t: Topology, guest: str) -> str | None:
    """Where a guest of the topology keeps its pid file and mconsole socket while it runs."""
    g = t.guest(guest)
    return f"{t.uml_dir_of(g)}/{guest}" if g is not None else None


def _units(kind: str, recorded: dict[str, Proc], cgroups: Cgroups | None) -> set[str]:
    """Names of this kind that root recorded or that still have a cgroup: ours, in or out of the topology."""
    prefix = unit_of(kind, "")
    units = set(recorded) | (set(cgroups.units()) if cgroups is not None else set())
    return {u[len(prefix):] for u in units if u.startswith(prefix)}


def _switches(t: Topology, recorded: dict[str, Proc], cgroups: Cgroups | None) -> dict[str, SwitchState]:
    found: dict[str, SwitchState] = {}
    for name in sorted({sw.name for sw in t.switch_processes} | _units("switch", recorded, cgroups)):
        proc, leftovers = reads.process(unit_of("switch", name), recorded, cgroups)
        socket = socket_of(t, name)
        found[name] = SwitchState(proc, socket is not None and os.path.exists(socket), leftovers)
    return found


def _guests(t: Topology, recorded: dict[str, Proc], cgroups: Cgroups | None) -> dict[str, GuestState]:
    found: dict[str, GuestState] = {}
    for name in sorted({g.name for g in t.guests} | _units("guest", recorded, cgroups)):
        proc, leftovers = reads.process(unit_of("guest", name), recorded, cgroups)
        if proc is not None:
            checked, no_ipv6 = _said(t, name)
            found[name] = GuestState(proc, answers=reads.answers(proc, name), leftovers=leftovers,
                                     checks=checked, no_ipv6=no_ipv6)
        else:
            stale = (umid := umid_folder(t, name)) is not None and os.path.lexists(umid)
            dead = unit_of("guest", name) in recorded  # root started it in this boot: why did it stop?
            panic, lines, ended = reads.last_words(t.state_dir, name) if dead else (None, (), None)
            found[name] = GuestState(None, stale=stale, leftovers=leftovers, panic=panic,
                                     last_lines=lines if panic else (), ended=ended)
    return found


def _said(t: Topology, name: str) -> tuple[dict[int, tuple[bool, float, str]], str | None]:
    """What a running guest's latest run says of itself, from its log (bounded; its own word): the latest result
    of each check it runs, and, for a guest with IPv6 addresses, whether its kernel has no IPv6."""
    guest = t.guest(name)
    ours = any(c.from_ == name for c in t.checks)
    six = guest is not None and any(i.version == 6 for nic in guest.nics for i in t.interfaces_of(nic))
    if not ours and not six:
        return {}, None
    folder = folders.open_logs(t)
    if folder is None:
        return {}, None
    with folder:
        run = logs.tail(folder.fd, name)
    said = checks.results(t, name, run) if ours else {}
    return {n: (r.ok, r.when, r.detail) for n, r in said.items()}, logs.lacks_ipv6(run) if six else None
