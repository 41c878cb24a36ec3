"""The one error hierarchy of umlstate; the CLI maps each class to an exit code.

Every error a user can meet carries a message that says what is wrong and what
to do. Anything else that escapes is a bug, and the CLI says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CHANGES = 2
EXIT_USAGE = 64
EXIT_INVALID = 65
EXIT_LOCKED = 75


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem in a topology file, at a position (1-based line and column)."""

    line: int
    column: int
    message: str
    file: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


@dataclass(frozen=True)
class Finding:
    """One thing the plan found about the host: an error that stops apply, a conflict, or a warning.

    The one shape for preflight errors, foreign objects in the way, warnings and
    host errors: what it concerns (a resource kind and target, or "host"), the
    problem, and what to do about it.
    """

    severity: Literal["error", "conflict", "warning"]
    kind: str
    target: str
    problem: str
    fix: str = ""
    adoptable: bool = False  # a conflict that `--adopt` resolves

    def __str__(self) -> str:
        return f"{self.problem}\n  to fix: {self.fix}" if self.fix else self.problem

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "target": self.target, "problem": self.problem, "fix": self.fix,
                **({"adoptable": self.adoptable} if self.severity == "conflict" else {})}


class UmlstateError(Exception):
    """Base of every error umlstate reports to its user."""

    exit_code = EXIT_FAILED


class UsageError(UmlstateError):
    """The command line does not say enough to run (no topology given, none found)."""

    exit_code = EXIT_USAGE


class TopologyError(UmlstateError):
    """The topology file is unreadable or invalid (user input)."""

    exit_code = EXIT_INVALID

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class HostError(UmlstateError):
    """The host lacks something the topology needs: a program, user, netns, uplink."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  to fix: {fix}" if fix else problem)


class PreflightError(UmlstateError):
    """Several host problems found before any change; nothing was changed."""

    def __init__(self, problems: list[Finding]) -> None:
        self.problems = problems
        lines = ["nothing was changed; the host is not ready:"]
        lines += [f"  - {p}".replace("\n", "\n    ") for p in problems]
        super().__init__("\n".join(lines))


class ActionError(UmlstateError):
    """One action of a plan failed while applying it."""


class BackingOff(ActionError):
    """The pass did all it could, but guests in a crash loop wait for their backoff to end (exit 1).

    ``until``: the earliest end, seconds since the epoch; ``outcome``: the pass (reconcile.Outcome)."""

    def __init__(self, message: str, until: float, outcome: object) -> None:
        super().__init__(message)
        self.until, self.outcome = until, outcome


class VerificationError(UmlstateError):
    """After apply, the host still differs from the topology."""


class ConflictError(UmlstateError):
    """Foreign objects stand where the topology wants its own."""


class LockBusy(UmlstateError):
    """Another umlstate run holds the topology's lock."""

    exit_code = EXIT_LOCKED


class StalePlanError(UmlstateError):
    """A saved plan no longer matches the host it is applied to."""


class InternalError(UmlstateError):
    """A broken invariant inside umlstate: always a bug."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"internal error: {what}\n"
            "  this is a bug in umlstate; please report it with the command you ran and -v output"
        )
