"""The proxy-neigh kind's planning steps: proxy ARP entries on each subnet's uplink, one per guest address.

Plan layer, called by the planner; umlstate removes only the entries it recorded adding. Its actions are in
plan/actions/address.py.
"""

from __future__ import annotations

import ipaddress

from umlstate.model.fields import by_address
from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan.result import Builder
from umlstate.plan.wanted import wanted_proxies


def remove_step(t: Topology, b: Builder) -> None:
    wanted = wanted_proxies(t)
    for uplink, address in sorted(b.s.records.proxies):
        entry = (uplink, ipaddress.ip_address(address))
        if entry in b.s.proxies and entry not in wanted:
            b.add(A.RemoveProxy("no longer in the topology", uplink, entry[1]))


def plan_step(t: Topology, b: Builder) -> None:
    for uplink, address in sorted(wanted_proxies(t) - b.s.proxies, key=by_address):
        if uplink in b.s.links:
            b.add(A.AddProxy("missing", uplink, address))
