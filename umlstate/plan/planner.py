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
import re
from collections.abc import Mapping
from dataclasses import replace

from umlstate.model.placement import Stretch
from umlstate.model.snapshot import Proc, Snapshot, unit_of
from umlstate.model.topology import Host, Topology
from umlstate.plan import actions as A
from umlstate.plan import backoff, cmdline, preflight, ruleset
from umlstate.plan import bridge as bridge_kind
from umlstate.plan import vxlan as vxlan_kind
from umlstate.plan.result import Backoff, Builder, Plan
from umlstate.plan.wanted import owns_link, wanted_addresses, wanted_proxies, wanted_taps


def plan(topology: Topology, observed: Snapshot, *, adopt: bool = False, destroy: bool = False,
         stretches: Mapping[str, Stretch] | None = None) -> Plan:
    """``stretches``: with several hosts, the bridges this host shares with others over VXLAN (placement)."""
    desired = _nothing_wanted(topology) if destroy else topology
    wanted_vxlans = {} if destroy else {st.link: st for st in (stretches or {}).values()}
    b = Builder(observed, observed)
    if not destroy:
        preflight.preflight(desired, b)
    _remove_unwanted(desired, wanted_vxlans, b)
    _groups(desired, b)
    _tun_node(desired, b)
    _sysctls(desired, b)
    bridge_kind.plan_step(desired, b)
    vxlan_kind.plan_step(desired, wanted_vxlans, b)
    _taps(desired, b, adopt)
    _enslave(desired, b)
    _addresses(desired, b)
    _link_up(desired, b)
    _hardened(desired, wanted_vxlans, b)
    _proxies(desired, b)
    ruleset.plan_step(desired, stretches or {}, b, destroy=destroy)  # before any guest starts
    _switches(desired, b)
    _guests(desired, b)
    preflight.programs(b)
    preflight.warnings(desired, b)
    return Plan(
        topology=topology.name,
        netns=observed.netns,
        actions=tuple(b.actions),
        conflicts=tuple(b.conflicts),
        blockers=tuple(b.blockers),
        warnings=tuple(b.warnings),
        observed=observed,
        mode="destroy" if destroy else "apply",
        held=() if destroy else tuple(sorted(g.name for g in topology.guests if g.name in observed.records.held)),
        backoff=tuple(b.backoff),
    )


def _nothing_wanted(t: Topology) -> Topology:
    """The same topology (name, folders) with no resources: what destroy plans towards."""
    # A new model, not model_copy: a copy would carry the original's cached name index.
    return Topology(name=t.name, host=Host(run_dir=t.host.run_dir, state_dir=t.host.state_dir))


# --- what the topology wants, derived --------------------------------------------


def _remove_unwanted(t: Topology, vxlans: Mapping[str, Stretch], b: Builder) -> None:
    # Processes first: a guest leaves before its switch, a switch before its tap.
    wanted_guests = {g.name for g in t.guests}
    for name, state in sorted(b.s.guests.items()):
        if name not in wanted_guests and state.proc is not None:
            b.add(A.StopGuest("no longer in the topology", name, state.proc))
        _end_guest_leftovers(name, b)
    wanted_switches = {sw.name for sw in t.switch_processes}
    for name, sw_state in sorted(b.s.switches.items()):
        if name not in wanted_switches and sw_state.proc is not None:
            b.add(A.StopSwitch("no longer in the topology", name, sw_state.proc))
        _end_switch_leftovers(name, b)

    wanted_proxy = wanted_proxies(t)
    for uplink, address in sorted(b.s.records.proxies):
        entry = (uplink, ipaddress.IPv4Address(address))
        if entry in b.s.proxies and entry not in wanted_proxy:
            b.add(A.RemoveProxy("no longer in the topology", uplink, entry[1]))

    taps = {tap.name for tap in wanted_taps(t)}
    bridges = {bridge.name for bridge in t.bridges}
    for name in sorted(b.s.links):  # taps first: a bridge goes once nothing is on it
        if owns_link(t, b.s, name) and b.s.links[name].is_tap and name not in taps:
            b.add(A.DeleteTap("no longer in the topology", name, t.link_group))
    for name in sorted(b.s.links):  # a VXLAN before its bridge
        if owns_link(t, b.s, name) and b.s.links[name].kind == "vxlan" and name not in vxlans:
            b.add(A.DeleteVxlan("no other host has guests on its bridge any more", name, t.link_group))
    for name in sorted(b.s.links):
        if owns_link(t, b.s, name) and b.s.links[name].kind == "bridge" and name not in bridges:
            b.add(A.DeleteBridge("no longer in the topology", name, t.link_group))

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
    for key in sorted(t.host.sysctl):
        want = " ".join(t.host.sysctl[key].split())
        current = b.s.sysctls.get(key)
        if current is None:  # missing key: a preflight blocker already says so
            continue
        if current != want:
            b.add(A.SetSysctl(f"is {current}, wanted {want}", key, want, current))


