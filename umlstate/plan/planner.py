"""plan(topology, snapshot) -> Plan: the pure heart of umlstate.

Sits between observation and the executor. No I/O and no host libraries
(tests/test_purity.py enforces it): the same inputs always give the same plan,
so golden files can pin plans down and a saved plan can be re-derived.

The planner walks the kinds in dependency order, each kind's step in a module
of its name (plan/tap.py, plan/guest.py, ...): first it removes what umlstate
owns but no longer wants (so a removal never trips over a creation), then
groups, the tun node, sysctls, bridges, VXLANs, taps, addresses, link state,
proxy entries, host routes, the policy, guests' seed disks, switches and guests. Every
action is simulated on the working snapshot as soon as it is
chosen, so later steps see the host as the earlier actions will leave it.
Destroy is the plan towards a topology that wants nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from umlstate.model.placement import Stretch
from umlstate.model.snapshot import Snapshot
from umlstate.model.topology import Host, Topology
from umlstate.plan import (
    address,
    bridge,
    guest,
    hardening,
    host,
    preflight,
    proxy,
    route,
    ruleset,
    seed,
    switch,
    tap,
    vxlan,
)
from umlstate.plan.result import Builder, Plan


def plan(topology: Topology, observed: Snapshot, *, adopt: bool = False, destroy: bool = False,
         stretches: Mapping[str, Stretch] | None = None) -> Plan:
    """``stretches``: with several hosts, the bridges this host shares with others over VXLAN (placement)."""
    desired = _nothing_wanted(topology) if destroy else topology
    wanted_vxlans = {} if destroy else {st.link: st for st in (stretches or {}).values()}
    b = Builder(observed, observed)
    if not destroy:
        preflight.preflight(desired, b)
    # Removals first, so that a removal never trips over a creation: processes, then links, then the host's.
    guest.remove_step(desired, b)
    switch.remove_step(desired, b)
    proxy.remove_step(desired, b)
    route.remove_step(desired, b)
    tap.remove_step(desired, b)
    vxlan.remove_step(desired, wanted_vxlans, b)
    bridge.remove_step(desired, b)
    host.remove_step(desired, b)
    host.plan_step(desired, b)
    bridge.plan_step(desired, b)
    vxlan.plan_step(desired, wanted_vxlans, b)
    tap.plan_step(desired, b, adopt)
    tap.enslave(desired, b)
    address.plan_step(desired, b)
    bridge.link_up(desired, b)
    tap.link_up(desired, b)
    hardening.plan_step(desired, wanted_vxlans, b)
    proxy.plan_step(desired, b)
    route.plan_step(desired, b)
    ruleset.plan_step(desired, stretches or {}, b, destroy=destroy)  # before any guest starts
    seed.plan_step(desired, b)
    switch.plan_step(desired, b)
    guest.plan_step(desired, b)
    preflight.programs(b)
    preflight.warnings(desired, b)
    return Plan(
        topology=topology.name,
        netns=observed.netns,
        actions=tuple(b.actions),
        conflicts=tuple(b.conflicts),
        blockers=tuple(b.blockers),
        warnings=tuple(b.warnings),
        observed=observed,
        expected=b.s,
        mode="destroy" if destroy else "apply",
        held=() if destroy else tuple(sorted(g.name for g in topology.guests if g.name in observed.records.held)),
        backoff=tuple(b.backoff),
    )


def _nothing_wanted(t: Topology) -> Topology:
    """The same topology (name, folders) with no resources: what destroy plans towards."""
    # A new model, not model_copy: a copy would carry the original's cached name index.
    return Topology(name=t.name, host=Host(run_dir=t.host.run_dir, state_dir=t.host.state_dir))
