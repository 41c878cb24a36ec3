"""The seed kind: what a guest is to be beyond its addresses, on a read-only disk it reads at every boot.

Plan layer. A guest that declares a hostname, sysctls, routes, files or a startup script boots with a second
disk (``ubd1r=``, the guest's /dev/ubdb): a vfat file system labelled ``cidata`` in cloud-init's NoCloud
layout, so that images with cloud-init read it unmodified:

- ``meta-data``: ``instance-id`` (it changes with the seed, so cloud-init applies a changed one) and
  ``local-hostname``;
- ``user-data``: ``#cloud-config`` with the hostname, ``write_files`` (the guest's files, its sysctls as
  /etc/sysctl.d/90-umlstate.conf, its startup as a per-boot script) and ``bootcmd`` loading the sysctls;
- ``network-config``: version 2, each NIC by its MAC, with its address and routes;

and the same facts as plain lines under ``umlstate/`` for inits without cloud-init (umlstate's busybox image;
and ``contrib/guest``'s umlstate-net): ``hostname``, ``sysctl`` (KEY=VALUE), ``routes`` (TO VIA;
IPv6's default as ``::/0``), ``names`` and ``addresses`` (MAC NAME, MAC ADDR/PFX), ``files`` (N MODE PATH,
the content in ``files.d/N``), ``startup`` and ``checks`` (ID ADDRESS EXPECT, results in its log as
``umlstate-check: NONCE ID ok|failed TIME DETAIL``, plan/checks.py). This module renders it (pure); its actions are in
plan/actions/seed.py, root writes it through apply's host port (host/seed.py).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import yaml

from umlstate.model.guest import Guest
from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan import checks
from umlstate.plan.actions.seed import Seed
from umlstate.plan.result import Builder

SYSCTL_FILE = "/etc/sysctl.d/90-umlstate.conf"
STARTUP_FILE = "/var/lib/cloud/scripts/per-boot/umlstate-startup"  # cloud-init runs these at every boot


def default_route(t: Topology, guest: Guest, version: int = 4) -> str | None:
    """The gateway its default route of this IP version goes through: a declared ``default`` route's, else the
    first NIC subnet's gateway (IPv4's the command line also tells it, as ``umlstate.gw=``)."""
    declared = next((r for r in guest.routes if r.to == "default" and r.via.version == version), None)
    if declared is not None:
        return str(declared.via)
    gateways = [gw for nic in guest.nics if (gw := t.gateway_of_nic(nic, version)) is not None]
    return str(gateways[0]) if gateways else None


DEFAULT6 = "::/0"  # IPv6's default route, by its prefix: `ip route add default` would be IPv4's


def seed_of(t: Topology, guest: Guest) -> Seed | None:
    """The seed disk's files; None for a guest told nothing beyond its addresses (it has no seed disk)."""
    if not t.has_seed(guest):
        return None
    hostname = guest.hostname or guest.name
    sysctl = "".join(f"{k} = {v}\n" for k, v in sorted(guest.sysctl.items()))
    routes = [(str(r.to), str(r.via)) for r in guest.routes if r.to != "default"]
    # IPv4's declared default replaces umlstate.gw=; IPv6's (declared, or its gateway's) is only told here.
    declared = [("default", str(r.via)) for r in guest.routes if r.to == "default" and r.via.version == 4]
    default6 = default_route(t, guest, 6)
    declared += [(DEFAULT6, default6)] if default6 else []
    plain: dict[str, str] = {
        "umlstate/hostname": hostname + "\n",
        "umlstate/sysctl": "".join(f"{k}={v}\n" for k, v in sorted(guest.sysctl.items())),
        "umlstate/routes": "".join(f"{to} {via}\n" for to, via in [*routes, *declared]),
        "umlstate/files": "".join(f"{i} {f.mode} {f.path}\n" for i, f in enumerate(guest.files)),
        "umlstate/startup": guest.startup or "",
        # ID TARGET EXPECT: ID is the check's own, which its results name (umlstate-check: lines)
        "umlstate/checks": "".join(f"{checks.check_id(c)} {t.check_target(c)} {c.expect}\n" for c in t.checks
                                   if c.from_ == guest.name),
    }
    plain.update({f"umlstate/files.d/{i}": f.content or "" for i, f in enumerate(guest.files)})
    # MAC NAME and MAC ADDR/PFX (a NIC's addresses after its first, which the command line tells): by MAC, as
    # UML's name for a NIC (eth<i> or vec<i>) depends on the transport. Written only when there are any.
    names = "".join(f"{t.mac_of(guest, i)} {nic.name}\n" for i, nic in enumerate(guest.nics) if nic.name)
    more = "".join(f"{t.mac_of(guest, i)} {iface}\n" for i, nic in enumerate(guest.nics)
                   for iface in t.interfaces_of(nic)[1:])
    plain.update({k: v for k, v in (("umlstate/names", names), ("umlstate/addresses", more)) if v})
    write_files: list[dict[str, Any]] = [{"path": f.path, "content": f.content or "", "permissions": f.mode}
                                         for f in guest.files]
    if sysctl:
        write_files.append({"path": SYSCTL_FILE, "content": sysctl, "permissions": "0644"})
    if guest.startup:
        write_files.append({"path": STARTUP_FILE, "content": "#!/bin/sh\n" + guest.startup, "permissions": "0755"})
    user: dict[str, Any] = {"hostname": hostname, "write_files": write_files}
    if sysctl:
        user["bootcmd"] = [["sysctl", "-p", SYSCTL_FILE]]
    default = default_route(t, guest)
    network = {"version": 2, "ethernets": _ethernets(t, guest, [*routes, *([("default", default)] if default else []),
                                                               *([(DEFAULT6, default6)] if default6 else [])])}
    told = {**plain, "user-data": "#cloud-config\n" + _yaml(user), "network-config": _yaml(network)}
    body = Seed(tuple(sorted((k, v.encode()) for k, v in told.items())))
    meta = {"instance-id": f"umlstate-{t.name}-{guest.name}-{body.digest[:12]}", "local-hostname": hostname}
    return Seed(tuple(sorted((*body.files, ("meta-data", _yaml(meta).encode())))))


