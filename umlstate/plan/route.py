"""The route kind's planning steps: the host's routes towards networks behind guests (host.routes).

Plan layer, called by the planner after addresses and link state (a route's next hop must be on a link
that is up). umlstate removes only the routes it recorded adding. Its actions are in plan/actions/route.py.
"""

from __future__ import annotations

import ipaddress

from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan.result import Builder


def _wanted(t: Topology) -> set[tuple[str, ipaddress.IPv4Address]]:
    return {(str(r.to), r.via) for r in t.host.routes}


def remove_step(t: Topology, b: Builder) -> None:
    wanted = _wanted(t)
    for to, via in sorted(b.s.records.routes):
        route = (to, ipaddress.IPv4Address(via))
        if route in b.s.routes and route not in wanted:
            b.add(A.RemoveRoute("no longer in the topology", *route))


def plan_step(t: Topology, b: Builder) -> None:
    for to, via in sorted(_wanted(t) - b.s.routes, key=str):
        b.add(A.AddRoute("missing", to, via))
