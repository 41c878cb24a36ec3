"""The topology's vocabulary: the patterns of its names and values, and the frozen base of its models.

First stage of the pipeline, under ``topology`` and ``guest`` (the models).
Per-field constraints live in the models so that the JSON Schema carries them.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

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


def nft_literal(name: str) -> bool:
    """Whether nftables' JSON takes this interface name as it is, the traffic policy's key for a link: a
    trailing '*' is its wildcard, a leading '@' names a set and '$' a variable, '\\' and '"' escape."""
    return not (name.endswith("*") or name.startswith(("@", "$")) or any(c in name for c in '\\"'))


def by_address(item: Any) -> tuple[Any, ...]:
    """A sort key for addresses, interfaces or (name, address) pairs of both IP versions, IPv4 first (Python
    does not order an IPv4 address against an IPv6 one)."""
    if isinstance(item, tuple):
        return (*item[:-1], *by_address(item[-1]))
    return (item.version, item)


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _unicast(value: Any) -> Any:
    """An IPv6 address or network of a guest, a gateway or a next hop: global (or unique local) unicast, without a
    zone (``%eth0``): a link-local one is every NIC's own, from its MAC; a zone would reach nftables and guests'
    command lines; and such an address compared unequal to the same without it."""
    if isinstance(value, ipaddress.IPv6Address) and value.scope_id is not None:
        raise ValueError(f"{value} carries a zone (%{value.scope_id}); give the address alone")
    if isinstance(value, (ipaddress.IPv6Address, ipaddress.IPv6Network)):
        bad = next((what for what, test in (("link-local", value.is_link_local), ("multicast", value.is_multicast),
                                            ("loopback", value.is_loopback), ("unspecified", value.is_unspecified),
                                            ("reserved", value.is_reserved))
                    if test), None)
        if bad is None and isinstance(value, ipaddress.IPv6Address) and value.ipv4_mapped is not None:
            bad = "IPv4-mapped"
        if bad is not None:
            raise ValueError(f"{value} is {bad}: an IPv6 address of a subnet is global or unique local unicast")
    return value


IPAddress = Annotated[ipaddress.IPv4Address | ipaddress.IPv6Address, AfterValidator(_unicast)]
IPNetwork = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, AfterValidator(_unicast)]


class Route(Model):
    """A route in a guest: to a network (or ``default``) through a neighbour on one of its NICs' subnets."""

    to: Literal["default"] | IPNetwork = Field(description="A network, e.g. 10.0.34.0/24 or 2001:db8:2::/64, or "
                                                           "default (of the next hop's family).")
    via: IPAddress = Field(description="The next hop: an address on a subnet of one of the NICs.")

    @field_validator("to")
    @classmethod
    def _zero_is_default(cls, to: Literal["default"] | IPNetwork) -> Literal["default"] | IPNetwork:
        """0.0.0.0/0 and ::/0 are the default route: one per family, and IPv4's replaces umlstate.gw=."""
        return "default" if not isinstance(to, str) and to.prefixlen == 0 else to


class HostRoute(Model):
    """A route on the host: to a network behind a guest, through that guest."""

    to: Literal["default"] | ipaddress.IPv4Network = Field(description="A network, e.g. 10.0.34.0/24.")
    via: ipaddress.IPv4Address = Field(description="The next hop: a guest's address on a subnet the host has a "
                                                   "gateway on.")
