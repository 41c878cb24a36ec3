"""plan(topology, snapshot) -> Plan: the pure heart of umlstate.

Sits between observation and the executor. No I/O and no host libraries
(tests/test_purity.py enforces it): the same inputs always give the same plan,
so golden files can pin plans down and a saved plan can be re-derived.

The planner walks the resources in dependency order: first it removes what
umlstate owns but no longer wants (so a removal never trips over a creation),
then groups, the tun node, sysctls, taps, addresses, link state and proxy
entries. Every action is simulated on the working snapshot as soon as it is
chosen, so later steps see the host as the earlier actions will leave it.
Destroy is the plan towards a topology that wants nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from umlstate.errors import Finding
from umlstate.model.snapshot import Snapshot
from umlstate.model.topology import Guest, Host, Topology
from umlstate.plan import actions as A
from umlstate.plan import cmdline


@dataclass(frozen=True)
class Plan:
    topology: str
    netns: str | None
    actions: tuple[A.AnyAction, ...]
    conflicts: tuple[Finding, ...] = ()  # foreign objects where the topology wants its own
    blockers: tuple[Finding, ...] = ()  # host problems found in preflight: nothing may run
    warnings: tuple[Finding, ...] = ()
    fingerprint: str = ""
    mode: Literal["apply", "destroy"] = "apply"
    held: tuple[str, ...] = ()  # guests `umlstate stop` keeps down: the plan leaves them so

    @property
    def summary(self) -> dict[str, int]:
        ops = [a.op for a in self.actions]
        return {
            "add": ops.count("create") + ops.count("replace"),
            "change": ops.count("update"),
            "destroy": ops.count("delete") + ops.count("replace"),
        }

    @property
    def in_sync(self) -> bool:
        return not self.actions and not self.conflicts and not self.blockers


@dataclass
class _Builder:
    origin: Snapshot
    s: Snapshot
    actions: list[A.AnyAction] = field(default_factory=list)
    restarted_switches: set[str] = field(default_factory=set)
    conflicts: list[Finding] = field(default_factory=list)
    blockers: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    def add(self, action: A.AnyAction) -> None:
        self.actions.append(action)
        self.s = action.simulate(self.s)

    def error(self, kind: str, target: str, problem: str, fix: str = "") -> None:
        self.blockers.append(Finding("error", kind, target, problem, fix))

    def warn(self, kind: str, target: str, problem: str, fix: str = "") -> None:
        self.warnings.append(Finding("warning", kind, target, problem, fix))

    def conflict(self, kind: A.Kind, target: str, problem: str, fix: str, *, adoptable: bool) -> None:
        self.conflicts.append(Finding("conflict", kind, target, problem, fix, adoptable))


def plan(topology: Topology, observed: Snapshot, *, adopt: bool = False, destroy: bool = False) -> Plan:
    desired = _nothing_wanted(topology) if destroy else topology
    b = _Builder(observed, observed)
    if not destroy:
        _preflight(desired, b)
    _remove_unwanted(desired, b)
    _groups(desired, b)
    _tun_node(desired, b)
    _sysctls(desired, b)
    _taps(desired, b, adopt)
    _addresses(desired, b)
    _link_up(desired, b)
    _proxies(desired, b)
    _switches(desired, b)
    _guests(desired, b)
    _programs(b)
    _warnings(desired, b)
    return Plan(
        topology=topology.name,
        netns=observed.netns,
        actions=tuple(b.actions),
        conflicts=tuple(b.conflicts),
        blockers=tuple(b.blockers),
        warnings=tuple(b.warnings),
        fingerprint=observed.fingerprint(),
        mode="destroy" if destroy else "apply",
        held=() if destroy else tuple(sorted(g.name for g in topology.guests if g.name in observed.records.held)),
    )


def _nothing_wanted(t: Topology) -> Topology:
    """The same topology (name, folders) with no resources: what destroy plans towards."""
    # A new model, not model_copy: a copy would carry the original's cached name index.
    return Topology(name=t.name, host=Host(run_dir=t.host.run_dir, state_dir=t.host.state_dir))


# --- what the topology wants, derived --------------------------------------------


def wanted_addresses(t: Topology) -> dict[str, ipaddress.IPv4Interface]:
    out: dict[str, ipaddress.IPv4Interface] = {}
    for tap in t.taps:
        subnet = t.subnet(tap.subnet) if tap.subnet else None
        if subnet is not None and subnet.gateway is not None:
            out[tap.name] = ipaddress.IPv4Interface(f"{subnet.gateway}/{subnet.cidr.prefixlen}")
    return out


def wanted_proxies(t: Topology) -> set[tuple[str, ipaddress.IPv4Address]]:
    """One proxy entry per guest address whose subnet answers ARP on an uplink."""
    out: set[tuple[str, ipaddress.IPv4Address]] = set()
    for guest in t.guests:
        for nic in guest.nics:
            subnet = t.subnet_of_nic(nic)
            if nic.address is not None and subnet is not None and subnet.proxy_arp is not None:
                out.add((subnet.proxy_arp.uplink, nic.address))
    return out


def _owns_link(t: Topology, s: Snapshot, name: str) -> bool:
    link = s.links.get(name)
    if link is None or not link.is_tap:
        return False
    if link.alias == t.alias:
        return True
    # A crashed run recorded the tap before making it, but did not mark it yet.
    return name in s.records.pending_taps and not link.alias


# --- steps -------------------------------------------------------------------------


def _preflight(t: Topology, b: _Builder) -> None:
    s = b.s
    creating = {g.name for g in t.host.groups}
    users: dict[str, list[str]] = {}
    for user, role in [*((g.user, f"guest {g.name}") for g in t.guests),
                       *((sw.user, f"switch {sw.name}") for sw in t.switches),
                       *((tap.owner, f"owner of tap {tap.name}") for tap in t.taps),
                       *((m, f"member of group {g.name}") for g in t.host.groups for m in g.members)]:
        users.setdefault(user, []).append(role)
    for user, roles in sorted(users.items()):
        if s.uid(user) is None:
            more = f" and {len(roles) - 3} more" if len(roles) > 3 else ""
            b.error("user", user, f"user {user} ({', '.join(roles[:3])}{more}) does not exist",
                    f"create it (adduser {user}) or change the topology")
    groups: dict[str, str] = {}
    for tap in t.taps:
        if tap.group:
            groups.setdefault(tap.group, f"group of tap {tap.name}")
    if t.host.tun and t.host.tun.group:
        groups.setdefault(t.host.tun.group, "group of the tun device")
    for group_name, role in sorted(groups.items()):
        if group_name not in creating and s.gid(group_name) is None:
            b.error("group", group_name, f"group {group_name} ({role}) does not exist",
                    f"list it under host.groups or create it (addgroup {group_name})")
    for key in sorted(t.host.sysctl):
        if key in s.sysctls and s.sysctls[key] is None:
            b.error("sysctl", key, f"sysctl {key} does not exist on this kernel "
                                   f"(/proc/sys/{key.replace('.', '/')} is missing)", "remove it from host.sysctl")
    for uplink in sorted({sn.proxy_arp.uplink for sn in t.subnets if sn.proxy_arp}):
        if uplink not in s.links:
            where = f"network namespace {s.netns}" if s.netns else "the host"
            b.error("proxy-neigh", uplink, f"uplink interface {uplink} does not exist in {where}",
                    "fix proxy_arp.uplink or create the interface")
    for sw in t.switches:
        if s.programs.get(sw.kind, "") is None:
            b.error("switch", sw.name, f"{sw.kind} (switch {sw.name}) is not installed",
                    f"apt-get install {cmdline.PROGRAM_PACKAGES[sw.kind]}")
    for guest in t.guests:
        _preflight_guest(t, guest, b)
    if t.taps and t.host.tun is None and s.tun is not None and not s.tun.is_tun:
        b.error("tun-device", s.tun.path, f"no tun device at {s.tun.path}",
                "load the module (modprobe tun) or declare host.tun so that umlstate makes the node")


def _preflight_guest(t: Topology, guest: Guest, b: _Builder) -> None:
    s = b.s
    if guest.name in s.records.held:
        return
    kernel = s.programs.get(guest.kernel, "")
    if kernel is None:
        package = cmdline.PROGRAM_PACKAGES.get(guest.kernel)
        fix = f"apt-get install {package}" if package else "fix the kernel path"
        b.error("guest", guest.name, f"kernel {guest.kernel} of guest {guest.name} is not found", fix)
    for path in (guest.disk.base, guest.disk.image):
        if path is not None and not s.files.get(path, True):
            b.error("guest", guest.name, f"disk image {path} of guest {guest.name} does not exist",
                    "fix the path, or make the image")
    cow = t.cow_of(guest)
    if cow:
        _stale_cow(guest, cow, b)
    built_in = s.transports.get(kernel or guest.kernel)
    if built_in is not None:
        for transport in sorted(cmdline.transports_needed(t, guest) - built_in):
            b.error("guest", guest.name, f"kernel {kernel} lacks the {transport} transport that guest "
                                         f"{guest.name} needs ({cmdline.TRANSPORT_CONFIG[transport]} is not set)",
                    "use a kernel built with it")


def _stale_cow(guest: Guest, cow: str, b: _Builder) -> None:
    """A COW file made from an earlier base: UML refuses the pair, so say so before it does."""
    header = b.s.cows.get(cow)
    if header is None or header.matches:
        return
    state = b.s.guests.get(guest.name)
    running = state is not None and state.proc is not None
    changed = "; ".join(f"{what} was {was}, is {now}" for what, was, now in (
        ("modified", _utc(header.base_mtime), _utc(header.now_mtime)),
        ("size", header.base_size, header.now_size)) if was != now)
    problem = f"guest {guest.name}'s COW file {cow} was made from an earlier {guest.disk.base} ({changed})"
    keep = ("put the old base back" if header.now_size != header.base_size else
            f"put the old base back, or only its time: touch -d @{header.base_mtime} {guest.disk.base}")
    fix = (f"move {cow} away to boot afresh from the new base (the guest's own changes in it are lost), "
           f"or, to keep them, {keep}")
    if running:
        b.warn("guest", guest.name, f"{problem}: it runs now, but UML will refuse to boot it again", fix)
    else:
        b.error("guest", guest.name, f"{problem}, and UML refuses to boot from the pair", fix)


def _utc(epoch: int | None) -> str:
    if epoch is None:
        return "missing"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _remove_unwanted(t: Topology, b: _Builder) -> None:
    # Processes first: a guest leaves before its switch, a switch before its tap.
    wanted_guests = {g.name for g in t.guests}
    for name, state in sorted(b.s.guests.items()):
        if name not in wanted_guests and state.proc is not None:
            b.add(A.StopGuest("no longer in the topology", name, state.proc))
        _end_guest_leftovers(name, b)
    wanted_switches = {sw.name for sw in t.switches}
    for name, sw_state in sorted(b.s.switches.items()):
        if name not in wanted_switches and sw_state.proc is not None:
            b.add(A.StopSwitch("no longer in the topology", name, sw_state.proc))
        _end_switch_leftovers(name, b)

    wanted_proxy = wanted_proxies(t)
    for uplink, address in sorted(b.s.records.proxies):
        entry = (uplink, ipaddress.IPv4Address(address))
        if entry in b.s.proxies and entry not in wanted_proxy:
            b.add(A.RemoveProxy("no longer in the topology", uplink, entry[1]))

    wanted_taps = {tap.name for tap in t.taps}
    for name in sorted(b.s.links):
        if _owns_link(t, b.s, name) and name not in wanted_taps:
            b.add(A.DeleteTap("no longer in the topology", name, t.link_group))

    for key in sorted(b.s.records.sysctl_originals):
        if key not in t.host.sysctl:
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


def _groups(t: Topology, b: _Builder) -> None:
    for group in t.host.groups:
        if b.s.groups.get(group.name) is None:
            b.add(A.CreateGroup("missing", group.name))
        observed = b.s.groups[group.name]
        assert observed is not None
        for member in sorted(set(group.members) - observed.members):
            if b.s.uid(member) is not None:
                b.add(A.AddGroupMember("member missing", group.name, member))


def _tun_node(t: Topology, b: _Builder) -> None:
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


def _sysctls(t: Topology, b: _Builder) -> None:
    for key in sorted(t.host.sysctl):
        want = " ".join(t.host.sysctl[key].split())
        current = b.s.sysctls.get(key)
        if current is None:  # missing key: a preflight blocker already says so
            continue
        if current != want:
            b.add(A.SetSysctl(f"is {current}, wanted {want}", key, want, current))


def _taps(t: Topology, b: _Builder, adopt: bool) -> None:
    for tap in sorted(t.taps, key=lambda x: x.name):
        link = b.s.links.get(tap.name)
        create = A.CreateTap("missing", tap.name, tap.owner, tap.group, t.alias, t.link_group)
        if link is None:
            b.add(create)
            continue
        if link.kind != "tun":
            b.conflict("tap", tap.name, f"a {link.kind or 'non-tun'} link named {tap.name} exists",
                       "rename or remove it by hand", adoptable=False)
            continue
        if not _owns_link(t, b.s, tap.name):
            if not adopt:
                alias = link.alias or ""
                owner = f"owned by topology {alias[9:]}" if alias.startswith("umlstate:") \
                    else "not created by umlstate"
                b.conflict("tap", tap.name, f"a tap named {tap.name} exists, {owner}",
                           "rerun with --adopt to take it over", adoptable=True)
                continue
            b.add(A.MarkTap("adopted (--adopt)", tap.name, t.alias, t.link_group))
        elif link.alias != t.alias:
            b.add(A.MarkTap("made by an interrupted run, not yet marked", tap.name, t.alias, t.link_group))
        elif link.group != t.link_group:
            b.add(A.MarkTap(f"link group drifted from {link.group} to {t.link_group}", tap.name,
                            t.alias, t.link_group))
        link = b.s.links[tap.name]
        stuck_group = tap.group is None and link.tun_group is not None
        if not link.is_tap or link.pi or not link.persist or stuck_group:
            group_now = _id(link.tun_group, b.s.group_names)
            why = [w for w, bad in (("a tun, not a tap", not link.is_tap), ("has packet information", link.pi),
                                    ("not persistent", not link.persist),
                                    (f"has group {group_now}, wanted none", stuck_group)) if bad]
            _stop_switch_on(t, tap.name, b, "its tap is being replaced")
            b.add(A.ReplaceTap(f"{', '.join(why)}: the kernel cannot change that in place", create))
            continue
        want_uid = b.s.uid(tap.owner)
        want_gid = b.s.gid(tap.group) if tap.group else None
        drift = []
        if want_uid is not None and link.owner != want_uid:  # an unknown user is a preflight error
            drift.append(f"owner is {_id(link.owner, b.s.user_names)}, wanted {tap.owner}")
        if link.tun_group != want_gid:
            drift.append(f"group is {_id(link.tun_group, b.s.group_names)}, wanted {tap.group or 'none'}")
        if drift:
            _stop_switch_on(t, tap.name, b, "its tap's owner is being fixed")
            b.add(A.FixTap("; ".join(drift), tap.name, tap.owner, tap.group))


def _id(value: int | None, names: Mapping[int, str]) -> str:
    """A uid or gid as people know it: its name, with the number when there is one."""
    if value is None:
        return "none"
    return f"{names[value]} ({value})" if value in names else str(value)


def _addresses(t: Topology, b: _Builder) -> None:
    """After the taps step, so that a tap adopted or replaced in this plan is covered too."""
    wanted = wanted_addresses(t)
    for tap in sorted(t.taps, key=lambda x: x.name):
        if not _owns_link(t, b.s, tap.name):
            continue
        current = b.s.addresses.get(tap.name, frozenset())
        for extra in sorted(current - {wanted[tap.name]} if tap.name in wanted else current):
            b.add(A.RemoveAddress("not in the topology", tap.name, extra))
        if tap.name in wanted and wanted[tap.name] not in current:
            b.add(A.AddAddress("missing", tap.name, wanted[tap.name]))


def _link_up(t: Topology, b: _Builder) -> None:
    for tap in sorted(t.taps, key=lambda x: x.name):
        link = b.s.links.get(tap.name)
        if link is not None and _owns_link(t, b.s, tap.name) and not link.up:
            b.add(A.SetLinkUp("down" if tap.name in b.origin.links else "a new tap starts down", tap.name))


def _proxies(t: Topology, b: _Builder) -> None:
    for uplink, address in sorted(wanted_proxies(t) - b.s.proxies):
        if uplink in b.s.links:
            b.add(A.AddProxy("missing", uplink, address))


def _programs(b: _Builder) -> None:
    """The programs the chosen actions run, where observation found them missing."""
    needed = {A.CreateGroup: "groupadd", A.DeleteGroup: "groupdel", A.AddGroupMember: "gpasswd",
              A.RemoveGroupMember: "gpasswd"}
    for program in sorted({needed[type(a)] for a in b.actions if type(a) in needed}):
        if b.s.programs.get(program, "") is None:
            b.error("host", program, f"program {program} is not installed",
                    f"apt-get install {cmdline.PROGRAM_PACKAGES[program]}")


def _warnings(t: Topology, b: _Builder) -> None:
    if any(sn.proxy_arp for sn in t.subnets) and b.s.sysctls.get("net.ipv4.ip_forward") != "1":
        b.warn("sysctl", "net.ipv4.ip_forward", "proxy ARP is configured but net.ipv4.ip_forward is not 1: the "
               "kernel only answers proxy entries and forwards to the guests when forwarding is on",
               "add net.ipv4.ip_forward: 1 under host.sysctl")
    tun = t.host.tun
    if tun is not None and tun.mode is not None:
        mode = tun.mode_bits() or 0
        members = {m for g in t.host.groups if g.name == tun.group for m in g.members}
        if tun.group and (group := b.s.groups.get(tun.group)) is not None:
            members |= group.members
        for sw in t.switches:
            if sw.tap and sw.user not in ("root", "0") and b.s.uid(sw.user) is not None and not mode & 0o006 \
                    and not (mode & 0o060 and sw.user in members):
                b.warn("switch", sw.name, f"switch {sw.name} runs as {sw.user}, who cannot open {tun.path} "
                                          f"(mode {tun.mode}, group {tun.group or 'unchanged'})",
                       f"add {sw.user} to the tun group")
    if b.s.netns:
        for key in sorted(t.host.sysctl):
            if not key.startswith("net."):
                b.warn("sysctl", key, f"sysctl {key} is not per network namespace: it changes the whole host, "
                                      f"not only {b.s.netns}")


def _stop_switch_on(t: Topology, tap: str, b: _Builder, why: str) -> None:
    """A switch holds its tap open (EBUSY): stop it; the switch step starts it again."""
    for sw in t.switches:
        state = b.s.switches.get(sw.name)
        if sw.tap == tap and state is not None and state.proc is not None:
            b.add(A.StopSwitch(why, sw.name, state.proc))


def _end_switch_leftovers(name: str, b: _Builder) -> None:
    state = b.s.switches.get(name)
    if state is not None and state.proc is None and state.leftovers:
        b.add(A.EndSwitchLeftovers("its recorded process died; these were left in its cgroup", name, state.leftovers))


def _end_guest_leftovers(name: str, b: _Builder) -> None:
    state = b.s.guests.get(name)
    if state is not None and state.proc is None and state.leftovers:
        b.add(A.EndGuestLeftovers("its main process died (SIGKILL, OOM); its helpers live on", name, state.leftovers))


def _switches(t: Topology, b: _Builder) -> None:
    for sw in sorted(t.switches, key=lambda x: x.name):
        _end_switch_leftovers(sw.name, b)
        if b.s.programs.get(sw.kind, "") is None:  # not installed: a preflight error says so
            continue
        argv = cmdline.switch_argv(t, sw, cmdline.resolved(b.s.programs, sw.kind))
        start = A.StartSwitch("not running", sw.name, argv, sw.user, t.socket_of(sw), sw.tap,
                              cmdline.holds_stdin(sw))
        state = b.s.switches.get(sw.name)
        uid = b.s.uid(sw.user)
        if state is None or state.proc is None:
            b.add(start)
            b.restarted_switches.add(sw.name)
        elif state.proc.argv != argv or (uid is not None and state.proc.uid != uid) or _detached(sw.tap, b):
            why = ("command line changed" if state.proc.argv != argv
                   else f"runs as uid {state.proc.uid}, not {sw.user}" if uid is not None and state.proc.uid != uid
                   else f"running but not attached to tap {sw.tap} (no carrier; see its log)")
            b.add(A.ReplaceSwitch(why, A.StopSwitch(why, sw.name, state.proc), start))
            b.restarted_switches.add(sw.name)


def _guests(t: Topology, b: _Builder) -> None:
    for guest in sorted(t.guests, key=lambda g: g.name):
        _end_guest_leftovers(guest.name, b)
        if guest.name in b.s.records.held or b.s.programs.get(guest.kernel, "") is None:
            continue
        kernel = cmdline.resolved(b.s.programs, guest.kernel)
        argv = cmdline.guest_argv(t, guest, kernel)
        state = b.s.guests.get(guest.name)
        reason = "stale files of a dead guest, ignored; not running" if state and state.stale else "not running"
        start = A.StartGuest(reason, guest.name, argv, guest.user, t.cow_of(guest), guest.disk.base)
        if state is None or state.proc is None:
            b.add(start)
            continue
        restarted = sorted(n.switch for n in guest.nics if n.switch in b.restarted_switches)
        uid = b.s.uid(guest.user)
        if state.proc.argv != argv:
            why = "command line changed"
        elif uid is not None and state.proc.uid != uid:
            why = f"runs as uid {state.proc.uid}, not {guest.user}"
        elif restarted:
            why = f"switch {', '.join(x or '' for x in restarted)} restarted: the guest must reconnect"
        else:
            continue
        b.add(A.ReplaceGuest(why, A.StopGuest(why, guest.name, state.proc),
                             A.StartGuest(why, guest.name, argv, guest.user, t.cow_of(guest), guest.disk.base)))


def _detached(tap: str | None, b: _Builder) -> bool:
    """A switch that runs while its tap, up since before this plan, has no carrier: it failed to attach."""
    if tap is None:
        return False
    before, now = b.origin.links.get(tap), b.s.links.get(tap)
    return before is not None and now is not None and before.up and now.up and not now.carrier
