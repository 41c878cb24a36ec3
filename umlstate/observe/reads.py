"""The observation's reads that need no topology, each given what to read by name.

Observation layer, below ``observe.observe`` (which decides what to read from
the topology and the records) and ``observe.witness`` (which reads the same
again for the quick in-sync pass). Both call these, so a quick pass sees the
host through the very code a full one does. Only the standard library and
umlstate's light host modules are imported here: no pydantic, no topology.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from umlstate.host import cow, identity, logs, mconsole
from umlstate.host.cgroups import Cgroups
from umlstate.host.netlink import Netlink, links_of
from umlstate.host.tun import is_tun_node
from umlstate.model.guestline import mconsole_of
from umlstate.model.snapshot import (
    CowFile,
    HostGroup,
    IPAddress,
    IPInterface,
    IPv4Address,
    Link,
    Proc,
    TunNode,
    compact,
)

PROGRAM_PATH = ":/usr/sbin:/usr/bin:/sbin:/bin"  # searched after $PATH: root's tools, whatever cron's PATH is


@dataclass(frozen=True)
class Network:
    """What rtnetlink says of the links umlstate owns or names, and of their addresses and neighbours."""

    links: dict[str, Link]
    addresses: dict[str, frozenset[IPInterface]]
    proxies: frozenset[tuple[str, IPAddress]]
    routes: frozenset[tuple[str, IPv4Address]]
    fdb: frozenset[tuple[str, str, IPv4Address]]


def network(netlink: Netlink, names: Iterable[str], uplinks: set[str], *, routes: bool) -> Network:
    """Every tun, bridge and VXLAN link and the ``names`` whatever their kind; the addresses of the first two
    and of the ``uplinks``; the proxy entries; umlstate's routes (when ``routes``); VXLAN's static entries."""
    links, index = netlink.links(set(names) | uplinks)
    return Network(links, *_around(netlink, _kinds(links, uplinks), index, routes=routes))


@dataclass(frozen=True)
class LinksRead:
    """The links as the quick pass's witness reads them: a digest of the kernel's answers, and what they decode
    to (only when they differ from the answers ``known`` was made from: the same answers decode the same)."""

    answers: str  # digest of Netlink.link_answers
    links: Any  # the links, as snapshot.compact makes them
    index: dict[int, str]
    ours: tuple[str, ...]  # the tun links, bridges and uplinks among them: whose addresses are read
    vxlans: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"answers": self.answers, "links": self.links, "index": {str(i): n for i, n in self.index.items()},
                "ours": list(self.ours), "vxlans": list(self.vxlans)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LinksRead:
        return cls(str(data["answers"]), data["links"], {int(i): str(n) for i, n in data["index"].items()},
                   tuple(data["ours"]), tuple(data["vxlans"]))


def network_witnessed(netlink: Netlink, names: Iterable[str], uplinks: set[str], *, routes: bool,
                      known: LinksRead | None) -> tuple[dict[str, Any], LinksRead]:
    """What ``network`` reads, in compact form, for the quick pass's digest; and its links as read now. The
    links are decoded only when the kernel's answers differ from those ``known`` was made from."""
    answers = netlink.link_answers(set(names) | uplinks)
    digest = hashlib.sha256()
    for answer in answers:
        digest.update(len(answer).to_bytes(4, "little"))
        digest.update(answer)
    read = known if known is not None and known.answers == digest.hexdigest() else None
    if read is None:
        links, index = links_of(answers)
        ours, vxlans = _kinds(links, uplinks)
        read = LinksRead(digest.hexdigest(), compact(links), index, tuple(sorted(ours)), tuple(sorted(vxlans)))
    # Addresses and proxy entries undecoded (a thousand of each as objects would cost a third of the read).
    index, ours = read.index, set(read.ours)
    return {"links": read.links, "addresses": netlink.address_keys(index, ours),
            "proxies": netlink.proxy_keys(index),
            "routes": compact(netlink.routes() if routes else frozenset()),
            "fdb": compact(netlink.fdb(index, set(read.vxlans)))}, read


def _kinds(links: Mapping[str, Link], uplinks: set[str]) -> tuple[set[str], set[str]]:
    """Of the links read: the tun links, bridges and uplinks (whose addresses are read), and the VXLANs."""
    ours = {n for n, link in links.items() if link.kind in ("tun", "bridge")} | uplinks
    return {n for n in ours if n in links}, {n for n, link in links.items() if link.kind == "vxlan"}


