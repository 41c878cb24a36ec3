"""Carry out a plan on the host, in order; a failure stops only what needs what failed (plan/graph.py).

Apply layer, after the planner. Before the first change it writes the
records of everything the plan will create (write-ahead, atomic), so a run
killed at any moment leaves state the next run recognises: a tap made but
not yet marked is still umlstate's. ``scheduler`` says which actions go to
the kernel together; every other action goes to ``_carry_out``, one ``match``
over the closed union of actions, so an action without a handler is a type
error. Handlers resolve users and groups when they run, since the plan may
have just created the group; processes are recorded as they start. Every
host call goes through a port: ``Host`` (apply/host.py) for the kernel and
the system, ``ProcessHost`` (apply/processes.py) for switches and guests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import assert_never

import structlog

from umlstate.apply.boot import BOOT_TIMEOUT, BootWait
from umlstate.apply.host import Host, System
from umlstate.apply.processes import Processes, ProcessHost
from umlstate.apply.scheduler import Batch, Batchable, GroupDelete, Single, Stops, schedule
from umlstate.errors import ActionError, HostError
from umlstate.host import netlink
from umlstate.host.netlink import Netlink
from umlstate.model.snapshot import Proc, Records, RulesetRecord, SeedRecord, Snapshot, unit_of
from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan import graph
from umlstate.plan.result import Plan

log = structlog.get_logger("umlstate")

SWITCH_START_TIMEOUT = 5.0
# How long a guest's own shutdown may take after mconsole cad before it is synced and halted.
STOP_TIMEOUT = 60.0  # $UMLSTATE_STOP_TIMEOUT


@dataclass
class Result:
    done: list[A.AnyAction] = field(default_factory=list)
    seconds: float = 0.0


class ApplyFailed(ActionError):
    """Some actions failed; what needed them was skipped; everything else was done."""

    def __init__(self, done: list[A.AnyAction], failed: list[tuple[str, str]],
                 skipped: list[tuple[A.AnyAction, str]]) -> None:
        """``failed``: (what, why); an action's what is "op kind target", a guest preflight stopped "guest NAME"."""
        self.done, self.failed, self.skipped = done, failed, skipped
        lines = [f"failed: {what}: {cause}".replace("\n", "\n  ") for what, cause in failed]
        lines += [f"not done: {a.op} {a.kind} {a.target}: it needs {blocker}, which failed" for a, blocker in skipped]
        lines.append(f"done: {len(done)} action(s); everything that did not need a failed one went on")
        lines.append("run `umlstate apply` again once the cause is fixed: it continues from the host as it is")
        super().__init__("\n".join(lines))


