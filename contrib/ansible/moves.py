#!/usr/bin/env python3
"""Which guests move between hosts, and where their COW files go: the playbook's one computation.

Run on the Ansible controller (stdlib and PyYAML, which ansible-core itself needs):

    moves.py NEW_TOPOLOGY < hosts.json > moves.json

hosts.json maps each inventory host to what it holds now:

    {"web1": {"name": "alpha",            # its umlstate host name (hosts[].name)
              "previous": "...yaml..."|null,  # the topology copy it kept from its last run
              "journal": "...json..."|null}}  # guests that left it and whose disk has not landed yet

A guest moves when a host's kept copy placed it on that host and the new
topology places it on another one. The journal is what makes this survive a
run that fails halfway: the losing host writes it before it stops the guest
and only drops it once the disk has been carried, so the next run still knows
where the disk is even though that host's copy no longer names the guest.

Printed: {"moves": [...], "departure": YAML|null, "losers": [...], "gainers": [...], "warnings": [...]}.
Each move names the guest, both umlstate hosts and inventory hosts, the COW
file on each side (null for a guest without a base image: nothing to carry),
and the guest's user. "departure" is the new topology without the moving
guests: what the losing hosts apply first, so that every moving guest is
stopped everywhere before any host starts it. Errors exit 1 with one line per
problem on stderr.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import yaml

JOURNAL_FORMAT = 1


class MoveError(Exception):
    pass


def _load(text: str, what: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MoveError(f"{what} is not YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise MoveError(f"{what} is not a topology (a mapping at the top)")
    return doc


def _guests(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(g["name"]): g for g in doc.get("guests") or () if isinstance(g, dict) and "name" in g}


def _host_names(doc: dict[str, Any]) -> list[str]:
    return [str(h["name"]) for h in doc.get("hosts") or () if isinstance(h, dict) and "name" in h]


def state_dir(doc: dict[str, Any], host: str) -> str:
    """SPEC: hosts[h].state_dir, else host.state_dir, else /var/lib/umlstate/<name>."""
    for h in doc.get("hosts") or ():
        if isinstance(h, dict) and h.get("name") == host and h.get("state_dir"):
            return str(h["state_dir"])
    top = doc.get("host") or {}
    if isinstance(top, dict) and top.get("state_dir"):
        return str(top["state_dir"])
    return f"/var/lib/umlstate/{doc.get('name')}"


def cow_of(doc: dict[str, Any], guest: dict[str, Any], host: str) -> str | None:
    """A guest's COW file on ``host``: disk.cow, else <that host's state_dir>/<guest>.cow; None without a base."""
    disk = guest.get("disk") or {}
    if not isinstance(disk, dict) or not disk.get("base"):
        return None
    return str(disk.get("cow") or f"{state_dir(doc, host).rstrip('/')}/{guest['name']}.cow")


def in_state_dir(path: str, doc: dict[str, Any], host: str) -> bool:
    """Whether a COW file lies directly in ``host``'s state_dir (the folder umlstate keeps root's alone)."""
    return os.path.dirname(os.path.normpath(path)) == os.path.normpath(state_dir(doc, host)) and ".." not in path


def placed_on(doc: dict[str, Any], host: str) -> dict[str, dict[str, Any]]:
    """The guests a kept copy placed on ``host``; a copy without hosts placed all of them on it."""
    guests = _guests(doc)
    if not doc.get("hosts"):
        return guests
    return {name: g for name, g in guests.items() if g.get("host") == host}


def _journal(text: str, inventory: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(text)
    except ValueError:
        raise MoveError(f"{inventory}: its move journal is not JSON; look at it, then remove it") from None
    if not isinstance(doc, dict) or doc.get("format_version") != JOURNAL_FORMAT or \
            not isinstance(doc.get("departed"), list):
        raise MoveError(f"{inventory}: its move journal has an unknown format; look at it, then remove it")
    return [d for d in doc["departed"] if isinstance(d, dict) and d.get("guest")]


def journal_text(moves: list[dict[str, Any]], inventory: str) -> str:
    """What a losing host writes before it stops its departing guests."""
    departed = [{"guest": m["guest"], "from": m["from"], "cow": m["cow_from"], "user": m["user"]}
                for m in moves if m["from_inventory"] == inventory]
    return json.dumps({"format_version": JOURNAL_FORMAT, "departed": departed}, indent=1) + "\n"


def compute(new_text: str, hosts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    new = _load(new_text, "the new topology")
    new_guests = _guests(new)
    declared = set(_host_names(new))
    problems: list[str] = []
    warnings: list[str] = []

    inventory_of: dict[str, str] = {}
    for inv, seen in sorted(hosts.items()):
        name = str(seen.get("name") or inv)
        if name in inventory_of:
            problems.append(f"inventory hosts {inventory_of[name]} and {inv} both say they are umlstate host {name}")
        inventory_of[name] = inv
    for name in sorted(declared - set(inventory_of)):
        held = sorted(g for g, d in new_guests.items() if d.get("host") == name)
        if held:
            warnings.append(f"host {name} is in the topology with guests {', '.join(held)} but in no inventory host "
                            "of this run: nothing is applied there")

    # Where each guest was: (umlstate host, inventory host, its COW there, its user there).
    sources: dict[str, list[tuple[str, str, str | None, str | None]]] = {}
    for inv, seen in sorted(hosts.items()):
        name = str(seen.get("name") or inv)
        from_journal: set[str] = set()
        if seen.get("journal"):
            for entry in _journal(str(seen["journal"]), inv):
                guest = str(entry["guest"])
                from_journal.add(guest)
                sources.setdefault(guest, []).append((name, inv, entry.get("cow"), entry.get("user")))
        if seen.get("previous"):
            try:
                old = _load(str(seen["previous"]), f"{inv}'s kept topology")
            except MoveError as exc:
                warnings.append(f"{exc}: no move out of {name} can be seen")
                continue
            for guest, g in placed_on(old, name).items():
                if guest not in from_journal:
                    sources.setdefault(guest, []).append((name, inv, cow_of(old, g, name), g.get("user")))

    moves: list[dict[str, Any]] = []
    for guest, was in sorted(sources.items()):
        target = new_guests.get(guest)
        if target is None:
            continue  # gone from the topology: its host prunes it; not a move
        to = target.get("host")
        if not declared:
            to = None
        elsewhere = [w for w in was if w[0] != to]
        if not elsewhere or to is None:
            continue  # stays where it was (or the topology is single-host again: nothing to carry)
        if len(elsewhere) > 1:
            problems.append(f"guest {guest} was on several hosts at once ({', '.join(w[0] for w in elsewhere)}); "
                            "remove it from all but one kept copy (or journal) by hand")
            continue
        if any(w[0] == to for w in was):
            problems.append(f"guest {guest} is both still on {to} and departing {elsewhere[0][0]}; "
                            "look at both hosts before moving it")
            continue
        source, source_inv, cow_from, user = elsewhere[0]
        if to not in inventory_of:
            problems.append(f"guest {guest} moves from {source} to {to}, which is no inventory host of this run: "
                            f"add it (umlstate_host={to}) or limit the run to neither")
            continue
        cow_to = cow_of(new, target, str(to))
        carry = cow_from is not None and cow_to is not None
        if not carry:
            warnings.append(f"guest {guest} has no base+COW disk on both sides: it moves without its disk")
        outside = [f"{path} on {host}" for path, host in ((cow_from, source), (cow_to, str(to)))
                   if path is not None and not in_state_dir(path, new, host)]
        if carry and outside:
            # Root packs and unpacks the file by path: only in umlstate's state_dir, which umlstate refuses to
            # use unless root's alone, can no guest's user swap the folder or the file for a link meanwhile.
            carry = False
            warnings.append(f"guest {guest}'s COW file lies outside state_dir ({'; '.join(outside)}): root does not "
                            "carry a disk through a folder others may write; it moves without its disk (copy it "
                            "yourself, or keep disk.cow in state_dir)")
        moves.append({
            "guest": guest, "from": source, "to": to,
            "from_inventory": source_inv, "to_inventory": inventory_of[str(to)],
            "cow_from": cow_from, "cow_to": cow_to,
            "carry": carry,
            "user": str(target.get("user") or user or ""),
        })
    if problems:
        raise MoveError("\n".join(problems))

    departure = None
    if moves:
        moving = {m["guest"] for m in moves}
        leaving = dict(new)
        leaving["guests"] = [g for g in new.get("guests") or ()
                             if not (isinstance(g, dict) and g.get("name") in moving)]
        departure = ("# Written by contrib/ansible while " + ", ".join(sorted(moving)) + " move: the new topology\n"
                     "# without the moving guests. The end of the run replaces it with the new topology.\n"
                     + yaml.safe_dump(leaving, sort_keys=False, default_flow_style=False))
    losers = sorted({m["from_inventory"] for m in moves})
    return {
        "moves": moves,
        "departure": departure,
        "losers": losers,
        "gainers": sorted({m["to_inventory"] for m in moves}),
        "journals": {inv: journal_text(moves, inv) for inv in losers},
        "warnings": warnings,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: moves.py NEW_TOPOLOGY < hosts.json", file=sys.stderr)
        return 64
    try:
        with open(argv[1], encoding="utf-8") as f:
            new_text = f.read()
        hosts = json.load(sys.stdin)
        if not isinstance(hosts, dict):
            raise MoveError("hosts.json must map inventory hosts to what they hold")
        print(json.dumps(compute(new_text, hosts), indent=1))
    except (OSError, ValueError, MoveError) as exc:
        print(f"moves.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
