"""The plan's edges (umlstate.plan.graph): what a failure stops, on the golden scenarios, without root."""

from __future__ import annotations

from umlstate.plan import actions as A
from umlstate.plan import graph
from umlstate.plan.planner import plan

from cases import FIXTURES, load_case


def test_every_need_is_provided_by_an_earlier_action_or_already_there() -> None:
    """The order is one the edges allow: no action needs what only a later one provides."""
    for name in ("empty-host", "bridge-empty-host", "hosts-beta-from-nothing"):
        placement, observed, options = load_case(FIXTURES / "cases" / name)
        actions = plan(placement.topology, observed, stretches=placement.stretches, **options).actions
        everything = set().union(*(graph.provides(a) for a in actions))
        earlier: set[str] = set()
        for action in actions:
            assert graph.needs(action, placement.topology) & everything <= earlier, (name, action)
            earlier |= graph.provides(action)


def test_a_guest_needs_its_own_links_and_switches_and_the_policy_and_nothing_of_its_neighbours() -> None:
    placement, observed, _ = load_case(FIXTURES / "cases" / "bridge-empty-host")
    t = placement.topology
    starts = [a for a in plan(t, observed).actions if isinstance(a, A.StartGuest)]
    assert starts
    for start in starts:
        needs = graph.needs(start, t)
        assert graph.RULESET in needs
        own = {f"link:{nt.name}" for nt in t.nic_taps() if nt.guest == start.name}
        others = {f"link:{nt.name}" for nt in t.nic_taps() if nt.guest != start.name}
        assert own <= needs and not others & needs


def test_links_are_provided_by_whatever_makes_or_changes_them() -> None:
    placement, observed, _ = load_case(FIXTURES / "cases" / "bridge-empty-host")
    actions = plan(placement.topology, observed).actions
    taps = [a for a in actions if isinstance(a, A.CreateTap)]
    assert taps and all(f"link:{a.name}" in graph.provides(a) for a in taps)
    enslaved = [a for a in actions if isinstance(a, A.Enslave)]
    assert enslaved and all(graph.needs(a, placement.topology) == {f"link:{a.name}", f"link:{a.bridge}"}
                            for a in enslaved)
