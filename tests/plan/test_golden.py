"""Golden plans: one folder per scenario, one parametrized runner for them all.

fixtures/cases/<scenario>/ holds topology.yaml, observed.json (a snapshot; see cases.py for the policy),
optional options.json ({"adopt": true} / {"destroy": true} / {"host": "beta"}), and the expected
plan as text (plan.txt) and as `plan --json` prints it (plan.json). A missing
golden fails; UPDATE_GOLDEN=1 writes them all anew: review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from umlstate.cli.render import dumps, plan_json, plan_text
from umlstate.plan.planner import plan

from cases import CASES, load_case


def test_there_are_enough_scenarios() -> None:
    assert len(CASES) >= 12


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_plan_matches_golden(case: Path) -> None:
    """options.json: {"adopt": true}, {"destroy": true}, {"host": "beta"} (that host's slice of a farm)."""
    placement, observed, options = load_case(case)
    planned = plan(placement.topology, observed, stretches=placement.stretches, **options)
    as_json = {**plan_json(planned), "fingerprint": "(of observed.json: changes with the snapshot's format)"}
    for golden, text in ((case / "plan.txt", plan_text(planned)), (case / "plan.json", dumps(as_json))):
        if os.environ.get("UPDATE_GOLDEN"):
            golden.write_text(text)
        assert golden.exists(), f"{golden} is missing: run UPDATE_GOLDEN=1 pytest {__file__} and review it"
        assert text == golden.read_text()


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_applying_the_plan_then_planning_again_is_empty(case: Path) -> None:
    placement, observed, options = load_case(case)
    topology = placement.topology
    first = plan(topology, observed, stretches=placement.stretches, **options)
    if first.blockers or (first.conflicts and not options.get("adopt")):
        pytest.skip("apply refuses this plan")
    simulated = observed
    for action in first.actions:
        simulated = action.simulate(simulated)
    assert plan(topology, simulated, destroy=bool(options.get("destroy")), stretches=placement.stretches).actions == ()
