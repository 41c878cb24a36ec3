"""The command lines of switches and guests, derived from the topology.

Pure, used by the planner (a running process whose argv differs from the
wanted one is replaced) and the executor (which spawns exactly this argv).
The network transport is chosen in one place, ``nic_transport``: Linux 6.16
removed the legacy daemon/vde/tuntap transports in favour of ``vecN:``, and
moving to those must not touch anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from umlstate.model.guest import Guest
from umlstate.model.guestline import GuestLine, Nic
from umlstate.model.placement import VXLAN_MTU
from umlstate.model.snapshot import KernelFacts
from umlstate.model.topology import Switch, Topology, nic_tap_name

# CONFIG_ option that a kernel needs for each transport (from linux.uml --showconfig).
TRANSPORT_CONFIG = {"daemon": "CONFIG_UML_NET_DAEMON", "vde": "CONFIG_UML_NET_VDE", "tuntap": "CONFIG_UML_NET_TUNTAP"}
PROGRAM_PACKAGES = {"uml_switch": "uml-utilities", "vde_switch": "vde2", "groupadd": "passwd", "groupdel": "passwd",
                    "gpasswd": "passwd", "mkfs.vfat": "dosfstools", "mcopy": "mtools",
                    "linux.uml": "user-mode-linux"}


def holds_stdin(switch: Switch) -> bool:
    """Whether the switch must be given a stdin that never ends (see switch_argv)."""
    return switch.kind == "vde_switch"


def switch_argv(topology: Topology, switch: Switch, program: str) -> tuple[str, ...]:
    """uml_switch -unix SOCKET [-hub] [-tap TAP]; vde_switch -d -s SOCKET [-x] [-t TAP]."""
    socket = topology.socket_of(switch)
    if switch.kind == "uml_switch":
        argv = [program, "-unix", socket]
        if switch.hub:
            argv.append("-hub")
        if switch.tap:
            argv += ["-tap", switch.tap]
    else:
        # Not -d: a daemon leaves its session and the process umlstate started. In the foreground
        # vde_switch reads a console on stdin and exits on its EOF, so apply gives it a pipe it
        # holds both ends of (holds_stdin): a stdin that never ends.
        argv = [program, "-s", socket]
        if switch.hub:
            argv.append("-x")
        if switch.tap:
            argv += ["-t", switch.tap]
    return tuple(argv)


def tap_in(argv: tuple[str, ...] | list[str]) -> str | None:
    """The tap a switch's argv plugs into (uml_switch -tap, vde_switch -t)."""
    return _value_after(argv, ("-tap", "-t"))


def _value_after(argv: tuple[str, ...] | list[str], flags: tuple[str, ...]) -> str | None:
    for i, word in enumerate(argv[:-1]):
        if word in flags:
            return argv[i + 1]
    return None


@dataclass(frozen=True)
class Wire:
    """How one guest NIC reaches its switch: the transport, the word on the command line, the guest's name for it."""

    transport: str  # daemon, vde, tuntap (legacy), or vector-tap, vector-vde
    word: str  # e.g. eth0=daemon,MAC,unix,SOCKET or vec0:transport=tap,ifname=TAP,mac=MAC
    ifname: str  # what the guest calls it: eth<i> or vec<i>


@dataclass(frozen=True)
class Unwired:
    """Why a NIC cannot be wired with this kernel, and the way out."""

    problem: str
    fix: str


