"""`umlstate import kathara DIR`: a Kathara (or Netkit) lab as a umlstate topology.

CLI layer; reads the lab, writes nothing but the topology it prints. What it reads is anyone's, so each
file is read with a bound and never through a link (host/safefs.py), and a device folder gives at most
MAX_FILES files. It translates:

- ``lab.conf``: each ``dev[N]="CD"`` (a collision domain, ``/MAC`` after it dropped) becomes NIC N of guest
  dev on a bridge of that name; ``dev[mem]`` becomes mem; other options become a comment;
- ``dev.startup``: ``ifconfig ethN A/P [up]``, ``ifconfig ethN A netmask M``, ``ip [-6] addr add A/P dev ethN``
  become the NIC's addresses (and, with the addresses of the others on it, the collision domain's subnets:
  a bridge carries them all);
  ``route add [-net N/P | -net N netmask M | default] gw G``, ``ip [-6] route add N/P|default via G`` become
  routes; ``sysctl -w K=V`` and ``echo V > /proc/sys/...`` become sysctls; ``ip link set ... up`` and
  comments go; every other line stays, in order, in startup;
- the device folder ``dev/``: each regular file becomes a file of the guest (``from``, relative to the
  folder the topology is written to: ``--out``'s, or the current one).

Every collision domain is a subnet without the host (no gateway); ``--host-on CD=ADDRESS`` puts the host on
one, with that address as its gateway, as Kathara's ``bridged`` or a Netkit tap does.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from umlstate.errors import UsageError
from umlstate.host.safefs import UnsafePath, read_bounded
from umlstate.model.fields import by_address, is_valid_ifname
from umlstate.model.guest import GUEST_FILE_MAX

MAX_FILES = 256  # files taken from one device folder
MAX_CONF = 1 << 20  # bytes of lab.conf or a startup file
CONF_LINE = re.compile(r'^([A-Za-z0-9][A-Za-z0-9_.-]*)\[([A-Za-z0-9_]+)\]=\s*"?([^"]*)"?\s*$')
ADDRESS_LINES = (
    re.compile(r"^ifconfig\s+(eth\d+)\s+([\d.]+/\d+)(?:\s+up)?\s*$"),
    re.compile(r"^ip\s+(?:-[46]\s+)?(?:address|addr|a)\s+add\s+([\d.]+/\d+|[0-9a-fA-F:]+/\d+)\s+dev\s+(eth\d+)\s*$"),
)
NETMASK_LINE = re.compile(r"^ifconfig\s+(eth\d+)\s+([\d.]+)\s+netmask\s+([\d.]+)(?:\s+up)?\s*$")
ROUTE_LINES = (
    re.compile(r"^route\s+add\s+-net\s+([\d.]+/\d+)\s+gw\s+([\d.]+)(?:\s+dev\s+\S+)?\s*$"),
    re.compile(r"^route\s+add\s+-net\s+([\d.]+)\s+netmask\s+([\d.]+)\s+gw\s+([\d.]+)(?:\s+dev\s+\S+)?\s*$"),
    re.compile(r"^route\s+add\s+(default)\s+gw\s+([\d.]+)(?:\s+dev\s+\S+)?\s*$"),
    re.compile(r"^ip\s+route\s+add\s+([\d.]+/\d+|default)\s+via\s+([\d.]+)(?:\s+dev\s+\S+)?\s*$"),
    re.compile(r"^ip\s+-6\s+route\s+add\s+([0-9a-fA-F:]+/\d+|default)\s+via\s+([0-9a-fA-F:]+)(?:\s+dev\s+\S+)?\s*$"),
)
SYSCTL_LINES = (
    re.compile(r"^sysctl\s+-w\s+([a-z0-9_.-]+)=(\S+)\s*$"),
    re.compile(r"^echo\s+(\S+)\s*>\s*/proc/sys/([a-z0-9_/-]+)\s*$"),
)
UP_LINE = re.compile(r"^(?:ip\s+link\s+set\s+(?:dev\s+)?eth\d+\s+up|ifconfig\s+eth\d+\s+up)\s*$")


@dataclass
class Device:
    name: str
    nics: dict[int, str] = field(default_factory=dict)  # index -> collision domain
    options: dict[str, str] = field(default_factory=dict)
    addresses: dict[int, list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]] = field(default_factory=dict)
    routes: list[dict[str, str]] = field(default_factory=list)
    sysctl: dict[str, str] = field(default_factory=dict)
    startup: list[str] = field(default_factory=list)
    files: list[dict[str, str]] = field(default_factory=list)


def convert(lab: Path, *, name: str, user: str, image: str, out: Path | None = None,
            host_on: Mapping[str, str] | None = None) -> str:
    """The topology, as YAML text with a header that says what was left out."""
    devices = _lab_conf(lab / "lab.conf")
    notes: list[str] = []
    for device in devices.values():
        _startup(lab / f"{device.name}.startup", device, notes)
        _folder(lab / device.name, device, out, notes)
    subnets = _subnets(devices, dict(host_on or {}))
    topology: dict[str, Any] = {"name": name}
    hosted = [s for s in subnets if "gateway" in s]
    if hosted:
        topology["host"] = {"sysctl": {"net.ipv4.ip_forward": 1}}
    topology["subnets"] = subnets
    domains: dict[str, list[str]] = {}
    for s in subnets:
        domains.setdefault(s.pop("domain"), []).append(s["name"])
    topology["switches"] = [{"name": _bridge(cd), "kind": "bridge", "subnet": names[0] if len(names) == 1 else names}
                            for cd, names in domains.items()]
    cidrs = {cd: [s["cidr"] for s in subnets if s["name"] in names] for cd, names in domains.items()}
    topology["guests"] = [_guest(d, user, image, cidrs) for d in sorted(devices.values(), key=lambda d: d.name)]
    for device in devices.values():
        left = {k: v for k, v in device.options.items() if k not in ("mem", "image")}
        if left:
            notes.append(f"{device.name}: options not translated: " + ", ".join(f"{k}={v}" for k, v in left.items()))
    header = [f"# Imported from the Kathara lab {lab} by `umlstate import kathara`.",
              "# Every collision domain is a bridge with a subnet the host is not on, unless --host-on named it."]
    header += [f"# note: {n}" for n in notes]
    return "\n".join(header) + "\n" + yaml.safe_dump(topology, sort_keys=False, default_flow_style=None, width=110)


def _read(path: Path, what: str) -> str:
    try:
        return read_bounded(str(path), MAX_CONF).decode("utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnsafePath, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path}: {str(exc).splitlines()[0]}") from None


def _lab_conf(path: Path) -> dict[str, Device]:
    text = _read(path, "the lab's")
    if not text:
        raise UsageError(f"{path} is missing: a Kathara lab is a folder with a lab.conf")
    devices: dict[str, Device] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("LAB_"):
            continue
        m = CONF_LINE.match(line)
        if m is None:
            raise UsageError(f"{path}:{number}: not a lab.conf line: {line[:80]!r}")
        device = devices.setdefault(m[1], Device(m[1]))
        if m[2].isdigit():
            device.nics[int(m[2])] = m[3].split("/")[0]
        else:
            device.options[m[2]] = m[3]
    return devices


def _startup(path: Path, device: Device, notes: list[str]) -> None:
    for raw in _read(path, "the startup file").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or UP_LINE.match(line):
            continue
        if (m := ADDRESS_LINES[0].match(line)) or (m := ADDRESS_LINES[1].match(line)):
            eth, address = (m[1], m[2]) if m.re is ADDRESS_LINES[0] else (m[2], m[1])
            device.addresses.setdefault(int(eth[3:]), []).append(ipaddress.ip_interface(address))
        elif m := NETMASK_LINE.match(line):  # ifconfig sets the one address
            device.addresses[int(m[1][3:])] = [ipaddress.IPv4Interface(f"{m[2]}/{m[3]}")]
        elif m := ROUTE_LINES[1].match(line):
            device.routes.append({"to": str(ipaddress.IPv4Network(f"{m[1]}/{m[2]}")), "via": m[3]})
        elif m := next((r.match(line) for r in (ROUTE_LINES[0], *ROUTE_LINES[2:]) if r.match(line)), None):
            device.routes.append({"to": m[1], "via": m[2]})
        elif m := SYSCTL_LINES[0].match(line):
            device.sysctl[m[1]] = m[2]
        elif m := SYSCTL_LINES[1].match(line):
            device.sysctl[m[2].replace("/", ".")] = m[1]
        else:
            device.startup.append(line)
    missing = sorted(set(device.nics) - set(device.addresses))
    if missing:
        notes.append(f"{device.name}: no address found for eth{', eth'.join(map(str, missing))} in {path.name}")


def _folder(folder: Path, device: Device, out: Path | None, notes: list[str]) -> None:
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return
    except OSError:
        return
    for top, dirs, names in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = Path(top) / name
            if not stat.S_ISREG(os.lstat(path).st_mode):
                notes.append(f"{device.name}: {path} is not a regular file: left out")
                continue
            if len(device.files) == MAX_FILES:
                notes.append(f"{device.name}: more than {MAX_FILES} files: the rest left out")
                return
            if os.lstat(path).st_size > GUEST_FILE_MAX:
                notes.append(f"{device.name}: {path} is larger than {GUEST_FILE_MAX} bytes: left out")
                continue
            where = os.path.relpath(path.resolve(), (out.parent if out is not None else Path()).resolve())
            if where.startswith(".."):
                raise UsageError(f"{path} is not below the folder the topology is written to; a guest file's "
                                 "'from' must be: write it (--out) in the lab's folder or one above it")
            device.files.append({"path": "/" + str(path.relative_to(folder)), "from": where})


def _subnets(devices: Mapping[str, Device], host_on: dict[str, str]) -> list[dict[str, Any]]:
    """The subnets of each collision domain, from the addresses on it (named after it: CD, or CD-1, CD-2, ...
    when it has several); the host's gateway where --host-on says, on the subnet its address is in."""
    found: dict[str, set[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}
    for device in devices.values():
        for index, cd in device.nics.items():
            found.setdefault(cd, set()).update(a.network for a in device.addresses.get(index, ()))
    subnets = []
    for cd in sorted(found):
        nets = sorted(found[cd], key=by_address)
        if not nets:
            raise UsageError(f"collision domain {cd} has no address: umlstate needs an IPv4 subnet on each bridge")
        gateway = host_on.pop(cd, None)
        if gateway is not None and not any(ipaddress.ip_address(gateway) in net for net in nets):
            raise UsageError(f"--host-on {cd}={gateway}: the address is on none of its subnets "
                             f"({', '.join(map(str, nets))})")
        for n, net in enumerate(nets, 1):
            subnet: dict[str, Any] = {"name": cd if len(nets) == 1 else f"{cd}-{n}", "cidr": str(net)}
            if gateway is not None and ipaddress.ip_address(gateway) in net:
                subnet["gateway"] = gateway
            subnets.append({**subnet, "domain": cd})
    if host_on:
        raise UsageError(f"--host-on names no collision domain of the lab: {', '.join(sorted(host_on))}")
    return subnets


def _bridge(cd: str) -> str:
    if not is_valid_ifname(cd):
        raise UsageError(f"collision domain {cd!r} is not a name a Linux bridge can have (at most 15 bytes)")
    return cd


def _guest(device: Device, user: str, image: str, cidrs: Mapping[str, list[str]]) -> dict[str, Any]:
    """A router (a device on several collision domains) forwards, as Kathara's devices do by default, and each
    of its NICs may send from the lab's other subnets (its port security's allow_sources)."""
    guest: dict[str, Any] = {"name": device.name, "user": user, "disk": {"base": image}}
    router = len(device.nics) > 1
    if "mem" in device.options:
        guest["mem"] = device.options["mem"].upper()
    sysctl = {**({"net.ipv4.ip_forward": "1"} if router else {}), **device.sysctl}
    if sysctl:
        guest["sysctl"] = sysctl
    if device.routes:
        guest["routes"] = device.routes
    if device.files:
        guest["files"] = device.files
    if device.startup:
        guest["startup"] = "\n".join(device.startup) + "\n"
    guest["nics"] = []
    for i, cd in sorted(device.nics.items()):
        nic: dict[str, Any] = {"switch": _bridge(cd)}
        ips = [str(a.ip) for a in device.addresses.get(i, ())]
        if len(ips) == 1:
            nic["address"] = ips[0]
        elif ips:
            nic["addresses"] = ips
        if router:
            nic["allow_sources"] = [cidr for name, nets in sorted(cidrs.items()) if name != cd for cidr in nets]
        guest["nics"].append(nic)
    if sorted(device.nics) != list(range(len(device.nics))):
        raise UsageError(f"{device.name}: its interfaces are not eth0, eth1, ... in order (lab.conf)")
    return guest
