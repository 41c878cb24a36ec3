"""Checks: what a lab must do, run by its guests, reported in their logs, read back here.

Plan layer, pure. A guest runs its checks (its seed's ``umlstate/checks``) once its network is up, and
again whenever ``umlstate check`` asks through mconsole (``umlstate: umlstate.check=NONCE``); each result is
one console line, ``umlstate-check: NONCE ID ok|failed EPOCH DETAIL``, ID the check's own (``check_id``:
from what it is, so a guest still booted from an older seed never reports on a different check).
Observation keeps each guest's latest result per check; status shows them; a failed one is not ok. The
guest reports on itself: a result is its word, as its panic is (never a root action).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from umlstate.model.guest import Check
from umlstate.model.topology import Topology

RESULT = re.compile(r"^(?:\[[ 0-9.]*\] )?umlstate-check: ([a-z0-9]{1,32}) ([0-9a-f]{8}) (ok|failed) ([0-9]{1,10})"
                    r" (.{0,200})$")
ASK = "umlstate: umlstate.check={nonce}\n"  # the mconsole log line that makes a guest run its checks again


@dataclass(frozen=True)
class CheckResult:
    nonce: str  # "boot", or the one `umlstate check` sent
    ok: bool
    when: float  # seconds since the epoch, as the guest said it
    detail: str


def check_id(check: Check) -> str:
    return hashlib.sha256(f"{check.from_}\0{check.ping}\0{check.expect}".encode()).hexdigest()[:8]


def results(t: Topology, guest: str, log: str) -> dict[int, CheckResult]:
    """The latest result of each check ``guest`` runs (by its place in the topology), from that guest's log
    (its latest run): a line about any other check, another guest's among them, is not its to give."""
    ours = {check_id(c): n for n, c in enumerate(t.checks) if c.from_ == guest}
    found: dict[int, CheckResult] = {}
    for line in log.splitlines():
        m = RESULT.match(line)
        if m and m[2] in ours:
            found[ours[m[2]]] = CheckResult(m[1], m[3] == "ok", float(m[4]), m[5])
    return found
