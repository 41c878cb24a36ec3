"""The plan as a graph: what each action provides, and what it needs from the actions before it.

Pure, in the plan layer; read by the executor. The plan stays an ordered list
(the order is one that respects every edge here), and these edges decide what
a failure stops: an action whose needs include something a failed or skipped
action provides is skipped, with the reason; everything else goes on, so one
guest's trouble (its COW file, its kernel, its folder) stays its own, as in
Terraform, where a failed resource stops only its dependents.

Resources are named ``link:NAME`` (a tap, bridge or VXLAN link), ``switch:NAME``,
``guest:NAME``, ``seed:NAME`` (its seed disk), ``ruleset`` (guests never start without their policy), and
``KIND:TARGET`` for everything else.
"""

from __future__ import annotations

from umlstate.model.topology import Topology, nic_tap_name
from umlstate.plan import actions as A

RULESET = "ruleset"


def provides(a: A.AnyAction) -> frozenset[str]:
    own = f"{a.kind}:{a.target}"
    match a:
        case A.CreateTap() | A.FixTap() | A.MarkTap() | A.SetLinkUp() | A.DeleteTap() | A.Enslave() \
                | A.CreateBridge() | A.SetBridgeUp() | A.SetBridgeMac() | A.LimitFdb() | A.DeleteBridge() \
                | A.CreateVxlan() | A.DeleteVxlan():
            return frozenset({own, f"link:{a.name}"})
        case A.ReplaceTap():
            return frozenset({own, f"link:{a.create.name}"})
        case A.CreateRuleset() | A.LoadRuleset():
            return frozenset({own, RULESET})
        case A.WriteSeed() | A.RewriteSeed():
            return frozenset({f"seed:{a.name}"})
        case _:
            return frozenset({own})


def needs(a: A.AnyAction, t: Topology) -> frozenset[str]:
    match a:
        case A.CreateTap() | A.ReplaceTap():  # made through the tun node
            return frozenset({f"tun-device:{t.tun_path}"})
        case A.FixTap():
            return frozenset({f"tun-device:{t.tun_path}", f"link:{a.name}"})
        case A.MarkTap() | A.SetLinkUp() | A.SetBridgeUp() | A.SetBridgeMac() | A.LimitFdb():  # it must be there
            return frozenset({f"link:{a.name}"})
        case A.QuietIpv6():
            return frozenset({f"link:{a.link}"})
        case A.Enslave():
            return frozenset({f"link:{a.name}", f"link:{a.bridge}"})
        case A.CreateVxlan():
            return frozenset({f"link:{a.bridge}"})
        case A.AddAddress():
            return frozenset({f"link:{a.ifname}"})
        case A.AddFdb():
            return frozenset({f"link:{a.vxlan}"})
        case A.StartSwitch():
            return frozenset({f"link:{a.tap}"} if a.tap else ())
        case A.ReplaceSwitch():
            return needs(a.start, t)
        case A.StartGuest() | A.PlugNic():
            return _guest_needs(a.name, t)
        case A.ReplaceGuest():
            return _guest_needs(a.start.name, t)
        case _:
            return frozenset()


def _guest_needs(name: str, t: Topology) -> frozenset[str]:
    """Its NICs' links or switch processes, and the traffic policy: a guest never runs unprotected."""
    guest = t.guest(name)
    found = {RULESET} | ({f"seed:{name}"} if guest is not None and t.has_seed(guest) else set())
    for i, nic in enumerate(guest.nics if guest else ()):
        switch = t.switch(nic.switch) if nic.switch else None
        if switch is not None and switch.is_bridge:
            found.add(f"link:{nic_tap_name(name, i)}")
        elif switch is not None:
            found.add(f"switch:{switch.name}")
        elif nic.tap:
            found.add(f"link:{nic.tap}")
    return frozenset(found)
