"""What every action is: an op, a kind, a target, a detail for people, a reason, and its simulated effect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from umlstate.model.snapshot import Snapshot

Op = Literal["create", "update", "delete", "replace"]
Kind = Literal["tun-device", "group", "sysctl", "tap", "bridge", "vxlan", "fdb", "address", "proxy-neigh", "switch",
               "guest", "ruleset", "route", "check"]

# What carrying out each kind of change takes, for the message a run without
# it gets before it changes anything (rather than EPERM at its first step).
PRIVILEGE: dict[Kind, str] = {
    "tun-device": "making a device node and setting its group needs root (CAP_MKNOD, CAP_CHOWN)",
    "group": "editing /etc/group needs root",
    "sysctl": "writing /proc/sys/net needs root",
    "tap": "persistent taps need CAP_NET_ADMIN",
    "bridge": "bridges need CAP_NET_ADMIN",
    "vxlan": "VXLAN links need CAP_NET_ADMIN",
    "fdb": "bridge forwarding entries need CAP_NET_ADMIN",
    "address": "addresses need CAP_NET_ADMIN",
    "proxy-neigh": "proxy ARP entries need CAP_NET_ADMIN",
    "switch": "starting or signalling a process as its declared user needs root (CAP_SETUID, CAP_KILL)",
    "guest": "starting or signalling a process as its declared user needs root (CAP_SETUID, CAP_KILL)",
    "ruleset": "nftables tables need CAP_NET_ADMIN",
    "route": "routes need CAP_NET_ADMIN",
    "check": "asking a guest to run its checks goes through its mconsole, which only its user and root reach",
}


@dataclass(frozen=True)
class Action:
    op: ClassVar[Op]
    kind: ClassVar[Kind]
    reason: str

    @property
    def target(self) -> str:
        raise NotImplementedError

    @property
    def detail(self) -> str:
        raise NotImplementedError

    def simulate(self, s: Snapshot) -> Snapshot:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "kind": self.kind, "target": self.target,
                "detail": self.detail, "reason": self.reason}


class _Named:
    """For actions whose target is the name of what they act on."""

    name: str

    @property
    def target(self) -> str:
        return self.name


def _mode(mode: int | None) -> str:
    return "unchanged" if mode is None else f"{mode:04o}"
