"""What every link umlstate made shares: no IPv6 autoconfiguration, and bridges that learn a bounded
number of MACs.

Plan layer, called by the planner after the addresses; its actions (QuietIpv6, LimitFdb) are in
plan/actions/tap.py and plan/actions/bridge.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from umlstate.model.placement import Stretch
from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan.result import Builder
from umlstate.plan.wanted import owns_link, wanted_taps


def plan_step(t: Topology, wanted: Mapping[str, Stretch], b: Builder) -> None:
    """The links umlstate made take no IPv6 autoconfiguration; its bridges learn a bounded number of MACs."""
    names = {tap.name for tap in wanted_taps(t)} | {x.name for x in t.bridges} | set(wanted)
    for name in sorted(names):
        link = b.s.links.get(name)
        if link is None or not owns_link(t, b.s, name):
            continue
        if link.autoconf:
            b.add(A.QuietIpv6("takes router advertisements or autoconfigures", name))
        if link.kind == "bridge" and link.fdb_max is not None and link.fdb_max != A.BRIDGE_FDB_MAX:
            b.add(A.LimitFdb(f"learns {'any number of' if not link.fdb_max else f'up to {link.fdb_max}'} MACs",
                             name))
