"""What the planner returns (Plan) and what it builds it with (Builder).

Pure, in the plan layer. The Builder keeps the working snapshot: every action
is simulated on it as soon as it is chosen, so later steps see the host as
the earlier actions will leave it. Findings (errors, conflicts, warnings)
are collected beside the actions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

from umlstate.errors import Finding
from umlstate.model.snapshot import Snapshot
from umlstate.plan import actions as A


@dataclass(frozen=True)
class Backoff:
    """A guest in a crash loop, left down until ``until`` (seconds since the epoch), like CrashLoopBackOff."""

    guest: str
    until: float
    crashes: int


@dataclass(frozen=True)
class Plan:
    topology: str
    netns: str | None
    actions: tuple[A.AnyAction, ...]
    conflicts: tuple[Finding, ...] = ()  # foreign objects where the topology wants its own
    blockers: tuple[Finding, ...] = ()  # host problems found in preflight: nothing may run
    warnings: tuple[Finding, ...] = ()
    given_fingerprint: str = ""  # tests: a fingerprint without an observation
    mode: Literal["apply", "destroy"] = "apply"
    held: tuple[str, ...] = ()  # guests `umlstate stop` keeps down: the plan leaves them so
    backoff: tuple[Backoff, ...] = ()  # guests that keep dying soon after they start: restarted later
    observed: Snapshot | None = field(default=None, compare=False, repr=False)  # what the plan was made from
    expected: Snapshot | None = field(default=None, compare=False, repr=False)  # `observed` after the actions

    @functools.cached_property
    def fingerprint(self) -> str:
        """The observed host's digest, which a saved plan carries: made only when asked (a thousand taps' snapshot
        takes a third of a second to serialize, and a quiet pass never needs it)."""
        return self.observed.fingerprint() if self.observed is not None else self.given_fingerprint

    @property
    def summary(self) -> dict[str, int]:
        ops = [a.op for a in self.actions]
        return {
            "add": ops.count("create") + ops.count("replace"),
            "change": ops.count("update"),
            "destroy": ops.count("delete") + ops.count("replace"),
        }

    @property
    def host_blockers(self) -> tuple[Finding, ...]:
        """Errors that stop the whole pass (the tun device, a user, a program): nothing may run."""
        return tuple(f for f in self.blockers if f.kind != "guest")

    @property
    def guest_blockers(self) -> tuple[Finding, ...]:
        """Errors of one guest (its kernel, disk, COW file, NICs): that guest is not started, the rest goes on."""
        return tuple(f for f in self.blockers if f.kind == "guest")

    @property
    def in_sync(self) -> bool:
        return not self.actions and not self.conflicts and not self.blockers


@dataclass
class Builder:
    origin: Snapshot
    s: Snapshot
    actions: list[A.AnyAction] = field(default_factory=list)
    restarted_switches: set[str] = field(default_factory=set)
    conflicts: list[Finding] = field(default_factory=list)
    blockers: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    backoff: list[Backoff] = field(default_factory=list)

    def add(self, action: A.AnyAction) -> None:
        self.actions.append(action)
        self.s = action.simulate(self.s)

    def error(self, kind: str, target: str, problem: str, fix: str = "") -> None:
        self.blockers.append(Finding("error", kind, target, problem, fix))

    def warn(self, kind: str, target: str, problem: str, fix: str = "") -> None:
        self.warnings.append(Finding("warning", kind, target, problem, fix))

    def conflict(self, kind: A.Kind, target: str, problem: str, fix: str, *, adoptable: bool) -> None:
        self.conflicts.append(Finding("conflict", kind, target, problem, fix, adoptable))