def wire(topology: Topology, guest: Guest, index: int, kernel: KernelFacts | None) -> Wire | Unwired:
    """The transport of NIC ``index`` on this kernel, per SPEC's table; the only place that knows the syntax.

    ``kernel`` None: its configuration is unknown (not found in the binary), so every
    transport is assumed and the choice is the legacy one, as before vector kernels.
    """
    nic = guest.nics[index]
    mac = topology.mac_of(guest, index)
    legacy = kernel.transports if kernel is not None else frozenset(LEGACY) | {"vector"}
    vector = kernel.vector_transports if kernel is not None else frozenset({"tap"})
    has_vector = "vector" in legacy
    eth, vec = f"eth{index}", f"vec{index}"
    named = _kernel_name(kernel)
    use_legacy = nic.transport != "vector"
    use_vector = nic.transport != "legacy"

    def vector_tap(tap: str) -> Wire | Unwired:
        if not use_vector or not has_vector:
            return Unwired(f"guest {guest.name} NIC {index}: {named} has no vector transport (CONFIG_UML_NET_VECTOR)",
                           "use a kernel built with it (every kernel since 4.16 is)")
        return Wire("vector-tap", f"{vec}:transport=tap,ifname={tap},mac={mac}", vec)

    if nic.tap is not None:
        if use_legacy and "tuntap" in legacy:
            return Wire("tuntap", f"{eth}=tuntap,{nic.tap},{mac}", eth)
        if nic.transport == "legacy":
            return Unwired(f"guest {guest.name} NIC {index}: {named} lacks the legacy tuntap transport"
                           f" ({TRANSPORT_CONFIG['tuntap']} is not set){REMOVED}", "use transport: auto or vector")
        return vector_tap(nic.tap)
    switch = topology.switch(nic.switch or "")
    assert switch is not None  # the loader's rules guarantee every reference resolves
    if switch.is_bridge:
        wired = vector_tap(nic_tap_name(guest.name, index))
        if isinstance(wired, Wire) and topology.hosts:  # a farm's bridge may be stretched over VXLAN
            return Wire(wired.transport, f"{wired.word},mtu={VXLAN_MTU}", wired.ifname)
        return wired
    socket = topology.socket_of(switch)
    if switch.kind == "vde_switch":
        if use_legacy and "vde" in legacy:
            return Wire("vde", f"{eth}=vde,{socket},{mac}", eth)
        if use_vector and has_vector and "vde" in vector:
            return Wire("vector-vde", f"{vec}:transport=vde,vnl=vde://{socket},mac={mac}", vec)
        return Unwired(f"guest {guest.name} NIC {index} is on vde_switch {switch.name}, but {named} has neither the "
                       f"legacy vde transport ({TRANSPORT_CONFIG['vde']}){REMOVED} nor the vector driver's vde "
                       "transport", f"change switch {switch.name} to kind: bridge, or use a kernel with vde")
    if use_legacy and "daemon" in legacy:
        return Wire("daemon", f"{eth}=daemon,{mac},unix,{socket}", eth)
    tap = topology.tap(switch.tap) if switch.tap else None
    subnet = ", ".join(tap.subnet_names) if tap is not None and tap.subnet_names else "<its subnet>"
    return Unwired(f"guest {guest.name} NIC {index} is on uml_switch {switch.name}, but {named} has no daemon "
                   f"transport ({TRANSPORT_CONFIG['daemon']} is not set){REMOVED}; uml_switch cannot reach it",
                   f"make {switch.name} a Linux bridge, which every kernel reaches; its switches entry becomes\n"
                   f"      - name: {switch.name}\n        kind: bridge\n        subnet: {subnet}\n"
                   f"    (no tap, user or socket: each guest NIC gets its own tap on the bridge"
                   + (f", and tap {tap.name} can go" if tap is not None else "") + ")")


REMOVED = "; Linux 6.16 removed the legacy transports, only vecN:transport=... remains"
LEGACY = ("daemon", "vde", "tuntap")


def _kernel_name(kernel: KernelFacts | None) -> str:
    if kernel is None:
        return "the kernel"
    return f"the kernel {kernel.path}" + (f" (Linux {kernel.version})" if kernel.version else "")


def guest_line(topology: Topology, guest: Guest, kernel: str, wires: tuple[Wire, ...]) -> GuestLine:
    """The guest's whole command line: its wires, and the address and gateway each NIC's subnet gives it."""
    cow = topology.cow_of(guest)
    nics: list[Nic] = []
    told_gw = any(r.to == "default" and r.via.version == 4 for r in guest.routes)  # its own replaces the gateway's
    for nic, w in zip(guest.nics, wires, strict=True):
        interfaces = topology.interfaces_of(nic)  # the first on the command line, the others on the seed disk
        address = str(interfaces[0]) if interfaces else None
        gateway = topology.gateway_of_nic(nic)
        first = gateway is not None and not told_gw and not any(n.gateway for n in nics)
        nics.append(Nic(w.ifname, w.word, address, str(gateway) if first else None))
    return GuestLine(kernel, guest.name, topology.uml_dir_of(guest), guest.mem,
                     f"{cow},{guest.disk.base}" if cow else f"{guest.disk.image}", tuple(nics),
                     topology.seed_of(guest), tuple(guest.args))


def wires_of(topology: Topology, guest: Guest, kernel: KernelFacts | None) -> tuple[Wire, ...] | list[Unwired]:
    """Every NIC's wire, or every reason some cannot be wired."""
    chosen = [wire(topology, guest, i, kernel) for i in range(len(guest.nics))]
    problems = [c for c in chosen if isinstance(c, Unwired)]
    return problems if problems else tuple(c for c in chosen if isinstance(c, Wire))


def resolved(programs: Mapping[str, str | None], name: str) -> str:
    """The path observation found for a program or kernel, or the name itself."""
    return programs.get(name) or name
