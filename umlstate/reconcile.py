"""The reconcile service: observe, plan, apply, verify, as one typed call.

The application layer between the commands and the pipeline. The CLI (plan,
apply, destroy, status, start, stop) and ``watch`` both call it, so a pass
from cron, from a person and from the watcher is the same pass. It enters
the namespace, takes the topology's lock, refuses plans with errors or
conflicts before any change, carries the plan out, then observes and plans
again: anything left is a verification error (nmstate's verify). It prints
nothing: what to show and how is the caller's; confirmation is a callback.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import structlog

from umlstate.apply.boot import BOOT_TIMEOUT
from umlstate.apply.executor import STOP_TIMEOUT, ApplyFailed, Executor, preflight_failures
from umlstate.errors import (
    BackingOff,
    ConflictError,
    HostError,
    PreflightError,
    StalePlanError,
    VerificationError,
)
from umlstate.host import console, folders, identity, logs, mconsole, processes, records, trusted
from umlstate.host import netns as netns_mod
from umlstate.host.lock import TopologyLock
from umlstate.host.netlink import Netlink
from umlstate.model.placement import Stretch
from umlstate.model.snapshot import Snapshot, unit_of
from umlstate.model.topology import Topology
from umlstate.observe.observe import observe
from umlstate.plan import checks
from umlstate.plan.actions import PRIVILEGE, Action, Kind
from umlstate.plan.checks import CheckResult
from umlstate.plan.planner import plan
from umlstate.plan.result import Plan
from umlstate.plan.status import backing_off

CHECK_TIMEOUT = 40.0  # seconds the guests have to run their checks and report (each ping waits a second)
log = structlog.get_logger("umlstate")

Confirm = Callable[[Plan], None]  # shows the plan and raises to cancel; called only when there are changes


@dataclass(frozen=True)
class Outcome:
    """What one pass did: the plan it carried out, the actions done, the host as it ended."""

    plan: Plan
    done: tuple[Action, ...]
    seconds: float
    after: Snapshot

    @property
    def changed(self) -> bool:
        return bool(self.done)


@dataclass(frozen=True)
class Settings:
    netns: str | None = None
    lock_timeout: float = 60.0
    progress: bool = False  # a live line on the terminal while guests boot
    command_line: str = ""  # how the user ran us, for the `sudo ...` hint of a run without root
    wait: bool = True  # apply waits until started guests answer at their addresses (--no-wait: booted is enough)
    wait_timeout: float = BOOT_TIMEOUT
    stop_timeout: float = STOP_TIMEOUT  # how long a guest's own shutdown may take after mconsole cad
    crash_after: int | None = None  # tests only: the executor dies like kill -9 after this many actions

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], **given: Any) -> Settings:
        """The settings the environment may give, read once here: $UMLSTATE_BOOT_TIMEOUT, $UMLSTATE_STOP_TIMEOUT,
        and the tests' $UMLSTATE_TEST_CRASH_AFTER; what is ``given`` (the command line) wins."""
        read: dict[str, Any] = {}
        for key, name, kind in (("wait_timeout", "UMLSTATE_BOOT_TIMEOUT", float),
                                ("stop_timeout", "UMLSTATE_STOP_TIMEOUT", float),
                                ("crash_after", "UMLSTATE_TEST_CRASH_AFTER", int)):
            if environ.get(name):
                try:
                    read[key] = kind(environ[name])
                except ValueError:
                    raise HostError(f"${name} is {environ[name]!r}, not a number") from None
        return cls(**{**read, **{k: v for k, v in given.items() if v is not None}})


