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
    record = recs.ruleset
    if os.geteuid() == 0:
        generation = nft.generation()
        if record is not None and record.generation and generation == record.generation:
            # Nothing in this namespace's nftables changed since umlstate loaded and listed its tables:
            # they are as listed then (reading a thousand ports' listing back costs about a second).
            return RulesetState(record.tables, record.listed, generation=generation)
        if not nft.available():
            return RulesetState(available=False)
        with nft.Nft() as n:
            tables = frozenset(f"{family} {name}" for family, name in n.tables() if name == t.table)
            return RulesetState(tables, n.digest(tables) if tables else None, generation=generation)
    if not nft.available():
        return RulesetState(available=False)
    # Reading nftables needs CAP_NET_ADMIN: a monitoring user sees the policy as root's records say.
    return RulesetState(record.tables if record else frozenset(), record.listed if record else None, readable=False)
