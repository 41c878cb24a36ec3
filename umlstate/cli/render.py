"""Plans and status as people and programs read them: text and JSON.

The last stage before the terminal. Text follows Terraform's conventions
(`+` create, `~` update, `-` delete, `-/+` replace, one reason per line, a
"Plan: ..." summary); JSON follows SPEC (format_version 1). Colour only when
asked (the CLI asks on a TTY).
"""

from __future__ import annotations

import json
from typing import Any

from umlstate.plan.result import Plan
from umlstate.plan.status import Row, backing_off

FORMAT_VERSION = 1
SYMBOLS = {"create": "+", "update": "~", "delete": "-", "replace": "-/+"}
COLOURS = {"create": "32", "update": "33", "delete": "31", "replace": "35"}


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour else text


def _problems(plan: Plan, colour: bool, *, conflicts: bool = True) -> list[str]:
    """A plan's errors, conflicts and warnings, one paragraph each, then a blank line."""
    lines = [_paint("error: ", "31;1", colour) + str(blocker) for blocker in plan.blockers]
    if conflicts:
        lines += [_paint("conflict: ", "31;1", colour) + f"{c.kind} {c.target}: {c}" for c in plan.conflicts]
    lines += [_paint("warning: ", "33;1", colour) + str(warning) for warning in plan.warnings]
    return [*lines, ""] if lines else []


def plan_text(plan: Plan, *, colour: bool = False) -> str:
    where = f" in network namespace {plan.netns}" if plan.netns else ""
    lines = _problems(plan, colour)
    held = [f"Guest {name} stays down: `umlstate stop` holds it until `umlstate start {name}`."
            for name in plan.held]
    held += [f"Guest {b.guest} keeps dying soon after it starts: {backing_off(b)}." for b in plan.backoff]
    if not plan.actions:
        if not plan.conflicts and not plan.blockers:
            lines.append(f"No changes. The host{where} matches topology {plan.topology}.")
            lines += held
        return "\n".join(lines) + "\n"
    verb = "destroy" if plan.mode == "destroy" else "apply"
    lines.append(f"umlstate will {verb} topology {plan.topology}{where}:")
    lines.append("")
    width = max(len(f"{a.kind} {a.target}") for a in plan.actions)
    for action in plan.actions:
        symbol = _paint(f"{SYMBOLS[action.op]:>3}", COLOURS[action.op], colour)
        head = f"{action.kind} {action.target}".ljust(width)
        lines.append(f"{symbol} {head}  {action.detail}  # {action.reason}")
    s = plan.summary
    lines.append("")
    lines.append(f"Plan: {s['add']} to add, {s['change']} to change, {s['destroy']} to destroy.")
    lines += held
    return "\n".join(lines) + "\n"


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "topology": plan.topology,
        "netns": plan.netns,
        "mode": plan.mode,
        "fingerprint": plan.fingerprint,
        "actions": [a.to_json() for a in plan.actions],
        "conflicts": [c.to_json() for c in plan.conflicts],
        "errors": [f.to_json() for f in plan.blockers],
        "warnings": [f.to_json() for f in plan.warnings],
        "summary": plan.summary,
    }


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


STATE_COLOURS = {"ok": "32", "missing": "33", "drifted": "33", "conflict": "31", "panicked": "31", "hung": "31",
                 "failed": "31"}


def status_text(rows: list[Row], plan: Plan, *, colour: bool = False) -> str:
    """The table, then what the plan found that no row can say (conflicts already have their rows)."""
    problems = _problems(plan, colour, conflicts=False)
    if not rows:
        return "\n".join(["The topology declares no resources.", *(["", *problems[:-1]] if problems else [])]) + "\n"
    kind_w = max(len(r.kind) for r in rows)
    target_w = max(len(r.target) for r in rows)
    lines = []
    for r in rows:
        state = _paint(f"{r.state:<8}", STATE_COLOURS[r.state], colour)
        lines.append(f"{r.kind:<{kind_w}}  {r.target:<{target_w}}  {state}  {r.detail}".rstrip())
        lines += [f"{'':<{kind_w}}  {'':<{target_w}}  | {line}" for line in r.log]
    bad = sum(r.state != "ok" for r in rows)
    lines.append("")
    lines.append(f"{len(rows) - bad} of {len(rows)} resources ok." if bad else f"All {len(rows)} resources ok.")
    if problems:
        lines += ["", *problems[:-1]]
    return "\n".join(lines) + "\n"