class Executor:
    def __init__(self, topology: Topology, nl: Netlink, *, crash_after: int | None = None,
                 progress: bool = False, wait: bool = True, wait_timeout: float = BOOT_TIMEOUT,
                 stop_timeout: float = STOP_TIMEOUT, host: Host | None = None,
                 procs: ProcessHost | None = None) -> None:
        """``host``, ``procs``: where network and system actions go, and switch and guest processes (the host
        itself, ``System(nl)`` and ``Processes``, by default)."""
        self.t = topology
        self.host: Host = host if host is not None else System(nl)
        self.procs: ProcessHost = procs if procs is not None else Processes(
            topology, nl, BootWait(progress, timeout=wait_timeout, answering=wait), stop_timeout=stop_timeout)
        self.tun_path = topology.tun_path
        # Test hook (UMLSTATE_TEST_CRASH_AFTER): die like kill -9 after k actions.
        self.crash_after = crash_after
        self.result = Result()
        self.records = Records()  # as last saved: process records are added as processes start
        self.spawned: dict[str, Proc] = {}
        self.ruleset: RulesetRecord | None = None  # the policy as nftables listed it back after loading
        self.seeds: dict[str, SeedRecord | None] = {}  # seed disks written (None: removed) in this pass
        self.unrouted: set[tuple[str, str]] = set()  # host routes recorded ahead whose add failed: not ours
        self.failed: list[tuple[str, str]] = []
        self.skipped: list[tuple[A.AnyAction, str]] = []
        self.broken: dict[str, str] = {}  # resource -> the failed resource it is broken by (itself when it failed)
        self._guests = {g.name for g in topology.guests}

    # --- the pass ------------------------------------------------------------------------

    def apply(self, plan: Plan, observed: Snapshot) -> Result:
        start = time.monotonic()
        final = plan.expected if plan.expected is not None and plan.observed is observed else observed
        if final is observed:  # a plan made from another snapshot (tests), or none
            for action in plan.actions:
                final = action.simulate(final)
        # Write-ahead: everything the plan creates is recorded before it exists.
        creating = {a.target for a in plan.actions
                    if isinstance(a, (A.CreateTap, A.ReplaceTap, A.CreateBridge, A.CreateVxlan))}
        self._save(_union(observed.records, final.records, creating))
        in_group = frozenset(name for name, link in observed.links.items() if link.group == self.t.link_group)
        steps = schedule(plan.actions, in_group)
        self.failed += preflight_failures(plan)
        try:
            for step in steps:
                match step:
                    case Batch(actions=batch, beside=load):
                        self._send(batch, load)
                    case GroupDelete(actions=deletions):
                        if self._attempt(deletions[0], lambda: self.host.delete_group(self.t.link_group)):
                            for action in deletions:
                                self._done(action)
                    case Single(action=action):
                        if self._ready_to(action) and self._attempt(action, partial(self._carry_out, action)):
                            self._done(action)
                    case Stops(actions=stops):
                        self._stop_together(stops)
                    case _:
                        assert_never(step)
            for action, cause in self.procs.booted():
                self._fail(action, cause)
        finally:
            self.close()
        # A crash count goes with a run that started: a start that failed before spawning made no run.
        crashes = {**observed.records.crashes, **{g: n for g, n in final.records.crashes.items()
                                                  if unit_of("guest", g) in self.spawned}}
        crashes = {g: n for g, n in crashes.items()
                   if g in final.records.crashes or unit_of("guest", g) not in self.spawned}
        seeds = {g: r for g, r in {**observed.records.seeds, **self.seeds}.items() if r is not None}
        self._save(replace(final.records, pending_taps=frozenset(), boot_id=observed.boot_id,
                           processes=self._running(observed, final), crashes=crashes, seeds=seeds,
                           routes=final.records.routes - self.unrouted,
                           ruleset=self.ruleset if final.records.ruleset and self.ruleset else final.records.ruleset))
        self.result.seconds = time.monotonic() - start
        if self.failed:
            raise ApplyFailed(self.result.done, self.failed, self.skipped)
        return self.result

    def _stop_together(self, stops: tuple[A.StopGuest | A.ReplaceGuest, ...]) -> None:
        """Each guest's own shutdown runs at the same time as the others'; then the replaced ones start."""
        self.procs.prepare()  # the folders, once, before the threads
        halts = {a: a if isinstance(a, A.StopGuest) else a.stop for a in stops}
        with ThreadPoolExecutor(max_workers=min(16, len(stops))) as pool:
            running = {a: pool.submit(self.stop_guest, halt.name, halt.proc) for a, halt in halts.items()}
        for action, future in running.items():  # in plan order
            if not self._attempt(action, future.result):
                continue
            start = partial(self.procs.start_guest, action.start, self._remember) \
                if isinstance(action, A.ReplaceGuest) else None
            if start is not None and not (self._ready_to(action) and self._attempt(action, start)):
                continue
            self._done(action)

    def close(self) -> None:
        self.procs.close()

    def stop_guest(self, name: str, proc: Proc) -> str:
        return self.procs.stop_guest(name, proc)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _attempt(self, action: A.AnyAction, work: Callable[[], object]) -> bool:
        """Carry out ``work`` for ``action``; a failure is recorded (and breaks what it provides), not raised."""
        try:
            work()
        except (ActionError, HostError, OSError) as exc:
            cause = str(exc) if not isinstance(exc, OSError) else exc.strerror or str(exc)
            self._fail(action, cause)
            return False
        return True

    def _fail(self, action: A.AnyAction, cause: str) -> None:
        log.error("action failed", op=action.op, kind=action.kind, target=action.target, error=cause)
        if isinstance(action, A.AddRoute):  # e.g. it exists already, someone else's: never to be removed as ours
            self.unrouted.add((action.to, str(action.via)))
        self.failed.append((f"{action.op} {action.kind} {action.target}", cause))
        for resource in graph.provides(action):
            self.broken.setdefault(resource, f"{action.kind} {action.target}")

    def _ready_to(self, action: A.AnyAction) -> bool:
        """False, and the action skipped, when it needs something a failed or skipped action provides."""
        blocker = next((self.broken[r] for r in sorted(graph.needs(action, self.t)) if r in self.broken), None)
        if blocker is None:
            return True
        log.warning("action skipped", op=action.op, kind=action.kind, target=action.target, needs=blocker)
        self.skipped.append((action, blocker))
        for resource in graph.provides(action):
            self.broken.setdefault(resource, blocker)
        return False

    def _done(self, action: A.AnyAction) -> None:
        log.info("action", op=action.op, kind=action.kind, target=action.target, detail=action.detail,
                 reason=action.reason)
        self.result.done.append(action)
        if self.crash_after is not None and len(self.result.done) >= self.crash_after:
            os.kill(os.getpid(), signal.SIGKILL)

    # --- records ---------------------------------------------------------------------------

    def _save(self, recs: Records) -> None:
        self.records = replace(recs, processes={**recs.processes, **self.spawned})
        self.host.save_records(self.t.state_dir, self.records)

    def _remember(self, unit: str, proc: Proc) -> None:
        """A process just started: recorded at once, so a crash right after never loses it."""
        self.spawned[unit] = proc
        self._save(self.records)

    def _running(self, observed: Snapshot, final: Snapshot) -> dict[str, Proc]:
        """The process records to keep: those of switches and guests the plan leaves running, and the last
        run of a guest that died by itself and stays down (a crash loop backing off: its record says when it
        started, its log when it died, so the next pass knows how long to wait)."""
        known = {**observed.records.processes, **self.spawned}
        kept = {}
        for kind, states in (("switch", final.switches), ("guest", final.guests)):
            for name, state in states.items():
                unit = unit_of(kind, name)
                was = observed.guests.get(name) if kind == "guest" else None
                died = was is not None and was.proc is None and state.proc is None and name in self._guests
                if unit in known and (state.proc is not None or died):
                    kept[unit] = known[unit]
        return kept

    # --- the kernel, in bulk ---------------------------------------------------------------

    def _send(self, batch: tuple[Batchable, ...], load: A.LoadRuleset | None = None) -> None:
        """Queue each request (creating taps by ioctl on the way), send, record each acked action; ``load``:
        the policy, loaded while the requests go (scheduler.py), recorded after them."""
        requests = self.host.batch()
        # The load starts as soon as the last tap is made: the other requests are queued while it runs.
        taps_made = 1 + max((i for i, a in enumerate(batch) if isinstance(a, A.CreateTap)), default=-1)
        self._queue_all(batch[:taps_made], requests)
        loaded = self.host.load_ruleset(load) if load is not None and self._ready_to(load) else None
        try:
            self._queue_all(batch[taps_made:], requests)
            self._announce(self._acked_all(batch, requests))
        except BaseException:
            # The pass fails (a short ack, a bug), and watch goes on to the next one: a load left running could
            # commit after that pass's own and unhook a tap whose guest it started. It ends with this pass.
            if loaded is not None:
                with contextlib.suppress(Exception):
                    loaded()
            raise
        if load is not None and loaded is not None and self._attempt(load, partial(self._loaded, loaded)):
            self._done(load)

    def _acked_all(self, batch: tuple[Batchable, ...], requests: netlink.Batch) -> list[A.AddProxy]:
        """Send the queued requests; record each action the kernel acked or refused; the proxies it added."""
        limit = None
        if self.crash_after is not None:  # the test hook stops at the exact action count
            limit = max(0, self.crash_after - len(self.result.done))
        by_id = {id(a): a for a in batch}  # the labels are the actions themselves
        proxies: list[A.AddProxy] = []
        for label, code in self.host.send(requests, limit):
            acked = by_id[id(label)]
            if code:
                self._fail(acked, f"{acked.detail}: {os.strerror(code)}")
            else:
                self._done(acked)
                if isinstance(acked, A.AddProxy):
                    proxies.append(acked)
        return proxies

    def _loaded(self, loaded: Callable[[], RulesetRecord]) -> None:
        self.ruleset = loaded()

    def _queue_all(self, actions: tuple[Batchable, ...], requests: netlink.Batch) -> None:
        """Each request queued (a tap made by ioctl on the way), unless it needs what failed."""
        for action in actions:
            if not self._ready_to(action):
                continue
            match action:
                case A.CreateTap():
                    self._attempt(action, partial(self._make_tap, action, requests))
                case _:
                    self._attempt(action, partial(self._queue, action, requests))

    def _announce(self, proxies: list[A.AddProxy]) -> None:
        """The LAN learns at once that this host answers for these addresses now (host/announce.py: a moved
        guest's old host is still in its neighbours' caches). Best effort: the entries are in place either way."""
        uplinks: dict[str, list[A.AddProxy]] = {}
        for action in proxies:
            uplinks.setdefault(action.uplink, []).append(action)
        for uplink, actions in uplinks.items():
            try:
                failed = self.host.announce(uplink, tuple(a.address for a in actions))
            except OSError as exc:
                failed = {a.address: exc.strerror or str(exc) for a in actions}
            for cause in sorted(set(failed.values())):
                log.warning("the LAN was not told of new proxy entries: its neighbours find this host once their "
                            "cached entries expire", uplink=uplink, error=cause,
                            addresses=[str(a) for a, why in failed.items() if why == cause])

    def _make_tap(self, a: A.CreateTap, requests: netlink.Batch) -> None:
        """ioctls now; the mark (ifalias, link group) queued, acked under this action's name."""
        h = self.host
        h.create_tap(self.tun_path, a.name, h.uid(a.owner), h.gid(a.group) if a.group else None)
        h.quiet_ipv6(a.name)
        requests.set_link(a, a.name, alias=a.alias, group=a.link_group)

    # --- one action at a time ----------------------------------------------------------------

    def _carry_out(self, action: A.AnyAction) -> None:
        h, p = self.host, self.procs
        match action:
            case A.CreateTunNode():
                h.make_node(action.path, action.mode, h.gid(action.group) if action.group else None)
            case A.FixTunNode():
                h.fix_node(action.path, action.mode, h.gid(action.group) if action.group else None)
            case A.RestoreTunNode():
                h.fix_node(action.path, action.mode, action.gid)
            case A.DeleteTunNode():
                h.delete_node(action.path)
            case A.CreateGroup():
                h.run("groupadd", action.name, already=9)  # 9: it exists (made meanwhile): what we want
            case A.DeleteGroup():
                h.run("groupdel", action.name)
            case A.AddGroupMember():
                h.run("gpasswd", "-a", action.user, action.group)
            case A.RemoveGroupMember():
                h.run("gpasswd", "-d", action.user, action.group)
            case A.ForgetGroupMember():
                pass  # only the record changes: the final save writes it
            case A.SetSysctl() | A.RestoreSysctl():
                h.write_sysctl(action.key, action.value)
            case A.FixTap():
                h.fix_tap(self.tun_path, action.name, h.uid(action.owner),
                          h.gid(action.group) if action.group else None)
            case A.ReplaceTap():
                self._send_now(A.DeleteTap(action.reason, action.create.name, action.create.link_group))
                self._send_now(action.create)
            case (A.CreateTap() | A.MarkTap() | A.SetLinkUp() | A.DeleteTap() | A.AddAddress() | A.RemoveAddress()
                  | A.AddProxy() | A.RemoveProxy() | A.AddRoute() | A.RemoveRoute() | A.Enslave() | A.SetBridgeUp()
                  | A.DeleteBridge() | A.SetBridgeMac() | A.LimitFdb() | A.DeleteVxlan() | A.AddFdb() | A.RemoveFdb()):
                self._send_now(action)
            case A.CreateBridge():
                # Now, not batched: the taps enslaved later need its ifindex.
                requests = self.host.batch()
                requests.create_bridge(action, action.name, group=action.link_group, fdb_max=A.BRIDGE_FDB_MAX,
                                       mac=action.mac)
                requests.mark_by_name(action, action.name, alias=action.alias)
                self._acked(action, requests)
                h.quiet_ipv6(action.name)
            case A.CreateVxlan():
                requests = self.host.batch()
                requests.create_vxlan(action, action.name, vni=action.vni, local=action.local, port=action.port,
                                      bridge=action.bridge, group=action.link_group)
                requests.mark_by_name(action, action.name, alias=action.alias)
                self._acked(action, requests)
                h.quiet_ipv6(action.name)
            case A.QuietIpv6():
                h.quiet_ipv6(action.link)
            case A.StartSwitch():
                p.start_switch(action, self._remember)
            case A.StopSwitch():
                p.stop_switch(action.name, action.proc)
            case A.ReplaceSwitch():
                p.stop_switch(action.stop.name, action.stop.proc)
                p.start_switch(action.start, self._remember)
            case A.EndSwitchLeftovers():
                p.end_leftovers("switch", action.name, action.recorded)
            case A.StartGuest():
                p.start_guest(action, self._remember)
            case A.StopGuest():
                p.stop_guest(action.name, action.proc)
            case A.ReplaceGuest():
                p.stop_guest(action.stop.name, action.stop.proc)
                p.start_guest(action.start, self._remember)
            case A.EndGuestLeftovers():
                p.end_leftovers("guest", action.name, action.recorded)
            case A.PlugNic():
                p.console(action.name, action.proc, f"config {action.nic.word}")
                if action.nic.hint:  # the guest's init reads it from its kernel log; the newline ends the record,
                    # since UML's mconsole log printks the text as it is and an open line is not logged yet
                    p.console(action.name, action.proc, f"log umlstate: {action.nic.hint}\n")
                self._remember(unit_of("guest", action.name), replace(action.proc, argv=action.line.argv))
            case A.LoadRuleset():
                self._loaded(h.load_ruleset(action))
            case A.DeleteRuleset():
                h.delete_ruleset(action)
            case A.UnplugNic():
                p.console(action.name, action.proc, f"remove {action.ifname}",
                          hint=f"; the guest must bring {action.ifname} down first (ip link set "
                               f"{action.ifname} down), then apply again")
                self._remember(unit_of("guest", action.name), replace(action.proc, argv=action.line.argv))
            case A.WriteSeed() | A.RewriteSeed():
                h.write_seed(action.path, action.seed.files, action.user)
                self.seeds[action.name] = SeedRecord(action.path, action.seed.digest, action.user)
            case A.DeleteSeed():
                h.delete_seed(action.path)
                self.seeds[action.name] = None
            case _:
                assert_never(action)

    def _acked(self, action: A.AnyAction, requests: netlink.Batch) -> None:
        for _label, code in self.host.send(requests):
            if code:
                raise ActionError(f"{action.detail}: {os.strerror(code)}")

    def _send_now(self, action: Batchable) -> None:
        """One request, acked before the next step (a replaced tap's name must be free first)."""
        requests = self.host.batch()
        if isinstance(action, A.CreateTap):
            self._make_tap(action, requests)
        else:
            self._queue(action, requests)
        for _label, code in self.host.send(requests):
            if code:
                raise ActionError(f"{action.detail}: {os.strerror(code)}")
        if isinstance(action, A.AddProxy):
            self._announce([action])

    @staticmethod
    def _queue(action: Batchable, requests: netlink.Batch) -> None:
        """One request for a netlink action (a CreateTap's ioctls run before, in _make_tap)."""
        match action:
            case A.MarkTap():
                requests.set_link(action, action.name, alias=action.alias, group=action.link_group)
            case A.SetLinkUp() | A.SetBridgeUp():
                requests.set_link(action, action.name, up=True)
            case A.DeleteTap() | A.DeleteBridge() | A.DeleteVxlan():
                requests.delete_link(action, action.name)
            case A.SetBridgeMac():
                requests.set_mac(action, action.name, action.mac)
            case A.LimitFdb():
                requests.limit_fdb(action, action.name, A.BRIDGE_FDB_MAX)
            case A.AddFdb() | A.RemoveFdb():
                requests.fdb(action, action.vxlan, action.mac, action.remote, add=isinstance(action, A.AddFdb))
            case A.Enslave():
                requests.enslave(action, action.name, action.bridge)
            case A.AddAddress() | A.RemoveAddress():
                requests.address(action, action.ifname, action.address, add=isinstance(action, A.AddAddress))
            case A.AddProxy() | A.RemoveProxy():
                requests.proxy(action, action.uplink, action.address, add=isinstance(action, A.AddProxy))
            case A.AddRoute() | A.RemoveRoute():
                requests.route(action, action.to, action.via, add=isinstance(action, A.AddRoute))
            case A.CreateTap():
                raise AssertionError("CreateTap goes through _make_tap")
            case _:
                assert_never(action)

def preflight_failures(plan: Plan) -> list[tuple[str, str]]:
    """The guests the plan does not start because of their own errors, as failures of the pass."""
    return [(f"guest {f.target}", f"not started: {f.problem}" + (f"\n  to fix: {f.fix}" if f.fix else ""))
            for f in plan.guest_blockers]


def _union(a: Records, b: Records, pending_taps: set[str]) -> Records:
    """Everything either records, so that a crash in the middle never forgets what exists."""
    return replace(
        b,
        sysctl_originals={**b.sysctl_originals, **a.sysctl_originals},
        proxies=a.proxies | b.proxies,
        routes=a.routes | b.routes,
        groups_created=a.groups_created | b.groups_created,
        members_added=a.members_added | b.members_added,
        tun_created=a.tun_created or b.tun_created,
        tun_path=a.tun_path or b.tun_path,
        tun_original=a.tun_original or b.tun_original,
        pending_taps=a.pending_taps | pending_taps,
        boot_id=a.boot_id,
        processes={**b.processes, **a.processes},
        ruleset=b.ruleset or a.ruleset,
    )
