"""The command lines of switches and guests, derived from the topology.

Pure, used by the planner (a running process whose argv differs from the
wanted one is replaced) and the executor (which spawns exactly this argv).
The network transport is chosen in one place, ``nic_transport``: Linux 6.16
removed the legacy daemon/vde/tuntap transports in favour of ``vecN:``, and
moving to those must not touch anything else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from umlstate.model.topology import Guest, Nic, Switch, Topology

# CONFIG_ option that a kernel needs for each transport (from linux.uml --showconfig).
TRANSPORT_CONFIG = {"daemon": "CONFIG_UML_NET_DAEMON", "vde": "CONFIG_UML_NET_VDE", "tuntap": "CONFIG_UML_NET_TUNTAP"}
PROGRAM_PACKAGES = {"uml_switch": "uml-utilities", "vde_switch": "vde2", "groupadd": "passwd", "groupdel": "passwd",
                    "gpasswd": "passwd",
                    "linux.uml": "user-mode-linux"}


def derived_mac(topology: str, guest: str, index: int) -> str:
    """A stable, locally administered unicast MAC (fe:fd:... as UML's own defaults)."""
    digest = hashlib.sha256(f"{topology}/{guest}/{index}".encode()).digest()
    return "fe:fd:" + ":".join(f"{b:02x}" for b in digest[:4])


def mac_of(topology: Topology, guest: Guest, index: int) -> str:
    nic = guest.nics[index]
    return nic.mac or derived_mac(topology.name, guest.name, index)


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


def socket_in(argv: tuple[str, ...] | list[str]) -> str | None:
    """The socket a switch's argv serves (uml_switch -unix, vde_switch -s), as switch_argv writes it."""
    return _value_after(argv, ("-unix", "-s", "--sock"))


def tap_in(argv: tuple[str, ...] | list[str]) -> str | None:
    """The tap a switch's argv plugs into (uml_switch -tap, vde_switch -t)."""
    return _value_after(argv, ("-tap", "-t"))


def _value_after(argv: tuple[str, ...] | list[str], flags: tuple[str, ...]) -> str | None:
    for i, word in enumerate(argv[:-1]):
        if word in flags:
            return argv[i + 1]
    return None


def nic_transport(topology: Topology, nic: Nic, mac: str) -> tuple[str, str]:
    """(transport, the value of ethN=) for one NIC; the only place that knows the syntax."""
    if nic.tap is not None:
        return "tuntap", f"tuntap,{nic.tap},{mac}"
    switch = topology.switch(nic.switch or "")
    assert switch is not None  # the loader's rules guarantee every reference resolves
    socket = topology.socket_of(switch)
    if switch.kind == "vde_switch":
        return "vde", f"vde,{socket},{mac}"
    return "daemon", f"daemon,{mac},unix,{socket}"


def guest_argv(topology: Topology, guest: Guest, kernel: str) -> tuple[str, ...]:
    """The whole command line, in a fixed order so that equal topologies give equal argv."""
    argv = [kernel, f"umid={guest.name}", f"uml_dir={topology.uml_dir_of(guest)}", f"mem={guest.mem}"]
    cow = topology.cow_of(guest)
    argv.append(f"ubd0={cow},{guest.disk.base}" if cow else f"ubd0={guest.disk.image}")
    # Consoles to stdout (the guest's log): no terminal is needed, none is opened.
    argv += ["con=null", "con0=null,fd:1", "ssl=null"]
    gateway_told = False
    for i, nic in enumerate(guest.nics):
        argv.append(f"eth{i}={nic_transport(topology, nic, mac_of(topology, guest, i))[1]}")
    for i, nic in enumerate(guest.nics):
        subnet = topology.subnet_of_nic(nic)
        if nic.address is not None and subnet is not None:
            argv.append(f"umlstate.eth{i}={nic.address}/{subnet.cidr.prefixlen}")
        if subnet is not None and subnet.gateway is not None and not gateway_told:
            argv.append(f"umlstate.gw={subnet.gateway}")
            gateway_told = True
    argv += guest.args
    return tuple(argv)


def transports_needed(topology: Topology, guest: Guest) -> set[str]:
    return {nic_transport(topology, nic, "00:00:00:00:00:00")[0] for nic in guest.nics}


def resolved(programs: Mapping[str, str | None], name: str) -> str:
    """The path observation found for a program or kernel, or the name itself."""
    return programs.get(name) or name
