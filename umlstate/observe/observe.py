"""Observe the host once, into an immutable ``Snapshot``.

Second stage of the pipeline: runs inside the target namespace (the CLI
entered it) and reads only what the topology names or umlstate owns: the
users and groups it refers to, the tun node, its sysctls, tun links and
uplinks (over netlink: /sys/class/net follows the sysfs mount, not setns),
their IPv4 addresses, proxy entries, the records under ``state_dir``, the
switch and guest processes (psutil), and the programs, disk images and
kernel features the topology needs.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import pwd
import shutil
import stat
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from umlstate import mconsole
from umlstate.host import records, sysctl
from umlstate.host.netlink import Netlink
from umlstate.model.snapshot import CowFile, GuestState, HostGroup, Proc, Records, Snapshot, SwitchState, TunNode
from umlstate.model.topology import DEFAULT_TUN, Topology
from umlstate.plan import cmdline

TUN_MAJOR, TUN_MINOR = 10, 200
ALWAYS_READ_SYSCTLS = ("net.ipv4.ip_forward",)  # proxy ARP needs it: the planner warns


def observe(topology: Topology, netlink: Netlink, netns: str | None) -> Snapshot:
    recs = records.load(topology.state_dir)
    uplinks = {s.proxy_arp.uplink for s in topology.subnets if s.proxy_arp}
    links, index = netlink.links({t.name for t in topology.taps} | uplinks)
    ours = {n for n, link in links.items() if link.kind == "tun"} | uplinks
    programs = _programs(topology)
    boot_id = read_boot_id()
    # After a reboot every pid file from before is stale, whatever pid it names.
    rebooted = recs.boot_id is not None and recs.boot_id != boot_id
    switches = _switches(topology)
    guests = _guests(topology, trust_pid_files=not rebooted)
    procs = [sw.proc for sw in switches.values() if sw.proc] + [g.proc for g in guests.values() if g.proc]
    return Snapshot(
        netns=netns,
        boot_id=boot_id,
        users=_users(topology),
        groups=_groups(topology, recs),
        tun=read_tun_node(topology.host.tun.path if topology.host.tun else recs.tun_path or DEFAULT_TUN),
        sysctls={key: sysctl.read(key) for key in sorted(_sysctl_keys(topology, recs))},
        links=links,
        addresses=netlink.addresses(index, {n for n in ours if n in links}),
        proxies=netlink.proxies(index),
        records=recs,
        switches=switches,
        guests=guests,
        programs=programs,
        files=_files(topology),
        cows=_cows(topology),
        transports={path: kernel_transports(path) for name in {g.kernel for g in topology.guests}
                    if (path := programs.get(name)) is not None},
        user_names=_names({link.owner for link in links.values()} | {p.uid for p in procs}, pwd.getpwuid),
        group_names=_names({link.tun_group for link in links.values()}, grp.getgrgid),
    )


def _names(ids: set[int | None], lookup: Callable[[int], Any]) -> dict[int, str]:
    """uid or gid -> name, for the ids that have one (messages say "nobody (65534)")."""
    found: dict[int, str] = {}
    for i in sorted(x for x in ids if x is not None):
        with contextlib.suppress(KeyError):
            found[i] = lookup(i)[0]
    return found


def _programs(t: Topology) -> dict[str, str | None]:
    names = {sw.kind for sw in t.switches} | {g.kernel for g in t.guests}
    if any(g.disk.base for g in t.guests):
        names.add("uml_mkcow")
    out: dict[str, str | None] = {}
    for name in sorted(names):
        if "/" in name:
            out[name] = name if os.access(name, os.X_OK) else None
        else:
            out[name] = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin")
    return out


def _files(t: Topology) -> dict[str, bool]:
    paths = {p for g in t.guests for p in (g.disk.base, g.disk.image, t.cow_of(g)) if p}
    return {p: os.path.exists(p) for p in sorted(paths)}


COW_HEADER = struct.Struct(">IIIQ")  # magic, version, base mtime, base size (cow_user.c, v3, big-endian)
COW_MAGIC, COW_VERSION = 0x4F4F4F4D, 3


def _cows(t: Topology) -> dict[str, CowFile]:
    """Each existing COW file's record of its base, beside the base as it is now."""
    found: dict[str, CowFile] = {}
    for g in t.guests:
        cow = t.cow_of(g)
        if cow is None or g.disk.base is None:
            continue
        try:
            with open(cow, "rb") as f:
                magic, version, mtime, size = COW_HEADER.unpack(f.read(COW_HEADER.size))
        except (OSError, struct.error):
            continue
        if magic != COW_MAGIC or version != COW_VERSION:
            continue  # older layouts: let UML judge them
        try:
            st = os.stat(g.disk.base)
            now: tuple[int | None, int | None] = (int(st.st_mtime), st.st_size)
        except OSError:
            now = (None, None)
        found[cow] = CowFile(mtime, size, *now)
    return found


