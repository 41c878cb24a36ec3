"""The host-wide kinds' planning steps: groups and their members, the tun node, sysctls.

Plan layer, called by the planner first (after removals): everything after them may need a group, the tun
node or a sysctl. Their actions are in plan/actions/host.py.
"""

from __future__ import annotations

from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan.result import Builder


def remove_step(t: Topology, b: Builder) -> None:
    """Sysctls restored, members and groups removed, the tun node deleted or restored: what umlstate
    recorded doing and the topology no longer wants."""
    for key in sorted(b.s.records.sysctl_originals):
        if key not in t.sysctls:
            b.add(A.RestoreSysctl("no longer in the topology", key, b.s.records.sysctl_originals[key],
                                  b.s.sysctls.get(key)))

    wanted_members = {(g.name, m) for g in t.host.groups for m in g.members}
    for group, user in sorted(b.s.records.members_added):
        if (group, user) not in wanted_members:
            observed = b.s.groups.get(group)
            if observed is not None and user in observed.members:
                b.add(A.RemoveGroupMember("no longer in the topology", group, user))
            else:  # gone already: only the record goes, and apply must save that
                b.add(A.ForgetGroupMember("gone from the group already", group, user))
    wanted_groups = {g.name for g in t.host.groups}
    for group in sorted(b.s.records.groups_created - wanted_groups):
        if b.s.groups.get(group) is not None:
            b.add(A.DeleteGroup("no longer in the topology", group))

    tun = b.s.tun
    # Only the node the records speak of: never /dev/net/tun because a path left the topology.
    if t.host.tun is None and tun is not None and tun.exists and tun.path == b.s.records.tun_path:
        if b.s.records.tun_created:
            b.add(A.DeleteTunNode("no longer in the topology", tun.path))
        elif b.s.records.tun_original is not None:
            mode, gid = b.s.records.tun_original
            b.add(A.RestoreTunNode("no longer in the topology", tun.path, mode, gid))


def plan_step(t: Topology, b: Builder) -> None:
    _groups(t, b)
    _tun_node(t, b)
    _sysctls(t, b)


def _groups(t: Topology, b: Builder) -> None:
    for group in t.host.groups:
        if b.s.groups.get(group.name) is None:
            b.add(A.CreateGroup("missing", group.name))
        observed = b.s.groups[group.name]
        assert observed is not None
        for member in sorted(set(group.members) - observed.members):
            if b.s.uid(member) is not None:
                b.add(A.AddGroupMember("member missing", group.name, member))


def _tun_node(t: Topology, b: Builder) -> None:
    want = t.host.tun
    if want is None:
        return
    node = b.s.tun
    mode = want.mode_bits()
    if node is None or not node.exists:
        b.add(A.CreateTunNode("missing", want.path, mode, want.group))
        return
    if not node.is_tun:
        b.conflict("tun-device", want.path, "the path exists but is not the character device 10:200",
                   "move it away", adoptable=False)
        return
    drift = []
    if mode is not None and node.mode != mode:
        drift.append(f"mode {_octal(node.mode)}, wanted {mode:04o}")
    want_gid = b.s.gid(want.group) if want.group else None
    if want.group is not None and node.gid != want_gid:
        drift.append(f"gid {node.gid}, wanted group {want.group}")
    if drift:
        b.add(A.FixTunNode("drifted: " + "; ".join(drift), want.path,
                           mode if mode is not None and node.mode != mode else None,
                           want.group if want.group is not None and node.gid != want_gid else None,
                           gid_now=node.gid, mode_now=node.mode))


def _octal(mode: int | None) -> str:
    return "none" if mode is None else f"{mode:04o}"


def _sysctls(t: Topology, b: Builder) -> None:
    for key in sorted(t.sysctls):
        want = " ".join(t.sysctls[key].split())
        current = b.s.sysctls.get(key)
        if current is None:  # missing key: a preflight blocker already says so
            continue
        if current != want:
            b.add(A.SetSysctl(f"is {current}, wanted {want}", key, want, current))
