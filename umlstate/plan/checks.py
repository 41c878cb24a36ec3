"""Checks: what a lab must do, run by its guests, reported in their logs, read back here.

Plan layer, pure. A guest runs its checks (its seed's ``umlstate/checks``) once its network is up, and
again whenever ``umlstate check`` asks through mconsole (``umlstate: umlstate.check=NONCE``); each result is
one console line, ``umlstate-check: NONCE N ok|failed EPOCH DETAIL``, N the check's place in the topology.
Observation keeps each guest's latest result per check; status shows them; a failed one is not ok. The
guest reports on itself: a result is its word, as its panic is (never a root action).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RESULT = re.compile(r"^(?:\[[ 0-9.]*\] )?umlstate-check: ([a-z0-9]{1,32}) ([0-9]{1,4}) (ok|failed) ([0-9]{1,12})"
                    r" (.{0,200})$")
ASK = "umlstate: umlstate.check={nonce}\n"  # the mconsole log line that makes a guest run its checks again


@dataclass(frozen=True)
class CheckResult:
    nonce: str  # "boot", or the one `umlstate check` sent
    ok: bool
    when: float  # seconds since the epoch, as the guest said it
    detail: str


def results(log: str) -> dict[int, CheckResult]:
    """The latest result of each check in a guest's log (its latest run)."""
    found: dict[int, CheckResult] = {}
    for line in log.splitlines():
        m = RESULT.match(line)
        if m:
            found[int(m[2])] = CheckResult(m[1], m[3] == "ok", float(m[4]), m[5])
    return found