def _taps(t: Topology, b: Builder, adopt: bool) -> None:
    for tap in wanted_taps(t):
        link = b.s.links.get(tap.name)
        create = A.CreateTap("missing", tap.name, tap.owner, tap.group, t.alias, t.link_group)
        if link is None:
            b.add(create)
            continue
        if link.kind != "tun":
            b.conflict("tap", tap.name, f"a {link.kind or 'non-tun'} link named {tap.name} exists",
                       "rename or remove it by hand", adoptable=False)
            continue
        if not owns_link(t, b.s, tap.name):
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
            _stop_holders(t, tap.name, b, "its tap is being replaced")
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
            _stop_holders(t, tap.name, b, "its tap's owner is being fixed")
            b.add(A.FixTap("; ".join(drift), tap.name, tap.owner, tap.group))


def _enslave(t: Topology, b: Builder) -> None:
    """Each bridge NIC's tap on its bridge (a new tap, or one someone took off it)."""
    for tap in wanted_taps(t):
        link = b.s.links.get(tap.name)
        if tap.bridge is None or link is None or not owns_link(t, b.s, tap.name) or link.master == tap.bridge:
            continue
        if tap.bridge in b.s.links:
            why = "a new tap" if tap.name not in b.origin.links else f"on {link.master or 'no bridge'}"
            b.add(A.Enslave(why, tap.name, tap.bridge))


def _id(value: int | None, names: Mapping[int, str]) -> str:
    """A uid or gid as people know it: its name, with the number when there is one."""
    if value is None:
        return "none"
    return f"{names[value]} ({value})" if value in names else str(value)


def _addresses(t: Topology, b: Builder) -> None:
    """After the taps step, so that a tap adopted or replaced in this plan is covered too."""
    wanted = wanted_addresses(t)
    for name in sorted({tap.name for tap in wanted_taps(t)} | {bridge.name for bridge in t.bridges}):
        if not owns_link(t, b.s, name):
            continue
        current = b.s.addresses.get(name, frozenset())
        for extra in sorted(current - {wanted[name]} if name in wanted else current):
            b.add(A.RemoveAddress("not in the topology", name, extra))
        if name in wanted and wanted[name] not in current:
            b.add(A.AddAddress("missing", name, wanted[name]))


def _hardened(t: Topology, wanted: Mapping[str, Stretch], b: Builder) -> None:
    """The links umlstate made take no IPv6 autoconfiguration; its bridges learn a bounded number of MACs."""
    names = {tap.name for tap in wanted_taps(t)} | {x.name for x in t.bridges} | set(wanted)
    for name in sorted(names):
        link = b.s.links.get(name)
        if link is None or not owns_link(t, b.s, name):
            continue
        if link.autoconf:
            b.add(A.QuietIpv6("takes router advertisements or autoconfigures", name))
        if link.kind == "bridge" and link.fdb_max is not None and link.fdb_max != A.BRIDGE_FDB_MAX:
            b.add(A.LimitFdb(f"learns {'any number of' if not link.fdb_max else f'up to {link.fdb_max}'} MACs",
                             name))


