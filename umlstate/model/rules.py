"""Validation rules that span several objects of a topology.

Runs after the model has parsed (so every field has its type) and before
anything looks at the host. Each rule yields ``Problem``s located by a path
into the document, which the loader turns into FILE:LINE:COL. Rules never
stop at the first problem: the user sees everything at once.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from umlstate.model.fields import IPAddress, is_valid_ifname, nft_literal
from umlstate.model.guest_rules import disks, lab, macs, nics
from umlstate.model.problem import Loc, Problem, known
from umlstate.model.topology import Topology

# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
# Folders of the system itself: umlstate makes users/ and logs/ in run_dir and state_dir and
# removes what it made there; it must have folders of its own.
SYSTEM_FOLDERS = frozenset({"/", "/run", "/var/run", "/var", "/var/lib", "/tmp", "/var/tmp", "/etc", "/usr", "/home",
                            "/root", "/dev", "/proc", "/sys", "/srv", "/opt", "/boot", "/lib", "/bin", "/sbin"})


def check(topology: Topology) -> list[Problem]:
    problems: list[Problem] = []
    for rule in (_unique_names, _references, _switch_kinds, _interfaces, _paths, _subnets, _addresses, macs,
                 nics, disks, _hosts, _policy, lab):
        problems.extend(rule(topology))
    return problems


def _unique_names(t: Topology) -> Iterator[Problem]:
    kinds: dict[str, list[str]] = {
        "subnets": [s.name for s in t.subnets],
        "taps": [x.name for x in t.taps],
        "switches": [s.name for s in t.switches],
        "guests": [g.name for g in t.guests],
        "groups": [g.name for g in t.host.groups],
    }
    for kind, names in kinds.items():
        first: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in first:
                loc: Loc = ("host", "groups", i, "name") if kind == "groups" else (kind, i, "name")
                yield Problem(loc, f"{kind[:-1] if kind != 'switches' else 'switch'} name {name!r} "
                                   f"is used twice (first as {kind}[{first[name]}])")
            else:
                first[name] = i


def _references(t: Topology) -> Iterator[Problem]:
    subnets = {s.name for s in t.subnets}
    taps = {x.name for x in t.taps}
    switches = {s.name for s in t.switches}
    served: dict[str, str] = {}
    servers: list[tuple[Loc, str, tuple[str, ...], bool]] = [
        (("taps", i, "subnet"), f"tap {x.name}", x.subnet_names, isinstance(x.subnet, tuple))
        for i, x in enumerate(t.taps)]
    servers += [(("switches", i, "subnet"), f"bridge {sw.name}", sw.subnet_names, isinstance(sw.subnet, tuple))
                for i, sw in enumerate(t.switches) if sw.is_bridge]
    for base, who, names, listed in servers:
        for j, subnet in enumerate(names):
            loc: Loc = (*base, j) if listed else base
            if subnet not in subnets:
                yield Problem(loc, f"{who} refers to subnet {subnet!r}, which is not defined{known(subnets)}")
            elif subnet in served:
                yield Problem(loc, f"subnet {subnet} is already served by {served[subnet]}; a subnet is served by "
                                   "exactly one tap or bridge")
            else:
                served[subnet] = who
    for i, sw in enumerate(t.switches):
        if sw.tap is not None and sw.tap not in taps:
            yield Problem(("switches", i, "tap"), f"switch {sw.name} refers to tap {sw.tap!r}, "
                                                  f"which is not defined{known(taps)}")
    plugged: dict[str, str] = {}
    for i, sw in enumerate(t.switches):
        if sw.tap in taps:
            if sw.tap in plugged:
                yield Problem(("switches", i, "tap"), f"tap {sw.tap} is already used by switch "
                                                      f"{plugged[sw.tap]}; a tap takes one switch")
            else:
                plugged[sw.tap] = sw.name
    for g, guest in enumerate(t.guests):
        for n, nic in enumerate(guest.nics):
            if nic.switch is not None and nic.switch not in switches:
                yield Problem(("guests", g, "nics", n, "switch"),
                              f"guest {guest.name} eth{n} refers to switch {nic.switch!r}, "
                              f"which is not defined{known(switches)}")
            if nic.tap is not None and nic.tap not in taps:
                yield Problem(("guests", g, "nics", n, "tap"),
                              f"guest {guest.name} eth{n} refers to tap {nic.tap!r}, "
                              f"which is not defined{known(taps)}")


def _switch_kinds(t: Topology) -> Iterator[Problem]:
    """A bridge is a kernel object: no process, user, socket or tap; a switch process needs its user."""
    for i, sw in enumerate(t.switches):
        if sw.is_bridge:
            for field, value in (("user", sw.user), ("tap", sw.tap), ("socket", sw.socket)):
                if value is not None:
                    yield Problem(("switches", i, field), f"bridge {sw.name} has no {field}: it is a Linux bridge, "
                                                          "not a process (each guest NIC gets its own tap on it)")
            if sw.hub:
                yield Problem(("switches", i, "hub"), f"bridge {sw.name} cannot be a hub")
            if not _policy_ifname(sw.name):
                yield Problem(("switches", i, "name"), _ifname_message("bridge name", sw.name))
        else:
            if sw.user is None:
                yield Problem(("switches", i), f"switch {sw.name} ({sw.kind}) needs 'user': the switch process "
                                               "runs as that user")
            if sw.subnet is not None:
                yield Problem(("switches", i, "subnet"), f"switch {sw.name} is a {sw.kind}: a subnet is carried "
                                                         "by its tap (taps[].subnet), or use kind: bridge")
    for g, guest in enumerate(t.guests):
        for n, nic in enumerate(guest.nics):
            via = t.switch(nic.switch) if nic.switch else None
            if via is not None and not via.is_bridge and via.user is not None and via.user != guest.user:
                yield Problem(("guests", g, "nics", n, "switch"),
                              f"guest {guest.name} runs as {guest.user}, but switch {via.name} runs as {via.user}, "
                              f"whose socket only its own user may open; run both as one user, or use a bridge")
            if via is not None and via.is_bridge and nic.transport == "legacy":
                yield Problem(("guests", g, "nics", n, "transport"),
                              f"guest {guest.name} NIC {n} is on bridge {via.name}, which UML reaches only through "
                              "the vector transport; use transport: auto or vector")


def _interfaces(t: Topology) -> Iterator[Problem]:
    for i, tap in enumerate(t.taps):
        if not _policy_ifname(tap.name):
            yield Problem(("taps", i, "name"), _ifname_message("tap name", tap.name))
    # Every interface umlstate makes has a name of its own: declared taps, bridges, the taps of bridge NICs.
    made: dict[str, str] = {}
    named: list[tuple[Loc, str, str]] = [(("taps", i, "name"), x.name, f"tap {x.name}") for i, x in enumerate(t.taps)]
    named += [(("switches", i, "name"), b.name, f"bridge {b.name}") for i, b in enumerate(t.switches) if b.is_bridge]
    positions = {g.name: i for i, g in enumerate(t.guests)}
    named += [(("guests", positions[nt.guest], "nics", nt.nic), nt.name, f"the tap of guest {nt.guest} NIC {nt.nic}")
              for nt in t.nic_taps()]
    for where, name, who in named:
        both_declared = who.startswith("tap ") and made.get(name, "").startswith("tap ")  # _unique_names says so
        if name in made and not both_declared:
            yield Problem(where, f"{who} is named {name}, like {made[name]}; interface names must differ")
        made.setdefault(name, who)
    taps = {x.name for x in t.taps}
    for i, subnet in enumerate(t.subnets):
        for field, proxy, version, what in (("proxy_arp", subnet.proxy_arp, 4, "proxy ARP"),
                                            ("proxy_ndp", subnet.proxy_ndp, 6, "proxy NDP")):
            if proxy is None:
                continue
            loc: Loc = ("subnets", i, field)
            if subnet.cidr.version != version:
                yield Problem(loc, f"subnet {subnet.name} ({subnet.cidr}) is IPv{subnet.cidr.version}: {what} is "
                                   f"for IPv{version} subnets; use {'proxy_ndp' if version == 4 else 'proxy_arp'}")
            elif not is_valid_ifname(proxy.uplink):
                yield Problem((*loc, "uplink"), _ifname_message("uplink", proxy.uplink))
            elif proxy.uplink in taps:
                yield Problem((*loc, "uplink"), f"uplink {proxy.uplink} is one of the topology's taps; "
                                                f"{what} answers on the LAN interface, e.g. eth0")
        if subnet.nat and subnet.cidr.version == 6:
            yield Problem(("subnets", i, "nat"), f"subnet {subnet.name} ({subnet.cidr}) is IPv6: nat masquerades "
                                                 "IPv4 only; route the prefix to the host instead")


def _ifname_message(what: str, name: str) -> str:
    size = len(name.encode())
    if size > 15:
        return f"{what} {name!r} is {size} bytes long; Linux interface names have at most 15"
    if is_valid_ifname(name):
        return (f"{what} {name!r} cannot key the traffic policy: nftables reads a trailing '*' as a wildcard, a "
                "leading '@' or '$' as a reference, '\\' and '\"' as escapes; rename it")
    return f"{what} {name!r} is not a valid Linux interface name (no '/', ':', spaces, '.' or '..')"


def _policy_ifname(name: str) -> bool:
    """A name umlstate gives a link the traffic policy matches: Linux's rule, and nftables' (nft_literal)."""
    return is_valid_ifname(name) and nft_literal(name)


def _paths(t: Topology) -> Iterator[Problem]:
    host = t.host
    candidates: list[tuple[Loc, str | None, str]] = [
        (("host", "run_dir"), host.run_dir, "run_dir"),
        (("host", "state_dir"), host.state_dir, "state_dir"),
        (("host", "tun", "path"), host.tun.path if host.tun else None, "tun path"),
    ]
    for i, sw in enumerate(t.switches):
        candidates.append((("switches", i, "socket"), sw.socket, f"switch {sw.name} socket"))
    for g, guest in enumerate(t.guests):
        for field in ("base", "cow", "image"):
            candidates.append((("guests", g, "disk", field), getattr(guest.disk, field),
                               f"guest {guest.name} disk {field}"))
        if "/" in guest.kernel:
            candidates.append((("guests", g, "kernel"), guest.kernel, f"guest {guest.name} kernel"))
    for loc, path, what in candidates[:2]:
        if path is not None and path.rstrip("/") in SYSTEM_FOLDERS | {""}:
            yield Problem(loc, f"{what} {path!r} is a folder of the system; give umlstate one of its own "
                               f"(the default is /{'run' if what == 'run_dir' else 'var/lib'}/umlstate/<name>)")
    for loc, path, what in candidates:
        if path is not None and not posixpath.isabs(path):
            yield Problem(loc, f"{what} {path!r} is a relative path; give an absolute one, "
                               "since umlstate runs from cron and timers in any folder")
        elif path is not None and posixpath.normpath(path) != path.rstrip("/") and path != "/":
            yield Problem(loc, f"{what} {path!r} is not a normalised path (remove '..', '.', '//')")

    for i, sw in enumerate(t.switches):
        if sw.is_bridge or sw.user is None:  # no socket; a missing user is reported by _switch_kinds
            continue
        sock = t.socket_of(sw)
        if len(sock.encode()) > MAX_SOCKET_PATH:
            loc = ("switches", i, "socket") if sw.socket else ("switches", i, "name")
            yield Problem(loc, f"switch {sw.name} socket {sock} is {len(sock.encode())} bytes long; "
                               f"unix socket paths have at most {MAX_SOCKET_PATH}")
    for g, guest in enumerate(t.guests):
        sock = t.mconsole_of(guest)
        if len(sock.encode()) > MAX_SOCKET_PATH:
            yield Problem(("guests", g, "name"),
                          f"guest {guest.name} mconsole socket {sock} is {len(sock.encode())} bytes "
                          f"long; unix socket paths have at most {MAX_SOCKET_PATH} (shorten run_dir)")


def _subnets(t: Topology) -> Iterator[Problem]:
    for i, subnet in enumerate(t.subnets):
        net, gw = subnet.cidr, subnet.gateway
        if net.prefixlen > net.max_prefixlen - 2:
            yield Problem(("subnets", i, "cidr"), f"subnet {subnet.name} {net} has no room for a gateway and "
                                                  f"guests; use a prefix of /{net.max_prefixlen - 2} or shorter")
        if gw is None:
            continue
        if gw.version != net.version or gw not in net:
            yield Problem(("subnets", i, "gateway"),
                          f"gateway {gw} is not inside subnet {subnet.name} ({net})")
        elif gw == net.network_address or (net.version == 4 and gw == net.broadcast_address):
            which = "network" if gw == net.network_address else "broadcast"
            yield Problem(("subnets", i, "gateway"),
                          f"gateway {gw} is the {which} address of subnet {subnet.name} ({net})")
    # Sorted by start, a network overlaps an earlier one only if it starts before
    # the furthest end seen so far: one pass instead of comparing every pair.
    # IPv4 first, then IPv6: a network overlaps only one of its own version.
    order = sorted(range(len(t.subnets)), key=lambda i: (t.subnets[i].cidr.version,
                                                         int(t.subnets[i].cidr.network_address), i))
    reach: tuple[int, int] | None = None  # (last address, index) of the widest network so far
    for i in order:
        net = t.subnets[i].cidr
        if reach is not None and t.subnets[reach[1]].cidr.version != net.version:
            reach = None
        if reach is not None and int(net.network_address) <= reach[0]:
            first, second = sorted((i, reach[1]))
            a, b = t.subnets[second], t.subnets[first]
            yield Problem(("subnets", second, "cidr"),
                          f"subnet {a.name} ({a.cidr}) overlaps subnet {b.name} ({b.cidr})")
        end = int(net.broadcast_address)
        if reach is None or end > reach[0]:
            reach = (end, i)


def _addresses(t: Topology) -> Iterator[Problem]:
    """Each address of a NIC inside one of its subnets, not the network's, broadcast or gateway, nobody else's."""
    used: dict[IPAddress, str] = {}
    for g, guest in enumerate(t.guests):
        for n, nic in enumerate(guest.nics):
            places: list[tuple[Loc, IPAddress]] = [(("guests", g, "nics", n, "address"), nic.address)] \
                if nic.address is not None else []
            places += [(("guests", g, "nics", n, "addresses", a), ip) for a, ip in enumerate(nic.addresses)]
            if not places:
                continue
            where = f"guest {guest.name} eth{n}"
            via = _via(t, nic.switch, nic.tap)
            subnets = t.subnets_of_nic(nic)
            for loc, ip in places:
                if not subnets:
                    if via:
                        yield Problem(loc, f"{where} has address {ip}, but {via} is on no subnet; "
                                           f"give the {'bridge' if via.startswith('bridge') else 'tap'} a subnet")
                    continue
                subnet = t.subnet_of_address(nic, ip)
                if subnet is None:
                    on = ", ".join(f"{s.name} ({s.cidr})" for s in subnets)
                    yield Problem(loc, f"{where} address {ip} is not inside "
                                       f"{'subnet' if len(subnets) == 1 else 'any of the subnets'} {on} of {via}")
                    continue
                net = subnet.cidr
                if ip == net.network_address:
                    yield Problem(loc, f"{where} address {ip} is the network address of subnet {subnet.name} ({net})")
                elif net.version == 4 and ip == net.broadcast_address:
                    yield Problem(loc, f"{where} address {ip} is the broadcast address of subnet {subnet.name} "
                                       f"({net})")
                elif ip == subnet.gateway:
                    yield Problem(loc, f"{where} address {ip} is the gateway of subnet {subnet.name}; the host "
                                       "holds it")
                if ip in used:
                    yield Problem(loc, f"{where} address {ip} is already used by {used[ip]}")
                else:
                    used[ip] = where


def _via(t: Topology, switch: str | None, tap: str | None) -> str:
    if switch is not None:
        sw = t.switch(switch)
        if sw is None:
            return ""
        if sw.is_bridge:
            return f"bridge {sw.name}"
        return f"switch {sw.name} on tap {sw.tap}" if sw.tap else f"switch {sw.name} (no tap)"
    if tap is not None and t.tap(tap) is not None:
        return f"tap {tap}"
    return ""


def _hosts(t: Topology) -> Iterator[Problem]:
    """Several hosts: every guest placed on a known one, a switch process with its guests, VXLAN ids unique."""
    names = {h.name for h in t.hosts}
    seen: dict[object, str] = {}
    for i, h in enumerate(t.hosts):
        for key, what in ((("name", h.name), "name"), (("underlay", h.underlay), "underlay")):
            if key in seen:
                yield Problem(("hosts", i, what), f"host {what} {key[1]} is used twice (first by host {seen[key]})")
            seen.setdefault(key, h.name)
    for g, guest in enumerate(t.guests):
        if not t.hosts and guest.host is not None:
            yield Problem(("guests", g, "host"), f"guest {guest.name} names host {guest.host!r}, but the topology "
                                                 "lists no hosts; add a hosts list, or remove host")
        elif t.hosts and guest.host is None:
            yield Problem(("guests", g), f"guest {guest.name} needs 'host': the topology lists several hosts "
                                         f"({', '.join(sorted(names))})")
        elif t.hosts and guest.host not in names:
            yield Problem(("guests", g, "host"), f"guest {guest.name} runs on host {guest.host!r}, which is not "
                                                 f"defined{known(names)}")
    for i, sw in enumerate(t.switches):
        if sw.is_bridge:
            continue
        if sw.vni is not None:
            yield Problem(("switches", i, "vni"), f"switch {sw.name} is a {sw.kind}: only a bridge is stretched "
                                                  "over VXLAN")
        placed = sorted({g.host for g in t.guests if g.host and any(n.switch == sw.name for n in g.nics)})
        if len(placed) > 1:
            yield Problem(("switches", i), f"switch {sw.name} is a {sw.kind} process, which runs on one host, but "
                                           f"its guests run on {', '.join(placed)}; use kind: bridge to span hosts")
    vnis: dict[int, str] = {}
    for i, sw in enumerate(t.switches):
        if sw.is_bridge:
            vni = t.vni_of(sw)
            if vni in vnis:
                yield Problem(("switches", i, "vni"), f"bridge {sw.name} has VXLAN id {vni}, like bridge "
                                                      f"{vnis[vni]}; give one of them another vni")
            vnis.setdefault(vni, sw.name)


def _policy(t: Topology) -> Iterator[Problem]:
    """The traffic policy's references: reach between subnets, isolated bridges, forwards to guests."""
    subnets = {s.name for s in t.subnets}
    for i, subnet in enumerate(t.subnets):
        for j, other in enumerate(subnet.reach):
            if other == subnet.name:
                yield Problem(("subnets", i, "reach", j), f"subnet {subnet.name} lists itself in reach; its guests "
                                                          "reach each other already")
            elif other not in subnets:
                yield Problem(("subnets", i, "reach", j), f"subnet {subnet.name} reaches subnet {other!r}, which "
                                                          f"is not defined{known(subnets)}")
    for i, sw in enumerate(t.switches):
        if sw.isolated and not sw.is_bridge:
            yield Problem(("switches", i, "isolated"), f"switch {sw.name} is a {sw.kind} process: only a bridge "
                                                       "can isolate its ports (kind: bridge)")
    guests = {g.name: g for g in t.guests}
    used: dict[tuple[str, int, str | None], int] = {}
    for i, fwd in enumerate(t.forwards):
        guest = guests.get(fwd.to)
        if guest is None:
            yield Problem(("forwards", i, "to"), f"forward of {fwd.proto} port {fwd.port} goes to guest {fwd.to!r}, "
                                                 f"which is not defined{known(set(guests))}")
        elif guest.first_ip(4) is None:
            yield Problem(("forwards", i, "to"), f"forward of {fwd.proto} port {fwd.port} goes to guest {fwd.to}, "
                                                 "which has no IPv4 address; give one of its NICs one (forwards "
                                                 "are IPv4)")
        if fwd.on is not None and fwd.on_address is None and not is_valid_ifname(fwd.on):
            yield Problem(("forwards", i, "on"), f"forward on {fwd.on!r}: neither an IPv4 address nor a valid "
                                                 "interface name")
        key = (fwd.proto, fwd.port, fwd.on)
        if key in used:
            yield Problem(("forwards", i, "port"), f"{fwd.proto} port {fwd.port} is forwarded twice (first by "
                                                   f"forwards[{used[key]}])")
        used.setdefault(key, i)