def _around(netlink: Netlink, kinds: tuple[set[str], set[str]], index: dict[int, str], *, routes: bool) -> tuple[
        dict[str, frozenset[IPInterface]], frozenset[tuple[str, IPAddress]], frozenset[tuple[str, IPv4Address]],
        frozenset[tuple[str, str, IPv4Address]]]:
    """What is read around the links: their addresses, the proxy entries, umlstate's routes, VXLAN's entries."""
    ours, vxlans = kinds
    return (netlink.addresses(index, ours), netlink.proxies(index),
            netlink.routes() if routes else frozenset(), netlink.fdb(index, vxlans))


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read(64).strip()
    except OSError:
        return None


def tun_node(path: str) -> TunNode:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return TunNode(path, exists=False)
    return TunNode(path, exists=True, is_tun=is_tun_node(st), mode=stat.S_IMODE(st.st_mode), gid=st.st_gid)


def program(name: str) -> str | None:
    """Where a program the topology names is: a path as given if executable, else found on $PATH."""
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    return shutil.which(name, path=os.environ.get("PATH", "") + PROGRAM_PATH)


def regular(path: str) -> bool:
    """A regular file is there (root's own, in state_dir: looked at, never followed)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def cow_file(path: str, base: str) -> CowFile | None:
    """A COW file's record of its base, beside the base as it is now; None: missing, or an older layout."""
    header = cow.read_header(path)  # bounded, never blocks: the file may be the guest user's
    if header is None:
        return None
    try:
        st = os.stat(base)
        now: tuple[int | None, int | None] = (int(st.st_mtime), st.st_size)
    except OSError:
        now = (None, None)
    return CowFile(header.base_mtime, header.base_size, *now)


def users(names: Iterable[str]) -> tuple[dict[str, int | None], dict[str, int]]:
    """Each user named -> uid (None: no such user), and -> their primary group's gid."""
    uids: dict[str, int | None] = {}
    gids: dict[str, int] = {}
    for name in sorted(n for n in names if not n.isdigit()):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            uids[name] = None
        else:
            uids[name], gids[name] = entry.pw_uid, entry.pw_gid
    return uids, gids


def groups(names: Iterable[str]) -> dict[str, HostGroup | None]:
    out: dict[str, HostGroup | None] = {}
    for name in sorted(n for n in names if not n.isdigit()):
        try:
            entry = grp.getgrnam(name)
        except KeyError:
            out[name] = None
        else:
            out[name] = HostGroup(name, entry.gr_gid, frozenset(entry.gr_mem))
    return out


def user_names(ids: Iterable[int | None]) -> dict[int, str]:
    return _names(ids, pwd.getpwuid)


def group_names(ids: Iterable[int | None]) -> dict[int, str]:
    return _names(ids, grp.getgrgid)


def _names(ids: Iterable[int | None], lookup: Callable[[int], Any]) -> dict[int, str]:
    """uid or gid -> name, for the ids that have one (messages say "nobody (65534)")."""
    found: dict[int, str] = {}
    for i in sorted({x for x in ids if x is not None}):
        with contextlib.suppress(KeyError):
            found[i] = lookup(i)[0]
    return found


def process(unit: str, recorded: Mapping[str, Proc], cgroups: Cgroups | None,
            folders: frozenset[str] | None = None) -> tuple[Proc | None, int]:
    """The recorded process if it still runs as started, else how many processes its cgroup still holds.
    ``folders``: the unit folders listed just before (Cgroups.folders), when many units are read at once."""
    proc = recorded.get(unit)
    if proc is not None and identity.alive(proc):
        return proc, 0
    if cgroups is not None and folders is not None and unit not in folders:
        return None, 0  # no cgroup, no process in it: what reading it would say, without the failed open
    return None, len(identity.remaining(unit, cgroups, proc))


def answers(proc: Proc, name: str) -> bool:
    """A running guest answers on its mconsole (the socket is in the user's folder: the client checks it is
    theirs, and bounds the reply)."""
    path = mconsole_of(proc.argv, name)
    return path is not None and mconsole.answers(path, owner=proc.uid)


def last_words(state_dir: str, name: str) -> tuple[str | None, tuple[str, ...], float | None]:
    """Why and about when a guest root started in this boot is gone, from its log (bounded): a panic or
    nothing known, and when the log was last written."""
    folder = logs.open_folder(state_dir)
    if folder is None:
        return None, (), None
    with folder:
        return (*logs.last_words(folder.fd, name), logs.modified(folder.fd, name))