def _link_up(t: Topology, b: Builder) -> None:
    for bridge in sorted(t.bridges, key=lambda x: x.name):
        link = b.s.links.get(bridge.name)
        if link is not None and owns_link(t, b.s, bridge.name) and link.kind == "bridge" and not link.up:
            b.add(A.SetBridgeUp("down" if bridge.name in b.origin.links else "a new bridge starts down", bridge.name))
    for tap in wanted_taps(t):
        link = b.s.links.get(tap.name)
        if link is not None and owns_link(t, b.s, tap.name) and link.is_tap and not link.up:
            b.add(A.SetLinkUp("down" if tap.name in b.origin.links else "a new tap starts down", tap.name))


def _proxies(t: Topology, b: Builder) -> None:
    for uplink, address in sorted(wanted_proxies(t) - b.s.proxies):
        if uplink in b.s.links:
            b.add(A.AddProxy("missing", uplink, address))


def _stop_holders(t: Topology, tap: str, b: Builder, why: str) -> None:
    """A switch or guest holds its tap open (EBUSY): stop it; the switch and guest steps start it again."""
    for sw in t.switch_processes:
        state = b.s.switches.get(sw.name)
        if sw.tap == tap and state is not None and state.proc is not None:
            b.add(A.StopSwitch(why, sw.name, state.proc))
    held_by = {nt.guest for nt in t.nic_taps() if nt.name == tap}
    held_by |= {g.name for g in t.guests if any(nic.tap == tap for nic in g.nics)}
    for name in sorted(held_by):
        guest_state = b.s.guests.get(name)
        if guest_state is not None and guest_state.proc is not None:
            b.add(A.StopGuest(why, name, guest_state.proc))


def _end_switch_leftovers(name: str, b: Builder) -> None:
    state = b.s.switches.get(name)
    if state is not None and state.proc is None and state.leftovers:
        b.add(A.EndSwitchLeftovers("its recorded process died; these were left in its cgroup", name, state.leftovers,
                                   b.s.records.processes.get(unit_of("switch", name))))


def _end_guest_leftovers(name: str, b: Builder) -> None:
    state = b.s.guests.get(name)
    if state is not None and state.proc is None and state.leftovers:
        b.add(A.EndGuestLeftovers("its main process died (SIGKILL, OOM); its helpers live on", name, state.leftovers,
                                  b.s.records.processes.get(unit_of("guest", name))))


def _switches(t: Topology, b: Builder) -> None:
    for sw in sorted(t.switch_processes, key=lambda x: x.name):
        _end_switch_leftovers(sw.name, b)
        if b.s.programs.get(sw.kind, "") is None:  # not installed: a preflight error says so
            continue
        argv = cmdline.switch_argv(t, sw, cmdline.resolved(b.s.programs, sw.kind))
        start = A.StartSwitch("not running", sw.name, argv, sw.runs_as, t.socket_of(sw), sw.tap,
                              cmdline.holds_stdin(sw))
        state = b.s.switches.get(sw.name)
        uid = b.s.uid(sw.runs_as)
        if state is None or state.proc is None:
            b.add(start)
            b.restarted_switches.add(sw.name)
        elif state.proc.argv != argv or (uid is not None and state.proc.uid != uid) or _detached(sw.tap, b):
            why = ("command line changed" if state.proc.argv != argv
                   else f"runs as uid {state.proc.uid}, not {sw.runs_as}" if uid is not None and state.proc.uid != uid
                   else f"running but not attached to tap {sw.tap} (no carrier; see its log)")
            b.add(A.ReplaceSwitch(why, A.StopSwitch(why, sw.name, state.proc), start))
            b.restarted_switches.add(sw.name)


