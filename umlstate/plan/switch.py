"""The switch kind's planning steps: each uml_switch or vde_switch process, started, restarted or stopped.

Plan layer, called by the planner after the policy and before the guests: a switch restarted in this plan
makes its guests reconnect (Builder.restarted_switches). Its actions are in plan/actions/processes.py.
"""

from __future__ import annotations

from umlstate.model.snapshot import unit_of
from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan import cmdline
from umlstate.plan.result import Builder


def remove_step(t: Topology, b: Builder) -> None:
    """After the guests' (a guest leaves before its switch), before the taps' (a switch before its tap)."""
    wanted = {sw.name for sw in t.switch_processes}
    for name, state in sorted(b.s.switches.items()):
        if name not in wanted and state.proc is not None:
            b.add(A.StopSwitch("no longer in the topology", name, state.proc))
        _end_leftovers(name, b)


def plan_step(t: Topology, b: Builder) -> None:
    for sw in sorted(t.switch_processes, key=lambda x: x.name):
        _end_leftovers(sw.name, b)
        if b.s.programs.get(sw.kind, "") is None:  # not installed: a preflight error says so
            continue
        argv = cmdline.switch_argv(t, sw, cmdline.resolved(b.s.programs, sw.kind))
        start = A.StartSwitch("not running", sw.name, argv, sw.runs_as, t.socket_of(sw), sw.tap,
                              cmdline.holds_stdin(sw))
        state = b.s.switches.get(sw.name)
        uid = b.s.uid(sw.runs_as)
        if state is None or state.proc is None:
            b.add(start)
            b.restarted_switches.add(sw.name)
        elif state.proc.argv != argv or (uid is not None and state.proc.uid != uid) or _detached(sw.tap, b):
            why = ("command line changed" if state.proc.argv != argv
                   else f"runs as uid {state.proc.uid}, not {sw.runs_as}" if uid is not None and state.proc.uid != uid
                   else f"running but not attached to tap {sw.tap} (no carrier; see its log)")
            b.add(A.ReplaceSwitch(why, A.StopSwitch(why, sw.name, state.proc), start))
            b.restarted_switches.add(sw.name)


def _end_leftovers(name: str, b: Builder) -> None:
    state = b.s.switches.get(name)
    if state is not None and state.proc is None and state.leftovers:
        b.add(A.EndSwitchLeftovers("its recorded process died; these were left in its cgroup", name, state.leftovers,
                                   b.s.records.processes.get(unit_of("switch", name))))


def _detached(tap: str | None, b: Builder) -> bool:
    """A switch that runs while its tap, up since before this plan, has no carrier: it failed to attach."""
    if tap is None:
        return False
    before, now = b.origin.links.get(tap), b.s.links.get(tap)
    return before is not None and now is not None and before.up and now.up and not now.carrier
