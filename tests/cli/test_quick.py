"""The quick in-sync pass (cli.quick, observe.witness): answers only while everything a full pass read is the same.

Each drift below is made on a real kernel in a namespace after the quick pass
has answered; the next run must be a full pass that sees it (exit 2 where it
is drift, 0 where it is not), and once in sync again, quick again.
"""

from __future__ import annotations

import dataclasses
import grp
import inspect
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from umlstate.cli import quick
from umlstate.model.guest import GUEST_FILE_MAX
from umlstate.model.snapshot import Link, Proc, Snapshot, compact
from umlstate.observe import witness

from conftest import Netns, sh, umlstate

QUICK = {"UMLSTATE_QUICK": "report"}
SAID = "quick pass"

TOPOLOGY = """\
name: {name}
host:
  run_dir: {tmp}/run
  state_dir: {tmp}/state
  tun: {{path: {tmp}/dev/tun, mode: "0660", group: {group}}}
  groups: [{{name: {group}, members: [nobody]}}]
  sysctl: {{net.ipv4.ip_forward: 1}}
subnets:
  - {{name: guests, cidr: 172.16.97.0/24, gateway: 172.16.97.254, proxy_arp: {{uplink: eth0}}}}
  - {{name: back, cidr: 172.16.96.0/24, gateway: 172.16.96.254}}
taps:
  - {{name: q0, owner: nobody, group: {group}, subnet: guests}}
  - {{name: q1, owner: nobody, subnet: back}}
guests:
  - name: web
    user: nobody
    disk: {{image: {tmp}/web.img}}
    nics: [{{tap: q0, address: 172.16.97.1}}]
    files: [{{path: /etc/motd, from: motd}}]
"""


def test_every_field_of_the_snapshot_is_read_again() -> None:
    fields = {f.name for f in dataclasses.fields(Snapshot)}
    assert set(witness.COVERS) | witness.NOT_READ == fields, "a new Snapshot field needs its reading in witness"
    assert not set(witness.COVERS) & witness.NOT_READ
    read = inspect.getsource(witness.readings)
    assert all(f'"{name}":' in read for name in witness.COVERS.values()), "each reading COVERS names is made"


def test_the_quick_pass_bounds_guest_files_as_the_model_does() -> None:
    assert quick.GUEST_FILE_LIMIT == GUEST_FILE_MAX


COMPACT_OF = """
import ipaddress, json, sys
from umlstate.model.snapshot import Link, Proc, compact
value = {"links": {n: Link(n, kind="tun", owner=65534, mac="fe:fd:00:00:00:01") for n in ("b", "a", "t0")},
         "addresses": frozenset({ipaddress.IPv4Interface("10.0.0.1/24"), ipaddress.IPv6Interface("2001:db8::1/64"),
                                 ipaddress.IPv4Interface("10.0.0.2/24")}),
         "proxies": frozenset({("eth0", ipaddress.IPv4Address("10.0.0.2")), ("eth0", ipaddress.IPv4Address("10.0.0.3")),
                               ("eth1", "x")}),
         "names": frozenset({"web", "db", "dmz", "lab"}),
         "procs": (Proc(1, 0, ("linux", "umid=web"), 1.0),)}
print(json.dumps(compact(value), separators=(",", ":")))
"""