def _guests(t: Topology, b: Builder) -> None:
    broken = {f.target for f in b.blockers if f.kind == "guest"}  # its own errors: not started, the rest goes on
    for guest in sorted(t.guests, key=lambda g: g.name):
        _end_guest_leftovers(guest.name, b)
        if guest.name in b.s.records.held or guest.name in broken:
            continue
        kernel = cmdline.resolved(b.s.programs, guest.kernel)
        wires = cmdline.wires_of(t, guest, b.s.kernels.get(kernel))
        if isinstance(wires, list):  # a NIC this kernel cannot wire: preflight said so
            continue
        argv = cmdline.guest_argv(t, guest, kernel, wires)
        state = b.s.guests.get(guest.name)
        if state is not None and state.panic:
            reason = f"its log says: {state.panic}"  # the guest's word, of a guest that is gone
        else:
            reason = "stale files of a dead guest, ignored; not running" if state and state.stale else "not running"
        start = A.StartGuest(reason, guest.name, argv, guest.user, t.cow_of(guest), guest.disk.base)
        if state is None or state.proc is None:
            crashes = backoff.crashes(guest.name, state, b.s)
            if crashes:
                delay = backoff.delay(crashes)
                until = (state.ended if state and state.ended else b.s.now) + delay
                if b.s.now < until:
                    b.backoff.append(Backoff(guest.name, until, crashes))
                    continue
                after = f": restarted {delay:g}s after" if delay else ""
                start = replace(start, crashes=crashes, reason=f"{reason}; it died {crashes} time(s) in a row soon "
                                                               f"after starting{after}")
            b.add(start)
            continue
        restarted = sorted(n.switch for n in guest.nics if n.switch in b.restarted_switches)
        uid = b.s.uid(guest.user)
        running = cmdline.without_console(state.proc.argv)
        live = _hotplug(guest.name, state.proc, running, argv) if not restarted and state.proc.uid == uid else None
        if live is not None:
            for action in live:
                b.add(action)
            continue
        if running != cmdline.without_console(argv):
            why = "command line changed"
        elif uid is not None and state.proc.uid != uid:
            why = f"runs as uid {state.proc.uid}, not {guest.user}"
        elif restarted:
            why = f"switch {', '.join(x or '' for x in restarted)} restarted: the guest must reconnect"
        else:
            continue
        b.add(A.ReplaceGuest(why, A.StopGuest(why, guest.name, state.proc),
                             A.StartGuest(why, guest.name, argv, guest.user, t.cow_of(guest), guest.disk.base)))


VECTOR_TAP = re.compile(r"(vec[0-9]+):transport=tap,")
HINT = re.compile(r"umlstate\.(vec[0-9]+)=")


def _hotplug(name: str, proc: Proc, running: tuple[str, ...], argv: tuple[str, ...]
             ) -> list[A.PlugNic | A.UnplugNic] | None:
    """NICs added to (or taken from the end of) a running guest, when that is all that changed.

    Only vector tap NICs, whose device UML makes and removes at run time; None when
    anything else differs, so the guest is replaced as before.
    """
    old, new = running, cmdline.without_console(argv)
    added = [w for w in new if w not in old]
    removed = [w for w in old if w not in new]
    if bool(added) == bool(removed):
        return None
    changed, longer, shorter = (added, new, old) if added else (removed, old, new)
    if [w for w in longer if w not in changed] != list(shorter):
        return None  # not a plain addition or removal: order or other words changed
    nics = {m[1]: w for w in changed if (m := VECTOR_TAP.match(w))}
    hints = {m[1]: w for w in changed if (m := HINT.match(w))}
    if not nics or len(nics) + len(hints) != len(changed) or not set(hints) <= set(nics):
        return None
    if added:
        return [A.PlugNic("NIC added to a running guest", name, proc, word, hints.get(ifname), argv)
                for ifname, word in sorted(nics.items())]
    return [A.UnplugNic("NIC gone from the topology", name, proc, ifname, argv)
            for ifname in sorted(nics, reverse=True)]


def _detached(tap: str | None, b: Builder) -> bool:
    """A switch that runs while its tap, up since before this plan, has no carrier: it failed to attach."""
    if tap is None:
        return False
    before, now = b.origin.links.get(tap), b.s.links.get(tap)
    return before is not None and now is not None and before.up and now.up and not now.carrier
