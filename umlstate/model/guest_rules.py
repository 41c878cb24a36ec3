"""Validation rules on each guest: its NICs, MACs, disk, command line words, and what a lab tells it.

First stage of the pipeline; ``rules.check`` runs these with the topology-wide
rules, every problem at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from umlstate.model.fields import is_valid_ifname
from umlstate.model.problem import Loc, Problem
from umlstate.model.topology import Topology

# Kernel command line words umlstate writes itself, and the field each comes from: given again in args,
# the guest would read two values (issue 18).
OWN_WORDS = ((r"umlstate\.gw=", "the subnet's gateway"), (r"umlstate\.(eth|vec)[0-9]+=", "nics[].address"),
             (r"umid=", "the guest's name"), (r"uml_dir=", "host.run_dir"), (r"mem=", "mem"),
             (r"ubd0[rsc]*=", "disk"), (r"con1=", "the console umlstate makes"), (r"(eth|vec)[0-9]+[=:]", "nics"))


def macs(t: Topology) -> Iterator[Problem]:
    seen: dict[str, str] = {}
    for g, guest in enumerate(t.guests):
        for n, nic in enumerate(guest.nics):
            if nic.mac is None:
                continue
            if nic.mac in seen:
                yield Problem(("guests", g, "nics", n, "mac"),
                              f"mac {nic.mac} of guest {guest.name} eth{n} is already used by {seen[nic.mac]}")
            else:
                seen[nic.mac] = f"guest {guest.name} eth{n}"


def nics(t: Topology) -> Iterator[Problem]:
    for g, guest in enumerate(t.guests):
        for n, nic in enumerate(guest.nics):
            if (nic.switch is None) == (nic.tap is None):
                yield Problem(("guests", g, "nics", n),
                              f"guest {guest.name} eth{n} needs exactly one of 'switch' or 'tap'"
                              + (", not both" if nic.switch else ""))
        names: dict[str, int] = {}
        for n, nic in enumerate(guest.nics):
            if nic.name is None:
                continue
            if not is_valid_ifname(nic.name):
                yield Problem(("guests", g, "nics", n, "name"), f"guest {guest.name} NIC {n} name {nic.name!r} is "
                                                                "not an interface name: at most 15 bytes, no '/', ':' "
                                                                "or white space")
            elif (m := re.fullmatch(r"(eth|vec)([0-9]+)", nic.name)) and int(m[2]) != n:
                yield Problem(("guests", g, "nics", n, "name"), f"guest {guest.name} NIC {n} cannot be named "
                                                                f"{nic.name}: UML gives that name to NIC {m[2]}")
            elif nic.name in names:
                yield Problem(("guests", g, "nics", n, "name"), f"guest {guest.name} names two NICs {nic.name} "
                                                                f"(NIC {names[nic.name]} and NIC {n})")
            names.setdefault(nic.name, n)
        for a, word in enumerate(guest.args):
            field = next((f for pattern, f in OWN_WORDS if re.match(pattern, word)), None)
            if field is not None:
                yield Problem(("guests", g, "args", a), f"guest {guest.name} args repeat {word.split('=')[0]!r}, "
                                                        f"which umlstate writes itself from {field}; set it there")
        size = _mem_bytes(guest.mem)
        if size < 16 << 20:
            yield Problem(("guests", g, "mem"), f"guest {guest.name} mem {guest.mem} is too small for "
                                                "UML to boot; give at least 64M")


def _mem_bytes(mem: str) -> int:
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    suffix = mem[-1].lower()
    if suffix in scale:
        return int(mem[:-1]) * scale[suffix]
    return int(mem)


def disks(t: Topology) -> Iterator[Problem]:
    for g, guest in enumerate(t.guests):
        d = guest.disk
        loc: Loc = ("guests", g, "disk")
        if d.base is not None and d.image is not None:
            yield Problem(loc, f"guest {guest.name} disk has both 'base' and 'image'; "
                               "use base (+cow) for a shared image, or image for a private one")
        elif d.base is None and d.image is None:
            yield Problem(loc, f"guest {guest.name} disk needs 'base' (with a COW file) or 'image'")
        if d.cow is not None and d.base is None:
            yield Problem(("guests", g, "disk", "cow"), f"guest {guest.name} disk has 'cow' without 'base'")


def lab(t: Topology) -> Iterator[Problem]:
    """What a guest is told beyond its addresses: routes through neighbours it has, files it can be given."""
    for g, guest in enumerate(t.guests):
        nets = [(n, s) for n, nic in enumerate(guest.nics) for s in t.subnets_of_nic(nic)]
        defaults: set[int] = set()  # the IP versions with a default route
        for r, route in enumerate(guest.routes):
            loc: Loc = ("guests", g, "routes", r)
            if route.to != "default" and route.to.version != route.via.version:
                yield Problem((*loc, "via"), f"guest {guest.name} route to {route.to} goes via {route.via}, an "
                                             f"IPv{route.via.version} address; the next hop must be "
                                             f"IPv{route.to.version}")
            elif not any(route.via.version == s.cidr.version and route.via in s.cidr for _, s in nets):
                on = ", ".join(f"{s.name} ({s.cidr})" for _, s in nets) or "no subnet"
                yield Problem((*loc, "via"), f"guest {guest.name} route to {route.to} goes via {route.via}, which "
                                             f"is on none of its NICs' subnets ({on})")
            if route.to == "default":
                if route.via.version in defaults:
                    yield Problem((*loc, "to"), f"guest {guest.name} has more than one IPv{route.via.version} "
                                                "default route")
                defaults.add(route.via.version)
        paths: set[str] = set()
        for f, file in enumerate(guest.files):
            loc = ("guests", g, "files", f)
            if file.content is None and file.from_ is None:
                yield Problem(loc, f"guest {guest.name} file {file.path} needs 'content' or 'from'")
            if file.path in paths:
                yield Problem((*loc, "path"), f"guest {guest.name} has two files at {file.path}")
            paths.add(file.path)
    for c, check in enumerate(t.checks):
        if t.guest(check.from_) is None:
            yield Problem(("checks", c, "from"), f"check {check.label}: no guest is named {check.from_!r}")
        if t.check_target(check) is None:
            what = "a guest without an address" if t.guest(check.ping) else "neither a guest nor an IP address"
            yield Problem(("checks", c, "ping"), f"check {check.label}: {check.ping!r} is {what}")
    hosted = [s for s in t.subnets if s.gateway is not None and s.cidr.version == 4]
    for r, host_route in enumerate(t.host.routes):
        if host_route.to == "default":
            yield Problem(("host", "routes", r, "to"), "host routes lead to networks behind guests; umlstate does "
                                                       "not set the host's default route (a guest would own it)")
        elif not any(host_route.via in s.cidr for s in hosted):
            on = ", ".join(f"{s.name} ({s.cidr})" for s in hosted) or "none"
            yield Problem(("host", "routes", r, "via"), f"host route to {host_route.to} goes via {host_route.via}, "
                                                        "which is on "
                                                        f"no subnet the host has a gateway on ({on})")
