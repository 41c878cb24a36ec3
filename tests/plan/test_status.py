"""`status` over the golden scenarios: one row per resource, and a state that agrees with the plan.

umlstate.plan.status builds its rows from the topology, the observed snapshot and the plan that
`apply` would run (fixtures/cases/<scenario>/: topology.yaml, observed.json; the plan is made
here, in apply mode, as `umlstate status` makes it). Checked for every scenario: each resource
has exactly one row, a row is ok only when the plan does nothing to it, whatever the plan does
shows in some row. Then single scenarios: converged (all ok), a killed switch and guest
(missing), a guest whose helpers outlived it (not ok), conflicts, pruned taps, held guests. The
text `umlstate status` prints for the converged host is pinned in fixtures/status/converged.txt:
a missing golden fails; UPDATE_GOLDEN=1 writes it anew: review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from umlstate.cli.render import status_text
from umlstate.model.snapshot import Snapshot
from umlstate.model.topology import Topology
from umlstate.plan.planner import plan
from umlstate.plan.result import Plan
from umlstate.plan.status import Row, status

from cases import load_case

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CASES = sorted(p for p in (FIXTURES / "cases").iterdir() if p.is_dir())
STARTED = 1.0  # when the fixtures' processes started (observed.json)
NOW = STARTED + 3 * 3600 + 60  # a fixed clock: uptimes read "3h"


def scenario(name: str | Path) -> tuple[Topology, Snapshot, Plan, list[Row]]:
    placement, observed, _options = load_case(FIXTURES / "cases" / name)
    topology = placement.topology
    planned = plan(topology, observed, stretches=placement.stretches)
    return topology, observed, planned, status(topology, observed, planned, now=NOW)


def states(rows: list[Row]) -> dict[tuple[str, str], str]:
    return {(r.kind, r.target): r.state for r in rows}


# --- every scenario -------------------------------------------------------------------------------


def test_there_are_scenarios_to_check() -> None:
    assert len(CASES) >= 12


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_every_resource_has_exactly_one_row(case: Path) -> None:
    _t, _s, _p, rows = scenario(case)
    counts = Counter((r.kind, r.target) for r in rows)
    assert rows, "a topology with resources gives rows"
    assert [key for key, n in counts.items() if n > 1] == []


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_a_row_is_ok_only_when_the_plan_does_nothing_to_it(case: Path) -> None:
    _t, _s, planned, rows = scenario(case)
    acted = {(a.kind, a.target) for a in planned.actions}
    conflicted = {(c.kind, c.target) for c in planned.conflicts}
    for row in rows:
        touched = (row.kind, row.target) in acted | conflicted
        if touched:
            assert row.state != "ok", row
        elif row.kind == "check":  # a check's result is its guest's report, not something apply makes
            assert row.state == "ok" or row.detail, row
        elif row.state != "ok":  # untouched yet not ok: a process the plan cannot start (its errors say why),
            # or a guest in a crash loop that waits for its backoff to end
            backing_off = row.kind == "guest" and row.target in {b.guest for b in planned.backoff}
            assert (backing_off and "backing off until" in row.detail) or (
                row.kind in ("switch", "guest") and planned.blockers and "cannot start" in row.detail), row


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_whatever_the_plan_does_shows_in_a_row_with_its_reason(case: Path) -> None:
    _t, _s, planned, rows = scenario(case)
    by_key = {(r.kind, r.target): r for r in rows}
    for action in planned.actions:
        row = by_key.get((action.kind, action.target))
        assert row is not None, f"{action.kind} {action.target} is in the plan but not in status"
        assert row.state in ("missing", "drifted", "conflict", "panicked")
        if row.state != "conflict":
            assert action.reason in row.detail
    for action in planned.actions:
        if action.op == "create" and by_key[(action.kind, action.target)].state != "panicked" and (action.kind, action.target) not in {(c.kind, c.target)
                                                                          for c in planned.conflicts}:
            assert by_key[(action.kind, action.target)].state == "missing"


# A switch or guest the planner cannot start (program or kernel missing, a NIC the kernel cannot wire)
# has no action, but is not running: status must not call it ok.
PROCESS_CASES = CASES


@pytest.mark.parametrize("case", PROCESS_CASES, ids=lambda p: p.name)
def test_a_switch_or_guest_is_ok_only_while_it_runs(case: Path) -> None:
    """A process resource said to be ok has a live process in the snapshot (or is held down)."""
    _t, observed, _p, rows = scenario(case)
    for row in rows:
        if row.state != "ok" or row.kind not in ("switch", "guest"):
            continue
        if row.kind == "guest" and row.target in observed.records.held:
            continue
        running = observed.switches if row.kind == "switch" else observed.guests
        state = running.get(row.target)
        assert state is not None and state.proc is not None, f"{row.kind} {row.target} is ok but not running"


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_rows_serialise_as_spec_says(case: Path) -> None:
    _t, _s, _p, rows = scenario(case)
    for row in rows:
        log = {"log": list(row.log)} if row.log else {}  # a panicked guest's last lines, beside SPEC's four keys
        assert row.to_json() == {"kind": row.kind, "target": row.target, "state": row.state, "detail": row.detail,
                                 **log}
        json.dumps(row.to_json())


# --- single scenarios -------------------------------------------------------------------------------


def test_a_converged_host_is_all_ok_and_lists_every_declared_resource() -> None:
    topology, _s, planned, rows = scenario("converged")
    assert planned.actions == () and not planned.blockers
    assert {r.state for r in rows} == {"ok"}
    assert Counter(r.kind for r in rows) == {
        "tun-device": 1, "group": len(topology.host.groups), "sysctl": len(topology.host.sysctl),
        "tap": len(topology.taps), "address": 2, "proxy-neigh": 2, "switch": len(topology.switches),
        "guest": len(topology.guests), "ruleset": 1}
    details = {(r.kind, r.target): r.detail for r in rows}
    assert details[("tap", "uml0")] == "owner dupont, up"
    assert details[("group", "umlusers")] == "members dupont"
    assert details[("sysctl", "net.ipv4.ip_forward")] == "= 1"
    assert "up 3h" in details[("guest", "web")] and "128M" in details[("guest", "web")]


def test_a_killed_switch_and_guest_are_missing_and_the_guests_on_the_switch_drift() -> None:
    _t, _s, _p, rows = scenario("switch-and-guest-killed")
    found = states(rows)
    assert found[("guest", "web")] == "missing"
    assert found[("switch", "sw0")] == "missing"
    assert found[("guest", "db")] == "drifted"  # still running, but restarted with its switch
    assert {state for (kind, _), state in found.items() if kind not in ("switch", "guest")} == {"ok"}


def test_a_guest_whose_helpers_outlived_it_is_not_ok_and_says_why() -> None:
    _t, _s, planned, rows = scenario("guest-main-dead-helpers-left")
    web = next(r for r in rows if (r.kind, r.target) == ("guest", "web"))
    assert web.state != "ok"
    assert web.state == "missing"  # it must be started again; first its helpers must go
    reasons = [a.reason for a in planned.actions if (a.kind, a.target) == ("guest", "web")]
    assert len(reasons) == 2 and web.detail == "; ".join(reasons)


def test_a_panicked_guest_says_so_with_the_end_of_its_log_and_is_started_again() -> None:
    _t, observed, planned, rows = scenario("guest-panicked")
    db = next(r for r in rows if (r.kind, r.target) == ("guest", "db"))
    assert db.state == "panicked"
    assert "Kernel panic - not syncing: Attempted to kill init!" in db.detail
    assert db.log == observed.guests["db"].last_lines and db.log[-1].startswith("Kernel panic")
    assert [(a.op, a.kind, a.target) for a in planned.actions] == [("create", "guest", "db")]
    assert {r.state for r in rows if r is not db} == {"ok"}


def test_a_running_guest_whose_mconsole_stays_silent_is_hung_only_after_its_boot() -> None:
    topology, observed, planned, _rows = scenario("converged")
    silent = dataclasses.replace(observed, guests={**observed.guests, "web": dataclasses.replace(
        observed.guests["web"], answers=False)})
    booting = {(r.kind, r.target): r for r in status(topology, silent, planned, now=STARTED + 5)}
    assert booting[("guest", "web")].state == "ok"
    assert "mconsole not answering yet" in booting[("guest", "web")].detail
    later = {(r.kind, r.target): r for r in status(topology, silent, planned, now=NOW)}
    assert later[("guest", "web")].state == "hung"
    assert later[("guest", "db")].state == "ok"


def test_a_foreign_tap_in_the_way_is_a_conflict_with_its_fix() -> None:
    _t, _s, planned, rows = scenario("foreign-tap-conflict")
    uml1 = next(r for r in rows if (r.kind, r.target) == ("tap", "uml1"))
    conflict = next(c for c in planned.conflicts if c.target == "uml1")
    assert uml1.state == "conflict"
    assert uml1.detail == f"{conflict.problem}; {conflict.fix}"


def test_an_owned_tap_the_topology_no_longer_wants_is_listed_as_drifted() -> None:
    topology, _s, _p, rows = scenario("tap-pruned")
    extra = [r for r in rows if r.kind == "tap" and r.target not in {tap.name for tap in topology.taps}]
    assert [(r.target, r.state) for r in extra] == [("uml9", "drifted")]


def test_a_held_guest_is_ok_and_says_it_is_held() -> None:
    _t, _s, _p, rows = scenario("guest-held")
    held = [r for r in rows if r.kind == "guest" and "held down by `umlstate stop`" in r.detail]
    assert held and all(r.state == "ok" for r in held)


# --- what `umlstate status` prints -----------------------------------------------------------------


def test_status_text_of_the_converged_host_matches_its_golden() -> None:
    _t, _s, planned, rows = scenario("converged")
    text = status_text(rows, planned)
    golden = FIXTURES / "status" / "converged.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"{golden} is missing: run UPDATE_GOLDEN=1 pytest {__file__} and review it"
    assert text == golden.read_text()
    assert text.endswith(f"All {len(rows)} resources ok.\n")
    assert "\x1b[" not in text
