"""The address kind's planning step: the gateway address on each tap and bridge that carries a subnet.

Plan layer, called by the planner after the taps step, so that a tap adopted or replaced in this plan is
covered too. Its actions are in plan/actions/address.py.
"""

from __future__ import annotations

from umlstate.model.fields import by_address
from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan.result import Builder
from umlstate.plan.wanted import owns_link, wanted_addresses, wanted_taps


def plan_step(t: Topology, b: Builder) -> None:
    """After the taps step, so that a tap adopted or replaced in this plan is covered too."""
    wanted = wanted_addresses(t)
    for name in sorted({tap.name for tap in wanted_taps(t)} | {bridge.name for bridge in t.bridges}):
        if not owns_link(t, b.s, name):
            continue
        current = b.s.addresses.get(name, frozenset())
        gateways = wanted.get(name, frozenset())
        for extra in sorted(current - gateways, key=by_address):
            b.add(A.RemoveAddress("not in the topology", name, extra))
        for missing in sorted(gateways - current, key=by_address):
            b.add(A.AddAddress("missing", name, missing))