def test_compact_readings_are_the_same_whatever_the_hash_seed_and_tell_apart_what_differs() -> None:
    """The quick pass digests its readings with model.snapshot.compact: two processes (two hash seeds) must
    digest the same readings alike, and a change of any one field must show."""
    seen = {subprocess.run([sys.executable, "-c", COMPACT_OF], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(seen) == 1, seen
    base = Link("t0", kind="tun", owner=65534, mac="fe:fd:00:00:00:01")
    forms = {json.dumps(compact(link)) for link in (base, dataclasses.replace(base, owner=0),
                                                     dataclasses.replace(base, up=True),
                                                     dataclasses.replace(base, mac=None),
                                                     dataclasses.replace(base, alias="umlstate:x"))}
    assert len(forms) == 5, forms


def test_a_probe_round_trips_through_json() -> None:
    probe = witness.Probe(
        netns="n", topology="/etc/t.yaml", run_dir="/run/x", state_dir="/var/lib/x",
        taps=("q0",), uplinks=("eth0",), routes=True, sysctls=("net.ipv4.ip_forward",), users=("nobody",),
        groups=("g",), tun="/dev/net/tun", programs=("linux",), kernels=("/usr/bin/linux",), files=("/a",),
        cows=(("/a.cow", "/a"),), instance="x", units={"guest-web": Proc(1, 2, ("linux", "umid=web"), 3.0, 4),
                                                      "switch-sw": None},
        sockets={"sw": "/run/x/sw.ctl"}, umids={"web": "/home/u/.uml/web"}, uids=(65534,), gids=(1,),
        seeds=("/s",), policy_generation="b:1:2")
    assert witness.Probe.from_json(json.loads(json.dumps(probe.to_json()))) == probe


@pytest.fixture
def lab(host_with_uplink: Netns, tmp_path: Path) -> Iterator[tuple[Netns, Path]]:
    group = f"umlstate-test-{secrets.token_hex(3)}"
    (tmp_path / "motd").write_text("hello\n")
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY.format(name=f"q{secrets.token_hex(2)}", tmp=tmp_path, group=group))
    (tmp_path / "state").mkdir(mode=0o755)
    (tmp_path / "state" / "state.json").write_text(json.dumps({"held": ["web"]}))  # never booted here
    yield host_with_uplink, path
    umlstate("destroy", "--yes", str(path), netns=host_with_uplink.name)
    with_group = subprocess.run(["getent", "group", group], capture_output=True, check=False)
    if with_group.returncode == 0:
        sh("groupdel", group)


def plan(ns: Netns, path: Path) -> tuple[int, bool, str]:
    """Exit code, whether the quick pass answered, and what was printed."""
    done = umlstate("plan", "--detailed-exitcode", str(path), netns=ns.name, env=QUICK)
    return done.returncode, SAID in done.stderr, done.stdout


def apply(ns: Netns, path: Path) -> tuple[int, bool]:
    done = umlstate("apply", "--yes", str(path), netns=ns.name, env=QUICK)
    assert done.returncode == 0, done.stderr
    return done.returncode, SAID in done.stderr


def test_the_quick_pass_answers_only_while_nothing_it_read_changed(lab: tuple[Netns, Path]) -> None:
    ns, path = lab
    tmp = path.parent
    apply(ns, path)
    group = grp.getgrgid(os.stat(tmp / "dev" / "tun").st_gid).gr_name
    first = plan(ns, path)
    assert first[:2] == (0, False), "the first in-sync plan is a full pass; it keeps what the next needs"
    again = plan(ns, path)
    assert again == (0, True, first[2]), "the same plan again: answered quickly, printing the same"
    assert apply(ns, path) == (0, False) and apply(ns, path) == (0, True), "apply keeps its own"

    drifts: list[tuple[str, Callable[[], object], int]] = [
        ("an address removed", lambda: ns.ip("addr", "del", "172.16.97.254/24", "dev", "q0"), 2),
        ("a tap down", lambda: ns.ip("link", "set", "q1", "down"), 2),
        ("a tap removed", lambda: ns.ip("link", "del", "q1"), 2),
        ("a proxy entry removed", lambda: ns.ip("neigh", "del", "proxy", "172.16.97.1", "dev", "eth0"), 2),
        ("a sysctl reset", lambda: ns.run("sysctl", "-qw", "net.ipv4.ip_forward=0"), 2),
        ("the tun node's mode", lambda: os.chmod(tmp / "dev" / "tun", 0o666), 2),
        ("a member left the group", lambda: sh("gpasswd", "-d", "nobody", group), 2),
        ("the policy's table removed", lambda: ns.run("nft", "delete", "table", "netdev", f"umlstate-{_name(path)}"),
         2),
        ("a guest file edited", lambda: (tmp / "motd").write_text("hello again\n"), 2),  # its seed is rewritten
        # Not drift, but an input of the plan: a full pass, in sync.
        ("a table of someone else's", lambda: ns.run("nft", "add", "table", "inet", "theirs"), 0),
        ("the disk image made", lambda: (tmp / "web.img").write_bytes(b"\0" * 512), 0),
        ("the topology edited", lambda: path.write_text(path.read_text() + "# a comment\n"), 0),
        ("the records rewritten", lambda: _rewrite_records(tmp), 0),
    ]
    for what, drift, code in drifts:
        drift()
        got = plan(ns, path)
        assert got[:2] == (code, False), f"{what}: {got}"
        if code:
            apply(ns, path)
            assert plan(ns, path)[:2] == (0, False), f"{what}: repaired, a full pass keeps it"
        assert plan(ns, path)[:2] == (0, True), f"{what}: in sync again, the quick pass answers again"


def test_links_in_other_bytes_but_the_same_are_decoded_once_and_kept(lab: tuple[Netns, Path]) -> None:
    """The quick pass compares the kernel's link answers byte for byte first, and decodes them only when they
    differ (the kernel re-randomizes each link's IPv6 reachable time every five minutes, and settles a new
    link's operational state a moment after it is made). A tap's MTU is in those bytes but is nothing umlstate
    reads: the next pass decodes, finds the same links, answers quickly and keeps the new bytes; once the
    kernel's answers hold still, passes compare bytes alone."""
    ns, path = lab
    apply(ns, path)
    plan(ns, path)
    assert plan(ns, path)[:2] == (0, True)
    before = _links_answers(path)
    ns.ip("link", "set", "q1", "mtu", "1400")
    assert plan(ns, path)[:2] == (0, True), "the same links: answered quickly"
    kept = [_links_answers(path)]
    assert kept[0] != before, "the new bytes kept"
    for _ in range(50):  # the link watch settles what the change touched: until two passes keep the same
        assert plan(ns, path)[:2] == (0, True)
        kept.append(_links_answers(path))
        if kept[-1] == kept[-2]:
            break
    assert kept[-1] == kept[-2], kept


def _links_answers(path: Path) -> set[str]:
    """The digests of the link answers kept in the quick records of this topology (plan's and apply's)."""
    found = set()
    for record in Path(quick.QUICK_DIR).glob("*.json"):
        data = json.loads(record.read_text())
        if data.get("probe", {}).get("topology") == str(path):
            found.add(data["links"]["answers"])
    return found


def test_a_quick_apply_waits_for_the_lock_like_a_full_one(lab: tuple[Netns, Path]) -> None:
    ns, path = lab
    apply(ns, path)
    apply(ns, path)
    assert apply(ns, path) == (0, True)
    from umlstate.host.lock import TopologyLock

    with TopologyLock(str(path.parent / "state"), 1.0):
        busy = umlstate("--lock-timeout", "0.5", "apply", "--yes", str(path), netns=ns.name, env=QUICK)
    assert busy.returncode == 75 and SAID not in busy.stderr, busy.stderr


def _name(path: Path) -> str:
    return next(line.split(": ", 1)[1] for line in path.read_text().splitlines() if line.startswith("name: "))


def _rewrite_records(tmp: Path) -> None:
    records = tmp / "state" / "state.json"
    data = json.loads(records.read_text())
    records.write_text(json.dumps(data, indent=2) + "\n")


def test_a_guest_file_swapped_for_a_link_by_its_owner_is_not_answered_quickly(lab: tuple[Netns, Path]) -> None:
    """The lab's owner replaces a guest file with a link to root's secret: the quick pass reads it as the
    loader does (never through a link), so the full pass runs and refuses it, quoting nothing of the secret."""
    ns, path = lab
    apply(ns, path)
    plan(ns, path)
    assert plan(ns, path)[:2] == (0, True)
    motd = path.parent / "motd"
    motd.unlink()
    motd.symlink_to("/etc/shadow")
    done = umlstate("plan", "--detailed-exitcode", str(path), netns=ns.name, env=QUICK)
    assert done.returncode == 65 and SAID not in done.stderr, done.stderr
    assert "root:" not in done.stdout + done.stderr
    motd.unlink()
    motd.write_text("hello\n")
