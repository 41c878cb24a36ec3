"""Actions on processes: switches and guests started, stopped, replaced, and what a dead run left."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from umlstate.model.guestline import GuestLine, Nic
from umlstate.model.snapshot import GuestState, Proc, Snapshot, SwitchState
from umlstate.plan import cmdline
from umlstate.plan.actions.base import Action, Kind, Op, _Named

# --- switches and guests -------------------------------------------------------------


@dataclass(frozen=True)
class StartSwitch(_Named, Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "switch"
    name: str
    argv: tuple[str, ...]
    user: str
    socket: str
    tap: str | None
    holds_stdin: bool = False  # vde_switch: a stdin that never ends keeps it in the foreground

    @property
    def detail(self) -> str:
        return f"start as {self.user}: {' '.join(self.argv)}"

    def simulate(self, s: Snapshot) -> Snapshot:
        proc = Proc(0, s.uid(self.user) or 0, self.argv, 0.0)
        s = _carrier(s, self.tap, True)
        return replace(s, switches={**s.switches, self.name: SwitchState(proc, socket_exists=True)})


@dataclass(frozen=True)
class StopSwitch(_Named, Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "switch"
    name: str
    proc: Proc

    @property
    def detail(self) -> str:
        return f"stop pid {self.proc.pid} (SIGTERM) and whatever else runs in its cgroup"

    def simulate(self, s: Snapshot) -> Snapshot:
        s = _carrier(s, cmdline.tap_in(self.proc.argv), False)
        return replace(s, switches={**s.switches, self.name: SwitchState(None)})


@dataclass(frozen=True)
class ReplaceSwitch(Action):
    op: ClassVar[Op] = "replace"
    kind: ClassVar[Kind] = "switch"
    stop: StopSwitch
    start: StartSwitch

    @property
    def target(self) -> str:
        return self.start.name

    @property
    def detail(self) -> str:
        return argv_diff(self.stop.proc.argv, self.start.argv)

    def simulate(self, s: Snapshot) -> Snapshot:
        return self.start.simulate(self.stop.simulate(s))


@dataclass(frozen=True)
class StartGuest(_Named, Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "guest"
    name: str
    line: GuestLine
    user: str
    cow: str | None
    base: str | None
    crashes: int = 0  # times in a row its runs died soon after starting: recorded, so the next backoff grows
    # Where the host can see it answer once it is up: its addresses on subnets the host is on or routes to.
    # None: all it was told; empty: nowhere, so ready is its own report (a lab subnet without the host).
    answer_at: tuple[str, ...] | None = None

    @property
    def argv(self) -> tuple[str, ...]:
        return self.line.argv

    @property
    def detail(self) -> str:
        return f"boot as {self.user}: {self.line.summary}"

    def simulate(self, s: Snapshot) -> Snapshot:
        proc = Proc(0, s.uid(self.user) or 0, self.argv, 0.0)
        crashes = {k: v for k, v in s.records.crashes.items() if k != self.name}
        if self.crashes:
            crashes[self.name] = self.crashes
        return replace(s, guests={**s.guests, self.name: GuestState(proc, answers=True)},
                       records=replace(s.records, crashes=crashes))


@dataclass(frozen=True)
class StopGuest(_Named, Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "guest"
    name: str
    proc: Proc

    @property
    def detail(self) -> str:
        return f"stop pid {self.proc.pid}: mconsole cad, then halt, then signals; then all its processes"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, guests={**s.guests, self.name: GuestState(None)})


@dataclass(frozen=True)
class ReplaceGuest(Action):
    op: ClassVar[Op] = "replace"
    kind: ClassVar[Kind] = "guest"
    stop: StopGuest
    start: StartGuest

    @property
    def target(self) -> str:
        return self.start.name

    @property
    def detail(self) -> str:
        return argv_diff(self.stop.proc.argv, self.start.argv)

    def simulate(self, s: Snapshot) -> Snapshot:
        return self.start.simulate(self.stop.simulate(s))


@dataclass(frozen=True)
class EndSwitchLeftovers(_Named, Action):
    """Processes left in a dead switch's cgroup: ended before it starts again."""

    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "switch"
    name: str
    count: int
    recorded: Proc | None = None  # its dead run, where no cgroup holds the leftovers: its session does

    @property
    def detail(self) -> str:
        return f"end the {self.count} process(es) its dead run left in its cgroup"

    def simulate(self, s: Snapshot) -> Snapshot:
        state = s.switches.get(self.name, SwitchState(None))
        return replace(s, switches={**s.switches, self.name: replace(state, leftovers=0)})


@dataclass(frozen=True)
class EndGuestLeftovers(_Named, Action):
    """A guest whose main process died (SIGKILL, the OOM killer) while its helpers live on, holding its COW file."""

    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "guest"
    name: str
    count: int
    recorded: Proc | None = None  # its dead run, where no cgroup holds the leftovers: its session does

    @property
    def detail(self) -> str:
        return f"end the {self.count} helper process(es) of its dead run, which hold its disk"

    def simulate(self, s: Snapshot) -> Snapshot:
        state = s.guests.get(self.name, GuestState(None))
        return replace(s, guests={**s.guests, self.name: replace(state, leftovers=0)})


@dataclass(frozen=True)
class PlugNic(_Named, Action):
    """A NIC added to a running guest, plugged in live through mconsole instead of a restart.

    ``config vecN:transport=tap,...`` makes the device; ``log umlstate.vecN=ADDR/PFX``
    tells the guest its address through its kernel log, where its init watches for it
    (the command line, read at boot, cannot change). The record then carries the
    command line a boot would have, so the next plan sees nothing to do.
    """

    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "guest"
    name: str
    proc: Proc
    nic: Nic  # vecN:transport=tap,ifname=TAP,mac=MAC, told umlstate.vecN=ADDR/PFX
    line: GuestLine  # the guest's command line with this NIC

    @property
    def detail(self) -> str:
        return f"plug {self.nic.summary} live (mconsole config), no restart"

    def simulate(self, s: Snapshot) -> Snapshot:
        return _with_argv(s, self.name, self.line.argv)


@dataclass(frozen=True)
class UnplugNic(_Named, Action):
    """The last NICs of a running guest taken out live (mconsole remove), once the guest brought them down."""

    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "guest"
    name: str
    proc: Proc
    ifname: str
    line: GuestLine  # the guest's command line without this NIC

    @property
    def detail(self) -> str:
        return f"unplug {self.ifname} live (mconsole remove), no restart"

    def simulate(self, s: Snapshot) -> Snapshot:
        return _with_argv(s, self.name, self.line.argv)


def _with_argv(s: Snapshot, name: str, argv: tuple[str, ...]) -> Snapshot:
    state = s.guests[name]
    assert state.proc is not None
    return replace(s, guests={**s.guests, name: replace(state, proc=replace(state.proc, argv=argv))})


def argv_diff(old: tuple[str, ...], new: tuple[str, ...]) -> str:
    """The words that differ, as -old +new: what a replace changes."""
    removed = [w for w in old if w not in new]
    added = [w for w in new if w not in old]
    if not removed and not added:
        return "same command line, restarted"
    return " ".join([*(f"-{w}" for w in removed), *(f"+{w}" for w in added)])


def _carrier(s: Snapshot, tap: str | None, on: bool) -> Snapshot:
    if tap is None or tap not in s.links:
        return s
    return replace(s, links={**s.links, tap: replace(s.links[tap], carrier=on)})
