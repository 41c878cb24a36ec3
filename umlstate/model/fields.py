"""The topology's vocabulary: the patterns of its names and values, and the frozen base of its models.

First stage of the pipeline, under ``topology`` and ``guest`` (the models).
Per-field constraints live in the models so that the JSON Schema carries them.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

NAME_RE = r"^[a-z0-9-]{1,12}$"
OBJECT_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
MEM_RE = r"^[0-9]+[KkMmGg]?$"
MODE_RE = r"^0?[0-7]{3}$"
SYSCTL_KEY_RE = r"^[a-z0-9_-]+(\.[a-zA-Z0-9_-]+)+$"
USER_RE = r"^([a-z_][a-z0-9_-]{0,31}\$?|[0-9]{1,10})$"


def scalar_to_str(value: Any) -> Any:
    """Accept YAML numbers where a name or uid is meant: ``owner: 1000``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return value


UserRef = Annotated[
    str,
    BeforeValidator(scalar_to_str),
    Field(pattern=USER_RE, description="A user name or a numeric uid."),
]
GroupRef = Annotated[
    str,
    BeforeValidator(scalar_to_str),
    Field(pattern=USER_RE, description="A group name or a numeric gid."),
]
SysctlValue = Annotated[str, BeforeValidator(scalar_to_str)]
ObjectName = Annotated[str, Field(pattern=OBJECT_NAME_RE)]


def is_valid_ifname(name: str) -> bool:
    """Linux's dev_valid_name(): at most 15 bytes, no '/', ':' or white space."""
    return (
        0 < len(name.encode()) <= 15
        and name not in (".", "..")
        and not any(c in name for c in "/:") and not any(c.isspace() for c in name)
    )


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Route(Model):
    """A route: to a network (or ``default``) through a neighbour on one of the NICs' subnets."""

    to: Literal["default"] | ipaddress.IPv4Network = Field(description="A network, e.g. 10.0.34.0/24, or default.")
    via: ipaddress.IPv4Address = Field(description="The next hop: an address on a subnet of one of the NICs.")
