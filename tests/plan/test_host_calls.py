"""Golden "plan -> host calls": what the executor asks of the host for each scenario, without root.

For each golden scenario (fixtures/cases/<scenario>/) whose plan apply accepts, the plan's network
and system actions are carried out by the real executor against a recording host
(umlstate.apply.host.Host): taps and the tun node, rtnetlink requests in `ip`'s words, sysctls,
passwd's programs, the nftables policy, the announcements of new proxy entries on the uplinks, the
records; and, through its process port (umlstate.apply.processes.ProcessHost), switches and guests
started, stopped, ended and spoken to (the end-to-end tests run them on real guests). The calls go
to host-calls.txt beside the plan; UPDATE_GOLDEN=1 writes them anew. An optional fails.json
(["netlink: link add br0 ", ...], each the start of a call) makes those calls fail, to pin what a
failure stops and what goes on.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from umlstate.apply.executor import ApplyFailed, Executor
from umlstate.apply.processes import Remember
from umlstate.errors import ActionError
from umlstate.host import netlink
from umlstate.host.announce import Address
from umlstate.model.snapshot import Proc, Records, RulesetRecord, unit_of
from umlstate.plan import actions as A
from umlstate.plan.planner import plan

from cases import CASES, load_case


class RecordingBatch(netlink.Batch):
    """Requests as the real batch builds them, about links that need not exist here."""

    def __init__(self, indexes: dict[str, int]) -> None:
        super().__init__()
        self.indexes = indexes

    def index(self, name: str) -> int:  # type: ignore[override]
        return self.indexes.setdefault(name, 100 + len(self.indexes))


class RecordingHost:
    """Says what it was asked, in order; a call named in ``fails`` fails as the kernel would refuse it."""

    def __init__(self, fails: set[str]) -> None:
        self.calls: list[str] = []
        self.fails = fails
        self.indexes: dict[str, int] = {}

    def refused(self, said: str) -> bool:
        return any(said.startswith(prefix) for prefix in self.fails)

    def _call(self, said: str) -> None:
        self.calls.append(said)
        if self.refused(said):
            raise ActionError(f"{said}: refused (fails.json)")

    def uid(self, user: str) -> int:
        return 1000 + sum(map(ord, user)) % 1000  # a stable number for a user this machine need not have

    def gid(self, group: str) -> int:
        return 2000 + sum(map(ord, group)) % 1000

    def create_tap(self, tun_path: str, name: str, uid: int, gid: int | None) -> None:
        self._call(f"create_tap {name}")
        self.calls[-1] = f"create_tap {name} via {tun_path} owner {uid} group {gid}"

    def fix_tap(self, tun_path: str, name: str, uid: int, gid: int | None) -> None:
        self._call(f"fix_tap {name} owner {uid} group {gid}")

    def make_node(self, path: str, mode: int | None, gid: int | None) -> None:
        self._call(f"make_node {path} mode {mode:o} group {gid}" if mode is not None else f"make_node {path}")

    def fix_node(self, path: str, mode: int | None, gid: int | None) -> None:
        self._call(f"fix_node {path} mode {'-' if mode is None else f'{mode:o}'} group {gid}")

    def delete_node(self, path: str) -> None:
        self._call(f"delete_node {path}")

    def quiet_ipv6(self, link: str) -> None:
        self._call(f"quiet_ipv6 {link}")

    def write_sysctl(self, key: str, value: str) -> None:
        self._call(f"sysctl {key}={value}")

    def batch(self) -> netlink.Batch:
        return RecordingBatch(self.indexes)

    def send(self, requests: netlink.Batch, limit: int | None = None) -> list[tuple[object, int]]:
        out = []
        for label, said in zip(requests.labels[:limit], requests.said[:limit], strict=True):
            self.calls.append(f"netlink: {said}")
            out.append((label, errno.EPERM if self.refused(f"netlink: {said}") else 0))
        self.calls.append(f"netlink: sent {len(out)} request(s) together")
        return out

    def delete_group(self, group: int) -> None:
        self._call(f"netlink: link del group {group}")

    def announce(self, uplink: str, addresses: tuple[Address, ...]) -> dict[Address, str]:
        said = f"announce on {uplink}: {' '.join(map(str, addresses))}"
        self.calls.append(said)
        if self.refused(said):  # as a link that is down refuses the packets
            raise OSError(errno.ENETDOWN, os.strerror(errno.ENETDOWN))
        return {}

    def run(self, program: str, *args: str, already: int | None = None) -> None:
        self._call(" ".join((program, *args)))

    def load_ruleset(self, action: A.LoadRuleset) -> Callable[[], RulesetRecord]:
        """Started here, as the host starts it; a refusal comes when the executor waits for it, as the host's."""
        said = (f"nft: load {', '.join(sorted(action.tables))} ({len(json.loads(action.document)['nftables'])} "
                "commands in one transaction)")
        self.calls.append(said)

        def loaded() -> RulesetRecord:
            if self.refused(said):
                raise ActionError(f"{said}: refused (fails.json)")
            return RulesetRecord(action.tables, action.rendered, "listed", inputs=action.inputs)
        return loaded

    def delete_ruleset(self, action: A.DeleteRuleset) -> None:
        self._call(f"nft: delete {', '.join(sorted(action.tables))}")

    def save_records(self, state_dir: str, recs: Records) -> None:
        self.calls.append(f"records: save {state_dir} (pending taps: {', '.join(sorted(recs.pending_taps)) or 'none'})")

    def write_seed(self, path: str, files: tuple[tuple[str, bytes], ...], user: str) -> None:
        self._call(f"seed: write {path} for {user}'s group: {', '.join(name for name, _ in files)}")

    def delete_seed(self, path: str) -> None:
        self._call(f"seed: delete {path}")

    # --- the process port ---

    def _started(self, kind: str, name: str, user: str, argv: tuple[str, ...], remember: Remember) -> None:
        self._call(f"start {kind} {name} as {user}: {' '.join(argv)}")
        remember(unit_of(kind, name), Proc(9000 + len(self.calls), self.uid(user), argv, 1.0))

    def start_switch(self, a: A.StartSwitch, remember: Remember) -> None:
        self._started("switch", a.name, a.user, a.argv, remember)

    def stop_switch(self, name: str, proc: Proc) -> None:
        self._call(f"stop switch {name} pid {proc.pid}")

    def end_leftovers(self, kind: str, name: str, recorded: Proc | None) -> None:
        self._call(f"end what is left of {kind} {name}" + (f" (pid {recorded.pid})" if recorded else ""))

    def start_guest(self, a: A.StartGuest, remember: Remember) -> None:
        if a.cow and a.base:
            self._call(f"cow {a.cow} of {a.base} for {a.user}")
        self._started("guest", a.name, a.user, a.argv, remember)

    def stop_guest(self, name: str, proc: Proc) -> str:
        self._call(f"stop guest {name} pid {proc.pid}")
        return "cad"

    def console(self, name: str, proc: Proc, command: str, hint: str = "") -> None:
        self._call(f"mconsole {name}: {command!r}")

    def prepare(self) -> object:
        return None

    def booted(self) -> list[tuple[A.AnyAction, str]]:
        return []

    def close(self) -> None:
        pass


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_host_calls_match_golden(case: Path) -> None:
    placement, observed, options = load_case(case)
    planned = plan(placement.topology, observed, stretches=placement.stretches, **options)
    if planned.blockers or (planned.conflicts and not options.get("adopt")):
        pytest.skip("apply refuses this plan")
    fails = set(json.loads((case / "fails.json").read_text())) if (case / "fails.json").exists() else set()
    host = RecordingHost(fails)
    executor = Executor(placement.topology, netlink.Netlink(), host=host, procs=host)
    try:
        executor.apply(planned, observed)
        ending = ["applied"]
    except ApplyFailed as exc:
        ending = [f"failed: {what}: {why}" for what, why in exc.failed]
        ending += [f"skipped: {a.op} {a.kind} {a.target} (needs {blocker})" for a, blocker in exc.skipped]
    text = "\n".join([*host.calls, "--", *ending]) + "\n"
    golden = case / "host-calls.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"{golden} is missing: run UPDATE_GOLDEN=1 pytest {__file__} and review it"
    assert text == golden.read_text()