class Reconciler:
    """One topology on one host (or namespace): every pass of every command goes through here."""

    def __init__(self, topology: Topology, settings: Settings, stretches: Mapping[str, Stretch] | None = None) -> None:
        """``topology``: this host's slice; ``stretches``: its bridges shared with other hosts (placement)."""
        self.topology = topology
        self.settings = settings
        self.stretches = dict(stretches or {})
        if os.geteuid() == 0:
            folders.check_trusted(topology)  # before anything is read from state_dir or done in run_dir
        if settings.netns:
            netns_mod.enter(settings.netns)
        self.netlink = Netlink()

    def observe(self) -> Snapshot:
        return observe(self.topology, self.netlink, self.settings.netns)

    def plan(self, *, adopt: bool = False, destroy: bool = False) -> tuple[Snapshot, Plan]:
        snapshot = self.observe()
        return snapshot, plan(self.topology, snapshot, adopt=adopt, destroy=destroy, stretches=self.stretches)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with TopologyLock(self.topology.state_dir, self.settings.lock_timeout):
            yield

    def converge(self, *, confirm: Confirm | None = None, adopt: bool = False, destroy: bool = False,
                 fingerprint: str | None = None) -> Outcome:
        """One pass: plan, refuse what must not run, apply, verify.

        ``fingerprint``: a saved plan's; the pass refuses a host that changed since.
        """
        if os.geteuid() != 0:
            # The lock and every change need root; an in-sync host needs neither.
            snapshot, p = self.plan(adopt=adopt, destroy=destroy)
            self._require_root("destroy" if destroy else "apply", p)
            return Outcome(p, (), 0.0, snapshot)
        with self.locked():
            snapshot, p = self.plan(adopt=adopt, destroy=destroy)
            self._cap_logs(snapshot)
            if fingerprint is not None and fingerprint != p.fingerprint:
                raise StalePlanError("the host changed since this plan was saved; run `umlstate plan --out` again")
            _refuse(p)
            if not p.actions:
                if p.guest_blockers:
                    raise ApplyFailed([], preflight_failures(p), [])
                log.debug("run", result="in sync", actions=0)
                self._note_generation(snapshot)
                return _settled(Outcome(p, (), 0.0, snapshot))
            if confirm is not None:
                confirm(p)
            cfg = self.settings
            result = Executor(self.topology, self.netlink, crash_after=cfg.crash_after, progress=cfg.progress,
                              wait=cfg.wait, wait_timeout=cfg.wait_timeout,
                              stop_timeout=cfg.stop_timeout).apply(p, snapshot)
            after, again = self.plan(destroy=destroy)
            if again.actions or again.conflicts:
                left = "\n".join(f"  {a.kind} {a.target}: wanted {a.detail}; observed: {a.reason}"
                                 for a in again.actions)
                raise VerificationError(f"applied {len(result.done)} action(s), but the host still differs "
                                        f"from the topology:\n{left}")
            s = p.summary
            log.info("run", result="converged", added=s["add"], changed=s["change"], destroyed=s["destroy"],
                     seconds=round(result.seconds, 3))
            return _settled(Outcome(p, tuple(result.done), result.seconds, after))

    def _note_generation(self, snapshot: Snapshot) -> None:
        """The policy was read in full and found as loaded, though something else changed nftables since (a
        table of its own): the generation of now is recorded, so the next passes need not read it again."""
        record, seen = snapshot.records.ruleset, snapshot.ruleset
        if record is not None and seen.generation and seen.generation != record.generation \
                and seen.listed == record.listed and seen.tables == record.tables:
            recs = records.load(self.topology.state_dir)
            if recs.ruleset == record:
                noted = replace(record, generation=seen.generation)
                records.save(self.topology.state_dir, replace(recs, ruleset=noted))

    def _cap_logs(self, snapshot: Snapshot) -> None:
        """Every root pass keeps the running processes' logs bounded (a guest may print without end)."""
        running = [n for n, st in snapshot.guests.items() if st.proc] + [n for n, st in snapshot.switches.items()
                                                                          if st.proc]
        if not running:
            return
        try:
            with trusted.open_trusted(f"{self.topology.state_dir}/{logs.LOGS_DIR}") as logs_dir:
                for name in running:
                    if logs.cap(logs_dir.fd, name):
                        log.info("log capped", process=name, kept=f"{name}.log.1")
        except (OSError, HostError) as exc:  # no logs folder yet, or one that is not root's: apply says so
            log.debug("logs not capped", error=str(exc))

    def check(self, timeout: float = CHECK_TIMEOUT) -> list[tuple[int, CheckResult | None]]:
        """Each guest that runs checks runs them now (asked through mconsole, whose socket root recorded); its
        results, each the guest's own line in its log, or None where none came within ``timeout``."""
        if os.geteuid() != 0:
            raise self._not_root("check", [f"checks: {PRIVILEGE['check']}"])
        snapshot = self.observe()
        asked: dict[str, str] = {}  # guest -> the nonce it alone was given
        for name in sorted({c.from_ for c in self.topology.checks}):
            state = snapshot.guests.get(name)
            path = processes.mconsole_path(state.proc, name) if state is not None and state.proc else None
            if state is None or state.proc is None or path is None:
                continue
            nonce = secrets.token_hex(4)
            with contextlib.suppress(mconsole.MconsoleError):  # a guest that does not take it reports nothing
                mconsole.command(path, "log " + checks.ASK.format(nonce=nonce), owner=state.proc.uid, timeout=5.0)
                asked[name] = nonce
        wanted = {n for n, c in enumerate(self.topology.checks) if c.from_ in asked}
        found: dict[int, CheckResult] = {}
        deadline = time.monotonic() + timeout
        while len(found) < len(wanted) and time.monotonic() < deadline:
            time.sleep(0.2)
            with trusted.open_trusted(f"{self.topology.state_dir}/{logs.LOGS_DIR}") as logs_dir:
                for name, nonce in asked.items():
                    said = checks.results(self.topology, name, logs.tail(logs_dir.fd, name))
                    found |= {n: r for n, r in said.items() if r.nonce == nonce}
        return [(n, found.get(n)) for n in range(len(self.topology.checks))]

    def hold(self, guest: str, held: bool) -> None:
        """Record that `umlstate stop` keeps ``guest`` down (or no longer does); under the lock."""
        recs = records.load(self.topology.state_dir)
        records.save(self.topology.state_dir,
                     replace(recs, held=recs.held | {guest} if held else recs.held - {guest}))

    def stop_guest(self, guest: str) -> bool:
        """Hold ``guest`` down and stop it cleanly; False when it was not running."""
        self.require_root_for_guest("stop", guest)
        with self.locked():
            state = self.observe().guests.get(guest)
            self.hold(guest, True)
            if state is None or state.proc is None:
                return False
            with Executor(self.topology, self.netlink, stop_timeout=self.settings.stop_timeout) as executor:
                executor.stop_guest(guest, state.proc)  # logs how it went
            return True

    def start_guest(self, guest: str) -> Outcome:
        """Lift the hold and any crash-loop backoff, then an ordinary apply pass, verified like any other."""
        self.require_root_for_guest("start", guest)
        with self.locked():
            self.hold(guest, False)
            state = self.observe().guests.get(guest)
            recs = records.load(self.topology.state_dir)
            forget = state is not None and state.proc is None and not state.leftovers  # its dead run: no backoff
            unit = unit_of("guest", guest)
            records.save(self.topology.state_dir, replace(
                recs, crashes={k: v for k, v in recs.crashes.items() if k != guest},
                processes={k: v for k, v in recs.processes.items() if not (forget and k == unit)}))
        return self.converge()

    def console(self, guest: str) -> tuple[int, str]:
        """A locked descriptor on ``guest``'s console and its path; raises ConsoleError. No topology lock:
        a session may last hours, while apply and watch go on (they never touch a running guest's console)."""
        if os.geteuid() != 0:
            raise HostError(f"`umlstate console` runs as root (it checks the guest's processes); as guest {guest}'s "
                            "own user, attach with any terminal program",
                            f"screen PATH, where PATH is the \"console\" of guest-{guest} in "
                            f"{records.path_of(self.topology.state_dir)}")
        snapshot = self.observe()
        state = snapshot.guests.get(guest)
        if state is None or state.proc is None:
            held = " (held down by `umlstate stop`)" if guest in snapshot.records.held else ""
            raise console.ConsoleError(f"guest {guest} is not running{held}; `umlstate start {guest}` starts it")
        proc = state.proc
        return console.open_recorded(proc.console, identity.identity_of(proc), guest), proc.console or ""

    def require_root_for_guest(self, command: str, guest: str) -> None:
        if os.geteuid() != 0:
            raise self._not_root(command, [f"guest {guest}: whether it stays down is recorded in "
                                           f"{self.topology.state_dir}, which is root's; {PRIVILEGE['guest']}"])

    def _require_root(self, command: str, p: Plan) -> None:
        """A plan's changes, grouped by kind, each with what it needs that this user lacks."""
        if not p.actions:
            return
        by_kind: dict[Kind, list[str]] = {}
        for a in p.actions:
            targets = by_kind.setdefault(a.kind, [])
            if a.target not in targets:
                targets.append(a.target)
        needs = []
        for kind, targets in by_kind.items():
            more = f" and {len(targets) - 1} more" if len(targets) > 1 else ""
            needs.append(f"{kind} {targets[0]}{more}: {PRIVILEGE[kind]}")
        raise self._not_root(command, needs)

    def _not_root(self, command: str, needs: list[str]) -> HostError:
        """Why ``command`` cannot run as this user, before it changes anything."""
        import pwd

        uid = os.geteuid()
        try:
            who = f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
        except KeyError:
            who = f"uid {uid}"
        return HostError(f"{command} must run as root, and this is {who}; nothing was changed.\n"
                         + "\n".join(f"  {line}" for line in needs),
                         f"sudo umlstate {self.settings.command_line or command}")


def _settled(outcome: Outcome) -> Outcome:
    """The outcome, unless guests in a crash loop still wait: then the pass did all it could, and says so."""
    waiting = outcome.plan.backoff
    if not waiting:
        return outcome
    lines = [f"  - guest {b.guest}: {backing_off(b)}" for b in waiting]
    raise BackingOff("guests keep dying soon after they start, and wait before the next try:\n"
                     + "\n".join(lines), min(b.until for b in waiting), outcome)


def _refuse(p: Plan) -> None:
    """Host-wide errors and conflicts stop a pass before its first change; one guest's errors stop that guest."""
    if p.host_blockers:  # every problem at once, the guests' own too
        raise PreflightError(list(p.blockers))
    if p.conflicts:
        lines = [f"  - {c.kind} {c.target}: {c.problem}; {c.fix}" for c in p.conflicts]
        hint = "rerun with --adopt to take over the adoptable ones" if any(c.adoptable for c in p.conflicts) \
            else "remove or rename them by hand"
        raise ConflictError("foreign objects stand where the topology wants its own; nothing was changed:\n"
                            + "\n".join(lines) + f"\n  {hint}")
