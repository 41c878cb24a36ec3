"""Golden plans: one folder per scenario, one parametrized runner for them all.

fixtures/cases/<scenario>/ holds topology.yaml, observed.json (a snapshot),
optional options.json ({"adopt": true} / {"destroy": true}) and plan.txt, the
expected plan text. UPDATE_GOLDEN=1 rewrites plan.txt; review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from umlstate.cli.render import plan_text
from umlstate.model.loader import load_file
from umlstate.model.snapshot import from_json
from umlstate.plan.planner import plan

CASES = sorted(p for p in (Path(__file__).parent.parent / "fixtures" / "cases").iterdir() if p.is_dir())


def test_there_are_enough_scenarios() -> None:
    assert len(CASES) >= 12


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_plan_matches_golden(case: Path) -> None:
    topology = load_file(case / "topology.yaml")
    observed = from_json(json.loads((case / "observed.json").read_text()))
    options = json.loads((case / "options.json").read_text()) if (case / "options.json").exists() else {}
    text = plan_text(plan(topology, observed, **options))
    golden = case / "plan.txt"
    if os.environ.get("UPDATE_GOLDEN") or not golden.exists():
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_applying_the_plan_then_planning_again_is_empty(case: Path) -> None:
    topology = load_file(case / "topology.yaml")
    observed = from_json(json.loads((case / "observed.json").read_text()))
    options = json.loads((case / "options.json").read_text()) if (case / "options.json").exists() else {}
    first = plan(topology, observed, **options)
    if first.blockers or (first.conflicts and not options.get("adopt")):
        pytest.skip("apply refuses this plan")
    simulated = observed
    for action in first.actions:
        simulated = action.simulate(simulated)
    assert plan(topology, simulated, destroy=bool(options.get("destroy"))).actions == ()
