"""Observe the traffic policy: which of umlstate's nftables tables are loaded, and a digest of their listing.

Observation layer, called by ``observe.observe``. Only the tables named after
the topology are read (never the whole ruleset, which may be large and is not
umlstate's); the digest is the one apply records right after loading them.
"""

from __future__ import annotations

import os

from umlstate.host import nft
from umlstate.model.snapshot import Records, RulesetState
from umlstate.model.topology import Topology


def observe(t: Topology, recs: Records) -> RulesetState:
    if not nft.available():
        return RulesetState(available=False)
    if os.geteuid() == 0:
        with nft.Nft() as n:
            tables = frozenset(f"{family} {name}" for family, name in n.tables() if name == t.table)
            return RulesetState(tables, n.digest(tables) if tables else None)
    # Reading nftables needs CAP_NET_ADMIN: a monitoring user sees the policy as root's records say.
    record = recs.ruleset
    return RulesetState(record.tables if record else frozenset(), record.listed if record else None, readable=False)
