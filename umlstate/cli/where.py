"""Where the topology is: the path a command names, else $UMLSTATE_TOPOLOGY, else the first default that exists.

Command line layer, without imports of its own: the quick pass (cli.quick)
asks it again before answering for a command that named no topology.
"""

from __future__ import annotations

import os

from umlstate import errors

TOPOLOGY_DEFAULTS = ("./topology.yaml", "/etc/umlstate/topology.yaml")


def resolve_topology(given: str | None) -> str:
    if given:
        return given
    env = os.environ.get("UMLSTATE_TOPOLOGY")
    if env:
        return env
    for candidate in TOPOLOGY_DEFAULTS:
        if os.path.exists(candidate):
            return candidate
    raise errors.UsageError("no topology given, and none of " + ", ".join(TOPOLOGY_DEFAULTS) + " exists\n"
                            "  to fix: pass a path (umlstate status lab.yaml) or set UMLSTATE_TOPOLOGY")
