"""Actions on the host's routes towards networks behind guests (host.routes): added and removed.

They carry umlstate's protocol (186) and are recorded when made, as proxy entries are.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import ClassVar

from umlstate.model.snapshot import Snapshot
from umlstate.plan.actions.base import Action, Kind, Op


@dataclass(frozen=True)
class AddRoute(Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "route"
    to: str  # a network, or default
    via: ipaddress.IPv4Address

    @property
    def target(self) -> str:
        return f"{self.to} via {self.via}"

    @property
    def detail(self) -> str:
        return f"ip route add {self.to} via {self.via} proto 186"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, routes=s.routes | {(self.to, self.via)},
                       records=replace(s.records, routes=s.records.routes | {(self.to, str(self.via))}))


@dataclass(frozen=True)
class RemoveRoute(Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "route"
    to: str
    via: ipaddress.IPv4Address

    @property
    def target(self) -> str:
        return f"{self.to} via {self.via}"

    @property
    def detail(self) -> str:
        return f"ip route del {self.to} via {self.via}"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, routes=s.routes - {(self.to, self.via)},
                       records=replace(s.records, routes=s.records.routes - {(self.to, str(self.via))}))
