"""Carry out the traffic policy's actions: one nftables transaction each.

Apply layer, called by the executor's dispatch. Loading runs the rendered
document (every table emptied and filled in the same transaction, so there
is no moment without a policy), then lists the tables back: the digest of
that listing is what the records keep, so that a later change by anyone else
shows as drift.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

from umlstate.host import nft
from umlstate.model.snapshot import RulesetRecord
from umlstate.plan import actions as A
from umlstate.plan.ruleset import port_link


def load(action: A.LoadRuleset) -> RulesetRecord:
    document: str | dict[str, Any] = action.document
    left_out: frozenset[str] = frozenset()
    if not all(_exists(link) for link in action.ports):  # parsed only then: a thousand ports' JSON takes a while
        document, left_out = without_missing_ports(json.loads(action.document), _exists)
    with nft.Nft() as n:
        n.run(document)
        listed = n.digest(action.tables)
    return RulesetRecord(action.tables, action.rendered, listed, left_out, nft.generation() or "", action.inputs)


def _exists(link: str) -> bool:
    try:
        socket.if_nametoindex(link)
    except OSError:
        return False
    return True


def without_missing_ports(document: dict[str, Any], exists: Callable[[str], bool]) -> tuple[dict[str, Any],
                                                                                          frozenset[str]]:
    """The document without the chains (and their rules and sets) of ports whose link is not there.

    Such a link is a tap whose creation failed in this pass: its guest does not start, so nothing is left
    unguarded, and one guest's trouble does not keep the others' policy out."""
    missing = {link for c in document["nftables"]
               if (link := port_link(c.get("add", {}).get("chain", {}).get("name", ""))) and not exists(link)}
    if not missing:
        return document, frozenset()

    def keep(command: dict[str, Any]) -> bool:
        add = command.get("add", {})
        name = add.get("chain", {}).get("name") or add.get("rule", {}).get("chain") or add.get("set", {}).get("name")
        return not name or port_link(name) not in missing

    return {"nftables": [c for c in document["nftables"] if keep(c)]}, frozenset(missing)


def delete(action: A.DeleteRuleset) -> None:
    """Each recorded table, whether or not it is still there (adding an empty one first makes it so)."""
    commands = []
    for table in sorted(action.tables):
        family, name = table.split(" ", 1)
        spec = {"family": family, "name": name}
        commands += [{"add": {"table": spec}}, {"delete": {"table": spec}}]
    if commands:
        with nft.Nft() as n:
            n.run({"nftables": commands})
