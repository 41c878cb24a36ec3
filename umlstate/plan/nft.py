"""nftables' JSON, the few words of it the traffic policy speaks: matches, verdicts, one transaction.

Pure, in the plan layer; ``plan.ruleset`` renders the policy with these. Only the
shape of libnftables' JSON lives here, no policy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Expr = dict[str, Any]

DROP: Expr = {"drop": None}
ACCEPT: Expr = {"accept": None}
FEW_VALUES = 8  # a rule tests up to this many values one by one rather than in a set (see none_of)


def payload(protocol: str, field: str) -> Expr:
    return {"payload": {"protocol": protocol, "field": field}}


def meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def value(item: str | int) -> Any:
    if isinstance(item, str) and "/" in item:
        net = ipaddress.ip_network(item)
        return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
    return item


def one_of(items: Iterable[str | int]) -> Any:
    values = [value(x) for x in items]
    return values[0] if len(values) == 1 and not isinstance(values[0], dict) else {"set": values}


def is_(left: Expr, right: Any) -> Expr:
    return {"match": {"op": "==", "left": left, "right": right}}


def is_not(left: Expr, right: Any) -> Expr:
    return {"match": {"op": "!=", "left": left, "right": right}}


def in_(left: Expr, items: Iterable[str | int]) -> Expr:
    return is_(left, one_of(items))


def not_in(left: Expr, items: Iterable[str | int]) -> Expr:
    return is_not(left, one_of(items))


def none_of(left: Expr, items: Iterable[str | int]) -> list[Expr]:
    """``left`` is none of ``items``, as one match each (a rule's matches all hold): a port's chain has a few
    values, and an anonymous set costs the kernel ~0.5 ms to make, two seconds for a thousand ports' chains."""
    values = list(items)
    assert values, "bug: none_of nothing would be no match at all, and its rule would hold for every packet"
    return [is_not(left, value(x)) for x in values] if len(values) <= FEW_VALUES else [not_in(left, values)]


def each_of(left: Expr, items: Iterable[str | int]) -> list[list[Expr]]:
    """``left`` is one of ``items``: a rule's matches each, for as many rules (see none_of)."""
    values = list(items)
    return [[is_(left, value(x))] for x in values] if len(values) <= FEW_VALUES else [[in_(left, values)]]


def concat(*parts: Expr) -> Expr:
    """The parts' values side by side, one key (a named set of pairs is looked up with it)."""
    return {"concat": list(parts)}


def jump(chain: str) -> Expr:
    return {"jump": {"target": chain}}


ESTABLISHED = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}


class Document:
    """The commands of one transaction: each table emptied (add, delete, add), then filled."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.commands: list[dict[str, Any]] = []
        self.families: list[str] = []

    def new_table(self, family: str) -> None:
        self.families.append(family)
        spec = {"family": family, "name": self.table}
        self.commands += [{"add": {"table": spec}}, {"delete": {"table": spec}}, {"add": {"table": dict(spec)}}]

    def chain(self, family: str, name: str, **hook: Any) -> None:
        self.commands.append({"add": {"chain": {"family": family, "table": self.table, "name": name, **hook}}})

    def bounded_set(self, family: str, name: str, kind: str, size: int, timeout: int) -> None:
        """A set the rules fill as traffic passes, at most ``size`` elements, each for ``timeout`` s (nftables
        1.0.6's JSON knows no "dynamic" flag; the kernel makes the set dynamic for the update statement)."""
        self.commands.append({"add": {"set": {"family": family, "table": self.table, "name": name, "type": kind,
                                              "size": size, "flags": ["timeout"], "timeout": timeout}}})

    def keyed_set(self, family: str, name: str, kinds: list[str], elements: list[tuple[str, ...]]) -> None:
        """A named set of tuples (a concatenation of ``kinds``), networks among their values: one lookup in a
        shared rule does for a thousand ports what a thousand rules would, and loads in a fraction of the time."""
        elems = [{"concat": [value(x) for x in e]} if len(kinds) > 1 else value(e[0]) for e in elements]
        spec: dict[str, Any] = {"family": family, "table": self.table, "name": name,
                                "type": kinds if len(kinds) > 1 else kinds[0]}
        if any("/" in x for e in elements for x in e):
            spec["flags"] = ["interval"]
        if elems:
            spec["elem"] = elems
        self.commands.append({"add": {"set": spec}})

    def rule(self, family: str, chain: str, *expr: Expr) -> None:
        self.commands.append({"add": {"rule": {"family": family, "table": self.table, "chain": chain,
                                               "expr": list(expr)}}})
