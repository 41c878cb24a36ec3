"""Actions on the traffic policy: load umlstate's nftables tables in one transaction, or remove them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from umlstate.model.snapshot import RulesetRecord, RulesetState, Snapshot
from umlstate.plan.actions.base import Action, Kind, Op


@dataclass(frozen=True)
class LoadRuleset(Action):
    """Replace umlstate's tables by the rendered ones: one nftables transaction, all or nothing.

    ``document`` is the JSON that libnftables runs (a string, so the action stays
    hashable and immutable); ``groups`` say in words what it holds, a line a rule group.
    """

    op: ClassVar[Op] = "update"
    kind: ClassVar[Kind] = "ruleset"
    table: str
    tables: frozenset[str]  # "family name"
    document: str
    rendered: str  # digest of the document
    summary: str
    groups: tuple[str, ...]
    inputs: str = ""  # plan.ruleset.inputs_of: what the render was made from
    ports: frozenset[str] = frozenset()  # the links whose ingress it hooks (each must be there to load)

    @property
    def target(self) -> str:
        return self.table

    @property
    def detail(self) -> str:
        return self.summary

    def simulate(self, s: Snapshot) -> Snapshot:
        # As if nftables listed it back as rendered: the executor records the real listing's digest.
        record = RulesetRecord(self.tables, self.rendered, self.rendered, inputs=self.inputs)
        return replace(s, ruleset=RulesetState(self.tables, self.rendered),
                       records=replace(s.records, ruleset=record))

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "groups": list(self.groups)}


@dataclass(frozen=True)
class CreateRuleset(LoadRuleset):
    op: ClassVar[Op] = "create"


@dataclass(frozen=True)
class DeleteRuleset(Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "ruleset"
    table: str
    tables: frozenset[str]  # "family name": those umlstate recorded, whether or not they are still there

    @property
    def target(self) -> str:
        return self.table

    @property
    def detail(self) -> str:
        return "nft delete table " + ", ".join(sorted(self.tables))

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, ruleset=replace(s.ruleset, tables=frozenset(), listed=None),
                       records=replace(s.records, ruleset=None))