@functools.lru_cache(maxsize=8)
def _transports_of(path: str, _mtime: float) -> frozenset[str]:
    try:
        config = subprocess.run([path, "--showconfig"], capture_output=True, text=True, timeout=10,
                                check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    enabled = {line.split("=")[0] for line in config.splitlines() if line.endswith("=y")}
    return frozenset(t for t, option in cmdline.TRANSPORT_CONFIG.items() if option in enabled)


def kernel_transports(path: str) -> frozenset[str]:
    """The network transports built into a UML kernel (linux.uml --showconfig), cached per binary."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return frozenset()
    return _transports_of(path, mtime)


def _proc(p: psutil.Process) -> Proc | None:
    try:
        with p.oneshot():
            return Proc(p.pid, p.uids().real, tuple(p.cmdline()), p.create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def _switches(t: Topology) -> dict[str, SwitchState]:
    """Switch processes, recognised by the socket they serve (ours: under run_dir or declared)."""
    sockets = {t.socket_of(sw): sw.name for sw in t.switches}
    found: dict[str, SwitchState] = {}
    run_dir = t.run_dir.rstrip("/") + "/"
    for p in psutil.process_iter(["name"]):
        if p.info["name"] not in ("uml_switch", "vde_switch"):
            continue
        proc = _proc(p)
        if proc is None:
            continue
        socket = cmdline.socket_in(proc.argv)
        if socket is None:
            continue
        if socket in sockets:
            found[sockets[socket]] = SwitchState(proc, os.path.exists(socket))
        elif socket.startswith(run_dir) and socket.endswith(".ctl"):  # ours, no longer in the topology
            found[Path(socket).name[:-4]] = SwitchState(proc, os.path.exists(socket))
    for socket, name in sockets.items():
        found.setdefault(name, SwitchState(None, os.path.exists(socket)))
    return found


def read_boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _guests(t: Topology, trust_pid_files: bool = True) -> dict[str, GuestState]:
    """Guests by their pid file, checked against the live process (a pid may be reused)."""
    uml_dir = Path(t.uml_dir)
    names = {g.name for g in t.guests}
    if uml_dir.is_dir():
        names |= {d.name for d in uml_dir.iterdir() if d.is_dir()}
    found: dict[str, GuestState] = {}
    scan: dict[str, dict[int, psutil.Process]] | None = None  # one pass over all processes, when needed
    for name in sorted(names):
        folder = uml_dir / name
        proc = _from_pid_file(folder, name, t.uml_dir) if trust_pid_files else None
        if proc is None:
            if scan is None:
                scan = _scan_guests(t.uml_dir)
            proc = _main_process(scan.get(name, {}))
        if proc is None:
            found[name] = GuestState(None, stale=folder.exists())
        else:
            found[name] = GuestState(proc, answers=mconsole.answers(str(folder / "mconsole")))
    return found


def _from_pid_file(folder: Path, name: str, uml_dir: str) -> Proc | None:
    wanted = (f"umid={name}", f"uml_dir={uml_dir}")
    try:
        pid_file = folder / "pid"
        pid = int(pid_file.read_text().strip())
        written = pid_file.stat().st_mtime
        p = psutil.Process(pid)
        proc = _proc(p)
        # The pid must run this guest and must predate its pid file: otherwise it was reused.
        if proc is not None and all(w in proc.argv for w in wanted) and proc.started <= written + 1:
            return proc
    except (OSError, ValueError, psutil.NoSuchProcess, psutil.ZombieProcess):
        pass
    return None


def _scan_guests(uml_dir: str) -> dict[str, dict[int, psutil.Process]]:
    """umid -> the processes of that guest, for guests whose pid file is missing or stale.

    A booting guest writes its pid file late, and after a reboot none is
    trusted: then the argv (umid=, uml_dir=) is what identifies a guest.
    """
    marker = f"uml_dir={uml_dir}"
    found: dict[str, dict[int, psutil.Process]] = {}
    for p in psutil.process_iter(["cmdline"]):
        argv = p.info["cmdline"] or []
        if marker in argv:
            umid = next((a[5:] for a in argv if a.startswith("umid=")), None)
            if umid:
                found.setdefault(umid, {})[p.pid] = p
    return found


def _main_process(processes: dict[int, psutil.Process]) -> Proc | None:
    """A UML guest is several host processes; the main one's parent is none of them."""
    for p in processes.values():
        try:
            if p.ppid() not in processes:
                return _proc(p)
        except psutil.NoSuchProcess:
            continue
    return None


def _users(t: Topology) -> dict[str, int | None]:
    names = {tap.owner for tap in t.taps} | {s.user for s in t.switches} | {g.user for g in t.guests}
    names |= {m for g in t.host.groups for m in g.members}
    out: dict[str, int | None] = {}
    for name in sorted(n for n in names if not n.isdigit()):
        try:
            out[name] = pwd.getpwnam(name).pw_uid
        except KeyError:
            out[name] = None
    return out


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