def _ethernets(t: Topology, guest: Guest, routes: list[tuple[str, str]]) -> dict[str, Any]:
    """network-config v2: each NIC by its MAC, with its name, its addresses and the routes whose next hop is on
    the network of one of them."""
    found: dict[str, Any] = {}
    for i, nic in enumerate(guest.nics):
        entry: dict[str, Any] = {"match": {"macaddress": t.mac_of(guest, i)}}
        if nic.name:
            entry["set-name"] = nic.name
        interfaces = t.interfaces_of(nic)
        if interfaces:
            entry["addresses"] = [str(iface) for iface in interfaces]
            hops = [{"to": to, "via": via} for to, via in routes
                    if any(ipaddress.ip_address(via) in iface.network for iface in interfaces)]
            if hops:
                entry["routes"] = hops
        found[f"nic{i}"] = entry
    return found


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def plan_step(t: Topology, b: Builder) -> None:
    """Each seeded guest's disk written when missing or not what the topology says now; a guest that runs
    reads it at its next boot. A seed no guest wants any more is removed."""
    wanted = {}
    for guest in sorted(t.guests, key=lambda g: g.name):
        seed, path = seed_of(t, guest), t.seed_of(guest)
        if seed is None or path is None:
            continue
        wanted[guest.name] = path
        have = b.s.seeds.get(guest.name)
        if have is not None and have.digest == seed.digest and have.path == path and have.user == guest.user:
            continue
        state = b.s.guests.get(guest.name)
        running = state is not None and state.proc is not None
        if have is None:
            b.add(A.WriteSeed("missing", guest.name, path, guest.user, seed))
        else:
            why = "the topology tells the guest something new" if have.digest != seed.digest or have.path != path \
                else f"written for {have.user or 'another user'}, now the guest runs as {guest.user}"
            b.add(A.RewriteSeed(why + ("; the running guest reads it at its next boot" if running else ""),
                                guest.name, path, guest.user, seed))
    for name, have in sorted(b.s.seeds.items()):
        if name not in wanted or wanted[name] != have.path:
            b.add(A.DeleteSeed("no longer wanted", name, have.path))
