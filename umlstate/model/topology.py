"""The desired state: pydantic models of SPEC's topology file.

First stage of the pipeline. The loader turns YAML into these frozen models;
``rules`` checks what spans several objects (references, addresses, sizes).
Per-field constraints live in the models so that the JSON Schema carries them
too; a guest's models are in ``guest``, the shared patterns in ``fields``.
Defaults that depend on other fields (run_dir, sockets, COW files) are methods
of ``Topology``, so that there is one place that says what they resolve to.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import Field, field_validator

from umlstate.model.fields import (
    MODE_RE,
    NAME_RE,
    SYSCTL_KEY_RE,
    USER_RE,
    GroupRef,
    HostRoute,
    IPAddress,
    IPNetwork,
    Model,
    ObjectName,
    SysctlValue,
    UserRef,
)
from umlstate.model.guest import Check, Guest, Nic

DEFAULT_TUN = "/dev/net/tun"  # where UML, uml_switch and tunctl open the tun device
USERS_DIR = "users"  # run_dir/users/<user>/: what each user's processes may write
SEEDS_DIR = "seeds"  # state_dir/seeds/<guest>.img: each seeded guest's seed disk


class TunDevice(Model):
    """The tun/tap character device 10:200 that taps are made through."""

    path: str = Field(DEFAULT_TUN, description="Where the node lives; absolute.")
    mode: str | None = Field(
        None,
        pattern=MODE_RE,
        description='Octal permissions as a quoted string, e.g. "0660"; left alone when omitted.',
    )
    group: GroupRef | None = Field(None, description="Group owning the node; left alone when omitted.")

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_is_quoted(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(
                f'mode must be a quoted octal string such as "0660"; YAML read {value} as a number'
            )
        return value

    def mode_bits(self) -> int | None:
        return int(self.mode, 8) if self.mode is not None else None


class Group(Model):
    """A host group, e.g. the users allowed to open the tun node."""

    name: Annotated[str, Field(pattern=USER_RE, description="Group name (groupadd when missing).")]
    members: tuple[UserRef, ...] = Field((), description="Users added to it; others already in it are left.")


class Service(Model):
    """A port of the host itself that guests may reach (everything else on the host is closed to them)."""

    proto: Literal["tcp", "udp"] = Field(description="tcp or udp.")
    port: int = Field(ge=1, le=65535, description="The host's port.")


class Host(Model):
    """Host-wide settings: folders, the tun node, groups, sysctls, the services guests may reach."""

    run_dir: str | None = Field(None, description="Default /run/umlstate/<name>: root's; each process user gets "
                                                 "users/<user>/ in it for sockets and uml_dir.")
    state_dir: str | None = Field(None, description="Default /var/lib/umlstate/<name>: COW files, logs, records.")
    tun: TunDevice | None = Field(None, description="The tun node; left alone when omitted.")
    groups: tuple[Group, ...] = Field((), description="Host groups and members umlstate makes sure of.")
    sysctl: dict[Annotated[str, Field(pattern=SYSCTL_KEY_RE)], SysctlValue] = Field(
        default_factory=dict, description="Keys under /proc/sys, dotted: net.ipv4.ip_forward."
    )
    services: tuple[Service, ...] = Field((), description="Host ports guests may reach; by default they reach "
                                                          "only ICMP echo to their gateway.")
    routes: tuple[HostRoute, ...] = Field((), description="Routes on the host towards networks behind guests, "
                                          "e.g. {to: 10.0.34.0/24, via: 10.0.1.1}.")


class ProxyArp(Model):
    """Answer ARP on a LAN interface for every guest address of the subnet."""

    uplink: str = Field(description="Host interface facing the LAN, e.g. eth0.")


class ProxyNdp(Model):
    """Answer IPv6 neighbour solicitations on a LAN interface for every guest address of the subnet."""

    uplink: str = Field(description="Host interface facing the LAN, e.g. eth0 (its proxy_ndp sysctl is set).")


class Subnet(Model):
    """A guests' network, served by the host through one tap."""

    name: ObjectName = Field(description="Referred to by taps[].subnet.")
    cidr: IPNetwork = Field(
        description="The guests' network, e.g. 172.16.99.0/24 or 2001:db8:1::/64.")
    gateway: IPAddress | None = Field(
        None, description="The host's address on the tap serving this subnet."
    )
    proxy_arp: ProxyArp | None = Field(None, description="IPv4: make the guests reachable from the LAN.")
    proxy_ndp: ProxyNdp | None = Field(None, description="IPv6: make the guests reachable from the LAN.")
    nat: bool = Field(False, description="Masquerade what the guests send out of the host (behind the host's "
                                         "address).")
    reach: tuple[str, ...] = Field((), description="Other subnets whose guests this subnet's guests may open "
                                                   "connections to (by default none; replies follow).")

    @field_validator("cidr", mode="before")
    @classmethod
    def _strict_cidr(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                ipaddress.ip_network(value, strict=True)
            except ValueError as exc:
                raise ValueError(f"cidr {value!r} is not an IPv4 or IPv6 network: {exc}") from None
        return value


class Tap(Model):
    """A persistent tap owned by a user, as tunctl makes it."""

    name: str = Field(description="Linux interface name, at most 15 bytes, that nftables takes as it is: no "
                                  "trailing '*', leading '@' or '$', '\\' or '\"'.")
    owner: UserRef = Field(description="User name or uid that may attach (tunctl -u).")
    group: GroupRef | None = Field(None, description="Group that may attach (tunctl -g).")
    subnet: str | tuple[str, ...] | None = Field(None, description="The tap carries this subnet's gateway "
                                                 "address; or a list of subnets, each one's.")

    @property
    def subnet_names(self) -> tuple[str, ...]:
        return _names(self.subnet)


class Switch(Model):
    """What guests plug into: a switch process run by a user, or a Linux bridge (no process)."""

    name: ObjectName = Field(description="Referred to by guests[].nics[].switch; a bridge's interface name.")
    kind: Literal["uml_switch", "vde_switch", "bridge"] = Field(
        "uml_switch", description="The switch program, or bridge: a Linux bridge that every kernel can reach.")
    tap: str | None = Field(None, description="The switch is plugged into this tap (uml_switch, vde_switch).")
    user: UserRef | None = Field(None, description="The switch process runs as this user (required but for bridge).")
    socket: str | None = Field(None, description="Default <run_dir>/users/<user>/<name>.ctl.")
    hub: bool = Field(False, description="Repeat every frame to every port (uml_switch -hub, vde_switch -x).")
    subnet: str | tuple[str, ...] | None = Field(None, description="bridge only: the bridge carries this subnet's "
                                                 "gateway address; or a list of subnets, each one's.")
    vni: int | None = Field(None, ge=1, le=16777215, description="bridge only, with hosts: the VXLAN id that "
                                                                  "stretches it between hosts (derived when omitted).")
    isolated: bool = Field(False, description="bridge only: its guests reach the gateway, not each other "
                                              "(a private VLAN).")

    @property
    def is_bridge(self) -> bool:
        return self.kind == "bridge"

    @property
    def subnet_names(self) -> tuple[str, ...]:
        return _names(self.subnet)

    @property
    def runs_as(self) -> str:
        """The user of a switch process (validation requires one for every kind but bridge)."""
        assert self.user is not None, f"switch {self.name}: a {self.kind} without a user passed validation"
        return self.user


class HostDef(Model):
    """One host of a farm: where some of the guests run."""

    name: str = Field(pattern=NAME_RE, description="Matched against --host, $UMLSTATE_HOST, the hostname.")
    underlay: ipaddress.IPv4Address = Field(description="This host's address that VXLAN tunnels use.")
    run_dir: str | None = Field(None, description="This host's run_dir, instead of host.run_dir.")
    state_dir: str | None = Field(None, description="This host's state_dir, instead of host.state_dir.")


class Forward(Model):
    """A port of the host forwarded to a guest's port (DNAT): a honeypot's SSH, a lab's web server."""

    port: int = Field(ge=1, le=65535, description="The host's port.")
    proto: Literal["tcp", "udp"] = Field("tcp", description="tcp or udp.")
    to: str = Field(description="The guest (its first NIC's address).")
    to_port: int | None = Field(None, ge=1, le=65535, description="The guest's port (default: the same).")
    on: str | None = Field(None, description="Only on this host interface name or address (default: all).")

    @property
    def on_address(self) -> ipaddress.IPv4Address | None:
        try:
            return ipaddress.IPv4Address(self.on) if self.on else None
        except ValueError:
            return None


class Topology(Model):
    """A whole host: what umlstate makes the kernel and processes look like."""

    name: str = Field(pattern=NAME_RE, description="Marks what umlstate owns; [a-z0-9-]{1,12}.")
    host: Host = Field(default_factory=Host, description="Host-wide settings.")
    subnets: tuple[Subnet, ...] = Field((), description="Guest networks.")
    taps: tuple[Tap, ...] = Field((), description="Persistent taps.")
    switches: tuple[Switch, ...] = Field((), description="Switch processes.")
    guests: tuple[Guest, ...] = Field((), description="UML guests.")
    hosts: tuple[HostDef, ...] = Field((), description="Several hosts: each runs umlstate for its own slice.")
    forwards: tuple[Forward, ...] = Field((), description="Host ports forwarded to guests.")
    checks: tuple[Check, ...] = Field((), description="What the lab must do: pings run by guests, reported by "
                                      "status and `umlstate check`.")

    # Resolved defaults: the one place that says where things live.

    @property
    def run_dir(self) -> str:
        return self.host.run_dir or f"/run/umlstate/{self.name}"

    @property
    def state_dir(self) -> str:
        return self.host.state_dir or f"/var/lib/umlstate/{self.name}"

    @property
    def instance(self) -> str:
        """This topology on this host: its name and a digest of its state_dir (a farm's hosts share a name).

        Names what is machine-wide rather than per namespace, such as its cgroups:
        hosts simulated as namespaces of one machine must not see each other's.
        """
        return f"{self.name}-{hashlib.sha256(self.state_dir.encode()).hexdigest()[:8]}"

    def user_dir(self, user: str) -> str:
        """The one folder under run_dir a user's processes write in: their sockets and uml_dir.

        The user owns it; run_dir and ``users/`` above it stay root's, so
        nothing the user plants can redirect what root does elsewhere.
        """
        return f"{self.run_dir}/{USERS_DIR}/{user}"

    def uml_dir_of(self, guest: Guest) -> str:
        """UML's uml_dir for the guest: its umid folder (pid file, mconsole socket) goes below."""
        return f"{self.user_dir(guest.user)}/uml"

    def vni_of(self, bridge: Switch) -> int:
        """The VXLAN id of a stretched bridge: declared, or derived from the names (stable, in range)."""
        return bridge.vni or 1 + _fnv(f"{self.name}/{bridge.name}") % 16777214

    def mac_of(self, guest: Guest, index: int) -> str:
        """The MAC of a guest's NIC: declared, or a stable, locally administered unicast one (fe:fd:..., as
        UML's own defaults) derived from the names, so that every host of a farm knows it."""
        nic = guest.nics[index]
        if nic.mac:
            return nic.mac
        digest = hashlib.sha256(f"{self.name}/{guest.name}/{index}".encode()).digest()
        return "fe:fd:" + ":".join(f"{b:02x}" for b in digest[:4])

    def anycast_mac(self, bridge: Switch) -> str:
        """The bridge's MAC on every host that serves its subnet: the gateway is one MAC at every host."""
        digest = hashlib.sha256(f"{self.name}/{bridge.name}/{','.join(bridge.subnet_names)}".encode()).digest()
        return "02:" + ":".join(f"{b:02x}" for b in digest[:5])  # locally administered, unicast

    @property
    def tun_path(self) -> str:
        """The tun node taps are made through: the declared one, or the system's."""
        return self.host.tun.path if self.host.tun else DEFAULT_TUN

    @property
    def alias(self) -> str:
        """The ifalias that marks a link as created by this topology."""
        return f"umlstate:{self.name}"

    @property
    def table(self) -> str:
        """The name of the nftables tables (one per family) that hold this topology's traffic policy."""
        return f"umlstate-{self.name}"

    @functools.cached_property
    def link_group(self) -> int:
        """A link group derived from the name, so teardown deletes all taps at once.

        FNV-1a folded into [256, 2**31): clear of 0 (the default group) and of the
        small numbers people pick by hand.
        """
        return 256 + _fnv(self.name) % (2**31 - 256)

    def socket_of(self, switch: Switch) -> str:
        return switch.socket or f"{self.user_dir(switch.runs_as)}/{switch.name}.ctl"

    def mconsole_of(self, guest: Guest) -> str:
        return f"{self.uml_dir_of(guest)}/{guest.name}/mconsole"

    def has_seed(self, guest: Guest) -> bool:
        """Told more than its addresses (its own fields, checks it runs, an IPv6 gateway to route through): it
        boots with a seed disk."""
        return guest.seeded or any(c.from_ == guest.name for c in self.checks) \
            or any(self.gateway_of_nic(nic, 6) is not None for nic in guest.nics)

    def seed_of(self, guest: Guest) -> str | None:
        """Its seed disk, root's, read-only to the guest (ubd1r=): where it learns what it is to be."""
        return f"{self.state_dir}/{SEEDS_DIR}/{guest.name}.img" if self.has_seed(guest) else None

    def check_target(self, check: Check) -> str | None:
        """The address a check pings: the named guest's first address, or the address given."""
        guest = self.guest(check.ping)
        if guest is not None:
            ip = guest.first_ip()
            return str(ip) if ip is not None else None
        try:
            return str(ipaddress.ip_address(check.ping))
        except ValueError:
            return None

    def cow_of(self, guest: Guest) -> str | None:
        if guest.disk.base is None:
            return None
        return guest.disk.cow or f"{self.state_dir}/{guest.name}.cow"

    # Lookups by name, indexed once: a 1000-tap topology asks thousands of times.

    @functools.cached_property
    def _index(self) -> dict[str, dict[str, Any]]:
        index: dict[str, dict[str, Any]] = {}
        for kind in ("subnets", "taps", "switches", "guests"):
            index[kind] = {}
            for item in getattr(self, kind):
                index[kind].setdefault(item.name, item)  # the first one, as a linear search would
        return index

    def subnet(self, name: str) -> Subnet | None:
        found: Subnet | None = self._index["subnets"].get(name)
        return found

    def tap(self, name: str) -> Tap | None:
        found: Tap | None = self._index["taps"].get(name)
        return found

    def switch(self, name: str) -> Switch | None:
        found: Switch | None = self._index["switches"].get(name)
        return found

    def guest(self, name: str) -> Guest | None:
        found: Guest | None = self._index["guests"].get(name)
        return found

    def subnets_of(self, server: Tap | Switch) -> tuple[Subnet, ...]:
        """The defined subnets a tap or bridge carries, in the order given."""
        return tuple(s for name in server.subnet_names if (s := self.subnet(name)) is not None)

    def subnets_of_nic(self, nic: Nic) -> tuple[Subnet, ...]:
        """The subnets a NIC lands in: its bridge's, its switch's tap's, or its own tap's."""
        tap_name = nic.tap
        if nic.switch is not None:
            switch = self.switch(nic.switch)
            if switch is not None and switch.is_bridge:
                return self.subnets_of(switch)
            tap_name = switch.tap if switch else None
        tap = self.tap(tap_name) if tap_name else None
        return self.subnets_of(tap) if tap is not None else ()

    def subnet_of_address(self, nic: Nic, ip: IPAddress) -> Subnet | None:
        """The subnet of the NIC's that holds this address of it: the address takes its prefix."""
        return next((s for s in self.subnets_of_nic(nic) if s.cidr.version == ip.version and ip in s.cidr), None)

    def gateway_of_nic(self, nic: Nic, version: int = 4) -> IPAddress | None:
        """Where the NIC's guest routes by default in this IP version: the gateway of its first address's subnet
        of that version, or, without one, of its first subnet of that version that has one (IPv4's is told as
        umlstate.gw= with the first NIC that has one; IPv6's on the seed disk)."""
        ips = [ip for ip in nic.ips if ip.version == version]
        subnets = (self.subnet_of_address(nic, ips[0]),) if ips else self.subnets_of_nic(nic)
        return next((s.gateway for s in subnets if s is not None and s.gateway is not None
                     and s.gateway.version == version), None)

    def interfaces_of(self, nic: Nic) -> tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]:
        """The NIC's addresses, each with its subnet's prefix (those on none of its subnets fail validation)."""
        return tuple(ipaddress.ip_interface((ip, s.cidr.prefixlen)) for ip in nic.ips
                     if (s := self.subnet_of_address(nic, ip)) is not None)

    @property
    def bridges(self) -> tuple[Switch, ...]:
        return tuple(sw for sw in self.switches if sw.is_bridge)

    @functools.cached_property
    def sysctls(self) -> dict[str, str]:
        """The host's sysctls this topology sets: host.sysctl, and proxy_ndp on each proxy NDP uplink (the
        kernel answers IPv6 proxy entries only there), unless host.sysctl says otherwise."""
        implied = {f"net{sep}ipv6{sep}conf{sep}{s.proxy_ndp.uplink}{sep}proxy_ndp": "1"
                   for s in self.subnets if s.proxy_ndp for sep in ["/" if "." in s.proxy_ndp.uplink else "."]}
        return {**implied, **self.host.sysctl}

    @property
    def uplinks(self) -> tuple[str, ...]:
        """The LAN interfaces that answer for guests: proxy ARP's and proxy NDP's."""
        return tuple(sorted({p.uplink for s in self.subnets for p in (s.proxy_arp, s.proxy_ndp) if p is not None}))

    @property
    def servers(self) -> tuple[Tap | Switch, ...]:
        """The links that may carry subnets' gateways: declared taps, then bridges."""
        return (*self.taps, *self.bridges)

    @property
    def switch_processes(self) -> tuple[Switch, ...]:
        """The switches that are processes (uml_switch, vde_switch), not bridges."""
        return tuple(sw for sw in self.switches if not sw.is_bridge)

    def nic_taps(self) -> tuple[NicTap, ...]:
        """The tap each guest NIC on a bridge gets: owned by the guest's user, enslaved to the bridge."""
        return tuple(NicTap(nic_tap_name(g.name, i), g.user, nic.switch, g.name, i)
                     for g in self.guests for i, nic in enumerate(g.nics)
                     if nic.switch is not None and (sw := self.switch(nic.switch)) is not None and sw.is_bridge)


def _names(subnet: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """subnet: NAME or [NAME, ...] as one tuple."""
    return () if subnet is None else (subnet,) if isinstance(subnet, str) else subnet


def _fnv(text: str) -> int:
    """FNV-1a, 32 bits: small stable numbers derived from names."""
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


class NicTap(NamedTuple):
    """A persistent tap umlstate makes for one guest NIC on a bridge."""

    name: str
    owner: str
    bridge: str
    guest: str
    nic: int  # its place in the guest's nics


def nic_tap_name(guest: str, index: int) -> str:
    """<guest>-<i> where it fits in 15 bytes, else a prefix and a hash: stable, readable, unique."""
    plain = f"{guest}-{index}"
    if len(plain.encode()) <= 15:
        return plain
    digest = hashlib.sha256(guest.encode()).hexdigest()[:4]
    return f"{guest[:15 - 6 - len(str(index))]}{digest}-{index}"[:15]