def test_a_failure_stops_only_what_needs_it() -> None:
    """The scenario with fails.json: its bridge is refused; the other bridge's steps all went on."""
    text = (Path(__file__).resolve().parents[2] / "fixtures" / "cases" / "bridge-fails-its-dependents-only"
            / "host-calls.txt").read_text()
    assert "failed: create bridge br0" in text
    assert "skipped: update tap web-0 (needs bridge br0)" in text
    assert "netlink: link set br1 up" in text and "netlink: addr add 10.0.1.254/24 dev br1" in text


def test_a_refused_policy_keeps_every_guest_down_and_nothing_else() -> None:
    """The scenario whose policy nftables refuses, loaded while the netlink requests went: they all went."""
    text = (Path(__file__).resolve().parents[2] / "fixtures" / "cases" / "bridge-policy-refused"
            / "host-calls.txt").read_text()
    assert "failed: update ruleset umlstate-lab" in text
    assert "skipped: create guest db (needs ruleset umlstate-lab)" in text
    assert "skipped: create guest web (needs ruleset umlstate-lab)" in text
    assert "start guest" not in text
    assert "netlink: neigh add proxy 172.16.99.2 dev eth0" in text and "announce on eth0" in text


def test_a_pass_that_fails_while_the_policy_loads_waits_for_the_load() -> None:
    """watch goes on after a failed pass: a load left running could commit after the next pass's own, and
    unhook a tap whose guest that pass started. A send that raises (a short ack) still waits for it."""
    placement, observed, options = load_case(Path(__file__).resolve().parents[2] / "fixtures" / "cases"
                                             / "bridge-empty-host")
    planned = plan(placement.topology, observed, stretches=placement.stretches, **options)
    waited: list[str] = []

    class ShortAck(RecordingHost):
        def send(self, requests: netlink.Batch, limit: int | None = None) -> list[tuple[object, int]]:
            raise ActionError("netlink: the kernel acked 3 of 10 requests")

        def load_ruleset(self, action: A.LoadRuleset) -> Callable[[], RulesetRecord]:
            loaded = super().load_ruleset(action)

            def wait() -> RulesetRecord:
                waited.append(action.table)
                return loaded()
            return wait

    host = ShortAck(set())
    with pytest.raises(ActionError, match="acked 3 of 10"):
        Executor(placement.topology, netlink.Netlink(), host=host, procs=host).apply(planned, observed)
    assert waited == ["umlstate-lab"]
    assert not any(call.startswith("start guest") for call in host.calls)
