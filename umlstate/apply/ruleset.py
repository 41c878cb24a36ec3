"""Carry out the traffic policy's actions: one nftables transaction each.

Apply layer, called by the executor's dispatch. Loading runs the rendered
document (every table emptied and filled in the same transaction, so there
is no moment without a policy), then lists the tables back: the digest of
that listing is what the records keep, so that a later change by anyone else
shows as drift.
"""

from __future__ import annotations

from umlstate.host import nft
from umlstate.model.snapshot import RulesetRecord
from umlstate.plan import actions as A


def load(action: A.LoadRuleset) -> RulesetRecord:
    with nft.Nft() as n:
        n.run(action.document)
        return RulesetRecord(action.tables, action.rendered, n.digest(action.tables))


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
