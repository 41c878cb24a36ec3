"""The planner's checks of the host: what would make apply fail, and what deserves a warning.

Pure, in the plan layer; run by ``planner.plan`` on the observed snapshot
before any action is chosen (preflight) and after (programs the chosen
actions run, warnings). Every problem is a Finding with its fix, and all
of them are reported at once: apply refuses a plan with errors before its
first change.
"""

from __future__ import annotations

from datetime import UTC, datetime

from umlstate.model.guest import Guest
from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan import cmdline
from umlstate.plan.result import Builder


def preflight(t: Topology, b: Builder) -> None:
    s = b.s
    creating = {g.name for g in t.host.groups}
    users: dict[str, list[str]] = {}
    for user, role in [*((g.user, f"guest {g.name}") for g in t.guests),
                       *((sw.runs_as, f"switch {sw.name}") for sw in t.switch_processes),
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
    for key in sorted(t.sysctls):
        if key in s.sysctls and s.sysctls[key] is None:
            b.error("sysctl", key, f"sysctl {key} does not exist on this kernel "
                                   f"(/proc/sys/{key.replace('.', '/')} is missing)",
                    "remove it from host.sysctl (or the subnet's proxy_ndp)")
    for uplink in t.uplinks:
        if uplink not in s.links:
            where = f"network namespace {s.netns}" if s.netns else "the host"
            b.error("proxy-neigh", uplink, f"uplink interface {uplink} does not exist in {where}",
                    "fix proxy_arp.uplink or create the interface")
    for sw in t.switch_processes:
        if s.programs.get(sw.kind, "") is None:
            b.error("switch", sw.name, f"{sw.kind} (switch {sw.name}) is not installed",
                    f"apt-get install {cmdline.PROGRAM_PACKAGES[sw.kind]}")
    for guest in t.guests:
        _preflight_guest(t, guest, b)
    if t.taps and t.host.tun is None and s.tun is not None and not s.tun.is_tun:
        b.error("tun-device", s.tun.path, f"no tun device at {s.tun.path}",
                "load the module (modprobe tun) or declare host.tun so that umlstate makes the node")


def _preflight_guest(t: Topology, guest: Guest, b: Builder) -> None:
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
    wired = cmdline.wires_of(t, guest, s.kernels.get(kernel or guest.kernel))
    if isinstance(wired, list):
        for problem in wired:
            b.error("guest", guest.name, problem.problem, problem.fix)


def _stale_cow(guest: Guest, cow: str, b: Builder) -> None:
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
    # Never a change to the base: other guests share it, and the header is the guest user's to write.
    fix = (f"move {cow} away to boot guest {guest.name} afresh from {guest.disk.base} as it is now (the guest's "
           "own changes in it are lost); other guests are not affected")
    if running:
        b.warn("guest", guest.name, f"{problem}: it runs now, but UML will refuse to boot it again", fix)
    else:
        b.error("guest", guest.name, f"{problem}, and UML refuses to boot from the pair", fix)


def _utc(epoch: int | None) -> str:
    if epoch is None:
        return "missing"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def programs(b: Builder) -> None:
    """The programs the chosen actions run, where observation found them missing."""
    needed = {A.CreateGroup: ("groupadd",), A.DeleteGroup: ("groupdel",), A.AddGroupMember: ("gpasswd",),
              A.RemoveGroupMember: ("gpasswd",), A.WriteSeed: ("mkfs.vfat", "mcopy"),
              A.RewriteSeed: ("mkfs.vfat", "mcopy")}
    for program in sorted({p for a in b.actions if type(a) in needed for p in needed[type(a)]}):
        if b.s.programs.get(program, "") is None:
            b.error("host", program, f"program {program} is not installed",
                    f"apt-get install {cmdline.PROGRAM_PACKAGES[program]}")


def warnings(t: Topology, b: Builder) -> None:
    for guest in t.guests:  # a router: what it forwards from elsewhere leaves it with sources not its own
        if guest.sysctl.get("net.ipv4.ip_forward", "0").strip() != "1":
            continue
        bare = [f"eth{i}" for i, nic in enumerate(guest.nics) if nic.port_security and not nic.allow_sources]
        if bare:
            b.warn("guest", guest.name, f"guest {guest.name} forwards (net.ipv4.ip_forward: 1), but {', '.join(bare)} "
                   "declares no allow_sources: its port security drops what it forwards from other networks",
                   "list the networks it forwards from under nics[].allow_sources")
    for guest in t.guests:  # its kernel has IPv6 as a module its image lacks: known once it booted and said so
        state = b.origin.guests.get(guest.name)  # as observed: a restart planned here has not said anything yet
        if state is None or state.no_ipv6 is None:
            continue
        six = [str(i.ip) for nic in guest.nics for i in t.interfaces_of(nic) if i.version == 6]
        if six:
            b.warn("guest", guest.name, f"guest {guest.name} says its kernel ({state.no_ipv6}) has no IPv6: its image "
                   f"lacks the kernel's ipv6 module, so {', '.join(six)} is not on it",
                   f"put the kernel's modules in the image's /lib/modules/{state.no_ipv6} (scripts/build-debian-guest "
                   "and umlstate's busybox image carry those of the UML kernels installed here), or boot a kernel with "
                   "IPv6 built in; the guest takes it at its next boot")
    if any(sn.proxy_ndp for sn in t.subnets) and b.s.sysctls.get("net.ipv6.conf.all.forwarding") != "1":
        b.warn("sysctl", "net.ipv6.conf.all.forwarding", "proxy NDP is configured but "
               "net.ipv6.conf.all.forwarding is not 1: the host neither answers for the guests nor forwards to them "
               "(forwarding also turns off router advertisements the host's own links take, unless accept_ra is 2)",
               "add net.ipv6.conf.all.forwarding: 1 under host.sysctl")
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
        for sw in t.switch_processes:
            in_group = sw.runs_as in members or (  # a member, or the group is its primary one
                tun.group is not None and b.s.primary_gids.get(sw.runs_as, -1) == b.s.gid(tun.group))
            if sw.tap and sw.runs_as not in ("root", "0") and b.s.uid(sw.runs_as) is not None and not mode & 0o006 \
                    and not (mode & 0o060 and in_group):
                b.warn("switch", sw.name, f"switch {sw.name} runs as {sw.runs_as}, who cannot open {tun.path} "
                                          f"(mode {tun.mode}, group {tun.group or 'unchanged'})",
                       f"add {sw.runs_as} to the tun group")
    if b.s.netns:
        for key in sorted(t.sysctls):
            if not key.startswith(("net.", "net/")):
                b.warn("sysctl", key, f"sysctl {key} is not per network namespace: it changes the whole host, "
                                      f"not only {b.s.netns}")
