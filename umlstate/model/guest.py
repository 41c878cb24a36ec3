"""The desired state of a guest: its disk, NICs, files and lab fields (pydantic models of SPEC's ``guests``),
and the lab's checks, which guests run.

First stage of the pipeline; ``topology`` holds the whole host, and the
defaults that depend on other fields (COW files, MACs, sockets).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, field_validator

from umlstate.model.fields import (
    MEM_RE,
    MODE_RE,
    SYSCTL_KEY_RE,
    IPAddress,
    IPNetwork,
    Model,
    ObjectName,
    Route,
    SysctlValue,
    UserRef,
    scalar_to_str,
)


class Disk(Model):
    """The guest's root disk (ubd0): a shared base with a private COW file, or an image."""

    base: str | None = Field(None, description="Read-only base image, shared through a COW file.")
    cow: str | None = Field(None, description="Default <state_dir>/<guest>.cow.")
    image: str | None = Field(None, description="A private image used directly (ubd0=IMAGE).")


class Nic(Model):
    """One guest network interface: eth<i> (legacy transports) or vec<i> (vector), i its place in the list."""

    switch: str | None = Field(None, description="Plug into this switch (exactly one of switch, tap).")
    tap: str | None = Field(None, description="Or use this tap alone (UML's tuntap or vector tap transport).")
    address: IPAddress | None = Field(
        None, description="Told to the guest (umlstate.<ifname>=); must lie inside one of the NIC's subnets."
    )
    addresses: tuple[IPAddress, ...] = Field(
        (), description="More addresses (after address), IPv4 or IPv6, each inside one of the NIC's subnets.")
    name: str | None = Field(None, description="The guest's name for the interface (default: UML's, eth<i> or "
                                               "vec<i>); delivered on the seed disk.")
    mac: str | None = Field(None, description="Unicast MAC; a stable one is derived when omitted.")
    transport: Literal["auto", "legacy", "vector"] = Field(
        "auto", description="auto: the legacy form where the kernel has it (the guest keeps ethN), else vector.")
    port_security: bool = Field(True, description="Frames only from this NIC's MAC, ARP and IP only from its "
                                                  "address, no router advertisements or DHCP replies; false: off.")
    allow_sources: tuple[IPNetwork, ...] = Field(
        (), description="More source networks this NIC may send from (a router guest's other networks).")

    @property
    def ips(self) -> tuple[IPAddress, ...]:
        """Every address the NIC is told, address first."""
        return ((self.address,) if self.address is not None else ()) + self.addresses

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", value):
            raise ValueError(f"mac {value!r} is not six hex octets such as fe:fd:ac:10:63:01")
        first = int(value[:2], 16)
        if first & 1:
            raise ValueError(f"mac {value} is a multicast address (first octet is odd); use a unicast one")
        if int(value.replace(":", ""), 16) == 0:
            raise ValueError("mac 00:00:00:00:00:00 is not a usable address")
        return value.lower()


class GuestFile(Model):
    """A file put into the guest before its startup runs (from its seed disk, at every boot)."""

    model_config = ConfigDict(populate_by_name=True)

    path: str = Field(pattern=r"^/[^\x00]*$", description="Absolute path inside the guest.")
    content: str | None = Field(None, description="The file's text (exactly one of content, from).")
    from_: str | None = Field(None, alias="from", description="A host file to copy, relative to the topology "
                              "file's folder; read by root with a bound, never through a link.")
    mode: str = Field("0644", pattern=MODE_RE, description="Its mode inside the guest.")


GUEST_FILE_MAX = 1 << 20  # bytes of one files[] entry: a router's configuration, not a disk image
HOSTNAME_RE = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"


class Guest(Model):
    """A User-Mode-Linux guest: one linux.uml process tree."""

    name: ObjectName = Field(description="Also the umid: mconsole is <run_dir>/users/<user>/uml/<name>/mconsole.")
    user: UserRef = Field(description="The guest process runs as this user.")
    kernel: str = Field("linux.uml", description="Path, or a name on PATH.")
    mem: Annotated[str, BeforeValidator(scalar_to_str)] = Field(
        "128M", pattern=MEM_RE, description="Memory size as UML reads it: 64M, 1G."
    )
    disk: Disk = Field(description="Exactly one of base or image.")
    args: tuple[str, ...] = Field((), description="Extra kernel command line words.")
    host: str | None = Field(None, description="With hosts: where the guest runs (a hosts[].name).")
    hostname: str | None = Field(None, pattern=HOSTNAME_RE, description="Default: the guest's name.")
    sysctl: dict[Annotated[str, Field(pattern=SYSCTL_KEY_RE)], SysctlValue] = Field(
        default_factory=dict, description="Set in the guest at every boot, e.g. net.ipv4.ip_forward: 1.")
    routes: tuple[Route, ...] = Field((), description="Routes in the guest; a default one replaces the route "
                                      "through the first subnet's gateway.")
    files: tuple[GuestFile, ...] = Field((), description="Files put into the guest at every boot, before startup.")
    startup: str | None = Field(None, description="Run as root in the guest at every boot, after its network.")

    def first_ip(self, version: int | None = None) -> IPAddress | None:
        """Its first address (of this IP version): what a check pings, a forward reaches (IPv4)."""
        return next((ip for nic in self.nics for ip in nic.ips if version is None or ip.version == version), None)

    @property
    def seeded(self) -> bool:
        """Told more than its addresses by its own fields (Topology.has_seed counts the checks it runs too)."""
        return bool(self.hostname or self.sysctl or self.routes or self.files or self.startup
                    or any(nic.name or len(nic.ips) > 1 for nic in self.nics))

    @field_validator("mem", mode="before")
    @classmethod
    def _mem(cls, value: Any) -> Any:
        value = scalar_to_str(value)
        if isinstance(value, str) and not re.fullmatch(MEM_RE, value):
            raise ValueError(f"mem {value!r} is not a size UML accepts: a number with K, M or G, e.g. 64M or 1G")
        return value
    nics: tuple[Nic, ...] = Field((), description="Network interfaces, eth0 first.")


class Check(Model):
    """What the lab must do, run by a guest once its network is up (and on `umlstate check`); status shows it."""

    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description="The guest that runs it.")
    ping: str = Field(description="A guest (its first address) or an IPv4 or IPv6 address it pings.")
    expect: Literal["pass", "fail"] = Field("pass", description="fail: the ping must not be answered.")

    @property
    def label(self) -> str:
        return f"{self.from_} ping {self.ping}" + (" (expect fail)" if self.expect == "fail" else "")
