"""One thing wrong in a topology, located by its path in the document (the loader adds FILE:LINE:COL).

First stage of the pipeline; the rules (``rules``, ``guest_rules``) yield these.
"""

from __future__ import annotations

from dataclasses import dataclass

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    loc: Loc
    message: str


def known(names: set[str]) -> str:
    return f" (defined: {', '.join(sorted(names))})" if names else " (none is defined)"
