"""Observe the host once, into an immutable ``Snapshot``.

Second stage of the pipeline: runs inside the target namespace (the CLI
entered it) and reads only what the topology names or umlstate owns: the
users and groups it refers to, the tun node, its sysctls, tun links and
uplinks (over netlink: /sys/class/net follows the sysfs mount, not setns),
their IPv4 addresses, proxy entries, and the records under ``state_dir``.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat

from umlstate import records
from umlstate.kernel import Netlink
from umlstate.model import Topology
from umlstate.planner import DEFAULT_TUN
from umlstate.snapshot import HostGroup, Records, Snapshot, TunNode

TUN_MAJOR, TUN_MINOR = 10, 200
ALWAYS_READ_SYSCTLS = ("net.ipv4.ip_forward",)  # proxy ARP needs it: the planner warns


def observe(topology: Topology, netlink: Netlink, netns: str | None) -> Snapshot:
    recs = records.load(topology.state_dir)
    uplinks = {s.proxy_arp.uplink for s in topology.subnets if s.proxy_arp}
    links, index = netlink.links({t.name for t in topology.taps} | uplinks)
    ours = {n for n, link in links.items() if link.kind == "tun"} | uplinks
    return Snapshot(
        netns=netns,
        users=_users(topology),
        groups=_groups(topology, recs),
        tun=read_tun_node(topology.host.tun.path if topology.host.tun else DEFAULT_TUN),
        sysctls={key: read_sysctl(key) for key in sorted(_sysctl_keys(topology, recs))},
        links=links,
        addresses=netlink.addresses(index, {n for n in ours if n in links}),
        proxies=netlink.proxies(index),
        records=recs,
    )


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


def sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def read_sysctl(key: str) -> str | None:
    """The value with white space folded (``tcp_rmem`` separates with tabs)."""
    try:
        with open(sysctl_path(key)) as f:
            return " ".join(f.read().split())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def read_tun_node(path: str) -> TunNode:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return TunNode(path, exists=False)
    is_tun = stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (TUN_MAJOR, TUN_MINOR)
    return TunNode(path, exists=True, is_tun=is_tun, mode=stat.S_IMODE(st.st_mode), gid=st.st_gid)
