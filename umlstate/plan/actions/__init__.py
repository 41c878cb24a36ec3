"""The actions a plan is made of: frozen dataclasses, one per kind of change.

Each action knows its op, kind, target and a human detail, carries the reason
the planner chose it, and can ``simulate`` its effect on a snapshot so the
planner's later steps see the host as it will be. Carrying them out is the
executor's job; nothing here touches the host.
"""

from __future__ import annotations

from typing import TypeAlias

from umlstate.plan.actions.address import (
    AddAddress,
    AddProxy,
    RemoveAddress,
    RemoveProxy,
)
from umlstate.plan.actions.base import PRIVILEGE, Action, Kind, Op
from umlstate.plan.actions.bridge import (
    BRIDGE_FDB_MAX,
    CreateBridge,
    DeleteBridge,
    Enslave,
    LimitFdb,
    SetBridgeMac,
    SetBridgeUp,
)
from umlstate.plan.actions.host import (
    AddGroupMember,
    CreateGroup,
    CreateTunNode,
    DeleteGroup,
    DeleteTunNode,
    FixTunNode,
    ForgetGroupMember,
    RemoveGroupMember,
    RestoreSysctl,
    RestoreTunNode,
    SetSysctl,
)
from umlstate.plan.actions.processes import (
    EndGuestLeftovers,
    EndSwitchLeftovers,
    PlugNic,
    ReplaceGuest,
    ReplaceSwitch,
    StartGuest,
    StartSwitch,
    StopGuest,
    StopSwitch,
    UnplugNic,
    argv_diff,
)
from umlstate.plan.actions.route import AddRoute, RemoveRoute
from umlstate.plan.actions.ruleset import CreateRuleset, DeleteRuleset, LoadRuleset
from umlstate.plan.actions.seed import DeleteSeed, RewriteSeed, Seed, WriteSeed
from umlstate.plan.actions.tap import (
    CreateTap,
    DeleteTap,
    FixTap,
    MarkTap,
    QuietIpv6,
    ReplaceTap,
    SetLinkUp,
)
from umlstate.plan.actions.vxlan import AddFdb, CreateVxlan, DeleteVxlan, RemoveFdb

# Every action there is: apply's dispatch matches on this union, and mypy
# (assert_never) turns an action without a handler into a type error.
AnyAction: TypeAlias = (
    CreateTunNode | FixTunNode | RestoreTunNode | DeleteTunNode
    | CreateGroup | AddGroupMember | RemoveGroupMember | ForgetGroupMember | DeleteGroup
    | SetSysctl | RestoreSysctl
    | CreateTap | FixTap | MarkTap | SetLinkUp | DeleteTap | ReplaceTap | Enslave
    | CreateBridge | SetBridgeUp | SetBridgeMac | LimitFdb | DeleteBridge | CreateVxlan | DeleteVxlan | AddFdb
    | RemoveFdb | QuietIpv6
    | AddAddress | RemoveAddress | AddProxy | RemoveProxy | AddRoute | RemoveRoute
    | StartSwitch | StopSwitch | ReplaceSwitch | EndSwitchLeftovers
    | StartGuest | StopGuest | ReplaceGuest | EndGuestLeftovers | PlugNic | UnplugNic
    | CreateRuleset | LoadRuleset | DeleteRuleset
    | WriteSeed | RewriteSeed | DeleteSeed
)

__all__ = [
    "BRIDGE_FDB_MAX",
    "PRIVILEGE",
    "Action",
    "AddAddress",
    "AddFdb",
    "AddGroupMember",
    "AddProxy",
    "AddRoute",
    "AnyAction",
    "CreateBridge",
    "CreateGroup",
    "CreateRuleset",
    "CreateTap",
    "CreateTunNode",
    "CreateVxlan",
    "DeleteBridge",
    "DeleteGroup",
    "DeleteRuleset",
    "DeleteSeed",
    "DeleteTap",
    "DeleteTunNode",
    "DeleteVxlan",
    "EndGuestLeftovers",
    "EndSwitchLeftovers",
    "Enslave",
    "FixTap",
    "FixTunNode",
    "ForgetGroupMember",
    "Kind",
    "LimitFdb",
    "LoadRuleset",
    "MarkTap",
    "Op",
    "PlugNic",
    "QuietIpv6",
    "RemoveAddress",
    "RemoveFdb",
    "RemoveGroupMember",
    "RemoveProxy",
    "RemoveRoute",
    "ReplaceGuest",
    "ReplaceSwitch",
    "ReplaceTap",
    "RestoreSysctl",
    "RestoreTunNode",
    "RewriteSeed",
    "Seed",
    "SetBridgeMac",
    "SetBridgeUp",
    "SetLinkUp",
    "SetSysctl",
    "StartGuest",
    "StartSwitch",
    "StopGuest",
    "StopSwitch",
    "UnplugNic",
    "WriteSeed",
    "argv_diff",
]
