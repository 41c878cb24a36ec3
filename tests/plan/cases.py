"""The golden scenarios' inputs, read one way for every runner (plans, status).

fixtures/cases/<scenario>/: topology.yaml, observed.json, optional options.json.
A scenario about something else than the traffic policy leaves "ruleset" out of
its observed.json: the policy is then taken as loaded as the topology wants it,
so the scenario's plan shows only its own subject. One that is about the policy
says what nftables holds (``"ruleset": {}``: nothing loaded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from umlstate.model.placement import Placement, place
from umlstate.model.snapshot import Snapshot, from_json
from umlstate.plan import actions as A
from umlstate.plan.ruleset import inputs_of, render

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CASES = sorted(p for p in (FIXTURES / "cases").iterdir() if p.is_dir())


def load_case(case: Path) -> tuple[Placement, Snapshot, dict[str, Any]]:
    """This host's slice, the observed snapshot, and the plan's options (adopt, destroy)."""
    from umlstate.model.loader import load_file

    options = json.loads((case / "options.json").read_text()) if (case / "options.json").exists() else {}
    placement = place(load_file(case / "topology.yaml"), options.pop("host", None))
    data = json.loads((case / "observed.json").read_text())
    observed = from_json(data)
    if "ruleset" not in data:
        observed = policy_loaded(placement, observed)
    return placement, observed, options


def policy_loaded(placement: Placement, s: Snapshot) -> Snapshot:
    """The snapshot with the topology's policy loaded and recorded, as an apply leaves it."""
    want = render(placement.topology, placement.stretches)
    if want is None:
        return s
    t = placement.topology
    return A.LoadRuleset("", t.table, want.tables, want.document, want.digest, want.summary, want.groups,
                         inputs_of(t, placement.stretches), want.ports).simulate(s)
