"""The host plumbing reconciler on a real kernel, in a fresh namespace per test.

Checks go through iproute2 (`ip -d -j link`, `ip neigh show proxy`) rather than
umlstate's own observer, so a bug shared by observe and apply cannot hide.
"""

from __future__ import annotations

import fcntl
import grp
import json
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conftest import ROOT, Netns, needs_root, sh, umlstate

pytestmark = [needs_root, pytest.mark.kernel]

TOPOLOGY = """\
name: {name}
host:
  run_dir: {tmp}/run
  state_dir: {tmp}/state
  tun: {{path: {tmp}/dev/tun, mode: "0660", group: {group}}}
  groups:
    - {{name: {group}, members: [nobody]}}
  sysctl:
    net.ipv4.ip_forward: 1
    net.ipv4.conf.all.proxy_arp: 0
subnets:
  - {{name: guests, cidr: 172.16.99.0/24, gateway: 172.16.99.254, proxy_arp: {{uplink: eth0}}}}
  - {{name: back, cidr: 172.16.98.0/24, gateway: 172.16.98.254, proxy_arp: {{uplink: eth0}}}}
  - {{name: mgmt, cidr: 10.99.0.0/24, gateway: 10.99.0.1}}
taps:
  - {{name: uml0, owner: nobody, group: {group}, subnet: guests}}
  - {{name: uml1, owner: root, subnet: back}}
  - {{name: uml2, owner: nobody, subnet: mgmt}}
guests:
  - name: web
    user: nobody
    mem: 64M
    disk: {{image: {tmp}/web.img}}
    nics: [{{tap: uml0, address: 172.16.99.1}}, {{tap: uml1, address: 172.16.98.1}}]
  - name: db
    user: nobody
    mem: 64M
    disk: {{image: {tmp}/db.img}}
    nics: [{{tap: uml0, address: 172.16.99.2}}, {{tap: uml2, address: 10.99.0.2}}]
"""


class Lab:
    def __init__(self, ns: Netns, tmp: Path, group: str) -> None:
        self.ns, self.tmp, self.group = ns, tmp, group
        self.name = "t" + secrets.token_hex(3)
        self.path = tmp / "topology.yaml"
        self.write()

    def write(self, text: str | None = None) -> None:
        self.path.write_text(text or TOPOLOGY.format(name=self.name, tmp=self.tmp, group=self.group))

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return umlstate(*args, str(self.path), netns=self.ns.name, env=env)

    def links(self) -> dict[str, Any]:
        return {link["ifname"]: link for link in self.ns.json("-d", "link", "show")}

    def addresses(self) -> set[tuple[str, str]]:
        return {(x["ifname"], f"{a['local']}/{a['prefixlen']}") for x in self.ns.json("addr", "show")
                for a in x.get("addr_info", []) if a["family"] == "inet"}

    def proxies(self) -> set[str]:
        return set(self.ns.ip("neigh", "show", "proxy").stdout.strip().splitlines())

    def state(self) -> dict[str, Any]:
        """Everything umlstate may touch, as iproute2 and the files show it."""
        tun = self.tmp / "dev" / "tun"
        return {
            "links": {n: (link.get("ifalias"), link.get("linkinfo", {}).get("info_kind"), link["flags"])
                      for n, link in self.links().items()},
            "addresses": self.addresses(),
            "proxies": self.proxies(),
            "sysctls": (self.ns.sysctl("net.ipv4.ip_forward"), self.ns.sysctl("net.ipv4.conf.all.proxy_arp")),
            "tun": tun.exists(),
            "group": _group_exists(self.group),
        }


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def lab(host_with_uplink: Netns, tmp_path: Path) -> Iterator[Lab]:
    group = "umlst-" + secrets.token_hex(3)
    # A sysctl value that differs from the wanted one, so destroy has something to restore.
    host_with_uplink.run("sysctl", "-qw", "net.ipv4.conf.all.proxy_arp=1")
    try:
        lab = Lab(host_with_uplink, tmp_path, group)
        # These tests are about host plumbing: the guests only give proxy entries their
        # addresses, so they are held down the way an operator would, with `stop`.
        for guest in ("web", "db"):
            held = umlstate("stop", str(lab.path), guest, netns=lab.ns.name)
            assert held.returncode == 0, held.stderr
        yield lab
    finally:
        if _group_exists(group):  # never leave a host group behind, even on failure
            sh("groupdel", group, check=False)


def test_plan_apply_verify_and_inspect_with_iproute2(lab: Lab) -> None:
    before = lab.state()
    plan = lab.run("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stderr
    assert "Plan: 12 to add, 6 to change, 0 to destroy." in plan.stdout  # the traffic policy too

    applied = lab.run("apply", "--yes")
    assert applied.returncode == 0, applied.stderr
    assert "verified" in applied.stdout

    links = lab.links()
    for name, user, group in (("uml0", "nobody", lab.group), ("uml1", "root", None), ("uml2", "nobody", None)):
        link = links[name]
        info = link["linkinfo"]["info_data"]
        assert link["linkinfo"]["info_kind"] == "tun"
        assert info["type"] == "tap" and info["persist"] is True and info["pi"] is False
        assert info["user"] == user
        assert info.get("group") == group
        assert link["ifalias"] == f"umlstate:{lab.name}"
        assert "UP" in link["flags"]
    assert {("uml0", "172.16.99.254/24"), ("uml1", "172.16.98.254/24"), ("uml2", "10.99.0.1/24")} <= lab.addresses()
    assert lab.proxies() == {"172.16.99.1 dev eth0 proxy ", "172.16.99.2 dev eth0 proxy ",
                             "172.16.98.1 dev eth0 proxy "} or {p.strip() for p in lab.proxies()} == {
        "172.16.99.1 dev eth0 proxy", "172.16.99.2 dev eth0 proxy", "172.16.98.1 dev eth0 proxy"}
    assert lab.ns.sysctl("net.ipv4.ip_forward") == "1"
    assert lab.ns.sysctl("net.ipv4.conf.all.proxy_arp") == "0"
    st = os.stat(lab.tmp / "dev" / "tun")
    assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (10, 200)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == grp.getgrnam(lab.group).gr_gid
    assert "nobody" in grp.getgrnam(lab.group).gr_mem

    again = lab.run("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout
    assert "No changes." in again.stdout
    status = lab.run("status", "--json")
    assert status.returncode == 0
    assert all(r["state"] == "ok" for r in json.loads(status.stdout)["resources"])

    destroyed = lab.run("destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stderr
    assert lab.state() == before, "destroy must leave the namespace as it found it"


DRIFTS = {
    "tap deleted": (["ip", "link", "del", "uml0"], "+ tap uml0"),
    "tap down": (["ip", "link", "set", "uml1", "down"], "~ tap uml1  link up  # down"),
    "address flushed": (["ip", "addr", "flush", "dev", "uml2"], "+ address uml2 10.99.0.1/24"),
    "extra address": (["ip", "addr", "add", "192.0.2.7/24", "dev", "uml1"], "- address uml1 192.0.2.7/24"),
    "proxy removed": (["ip", "neigh", "del", "proxy", "172.16.99.2", "dev", "eth0"],
                      "+ proxy-neigh eth0 172.16.99.2"),
    "forwarding off": (["sysctl", "-qw", "net.ipv4.ip_forward=0"], "~ sysctl net.ipv4.ip_forward"),
    "tap owner": (["tunctl", "-f", "{tmp}/dev/tun", "-u", "0", "-t", "uml2"], "owner is root (0), wanted nobody"),
    "tap group set": (["tunctl", "-f", "{tmp}/dev/tun", "-u", "0", "-g", "0", "-t", "uml1"],
                      "-/+ tap uml1"),  # a group cannot be cleared in place: replaced
    "tun node mode": (["chmod", "0666", "{tmp}/dev/tun"], "chmod 0660"),
    "group member": (["gpasswd", "-d", "nobody", "{group}"], "add member nobody"),
}


@pytest.mark.parametrize("drift", DRIFTS, ids=lambda d: d.replace(" ", "-"))
def test_hand_made_drift_is_named_and_repaired(lab: Lab, drift: str) -> None:
    assert lab.run("apply", "--yes").returncode == 0
    command, expected = DRIFTS[drift]
    command = [c.format(tmp=lab.tmp, group=lab.group) for c in command]
    lab.ns.run(*command)

    plan = lab.run("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert expected in plan.stdout, plan.stdout
    applied = lab.run("apply", "--yes")
    assert applied.returncode == 0, applied.stderr
    assert lab.run("plan", "--detailed-exitcode").returncode == 0
    lab.run("destroy", "--yes")


def test_foreign_objects_are_conflicts_and_survive_apply_and_destroy(lab: Lab) -> None:
    lab.ns.ip("tuntap", "add", "dev", "uml1", "mode", "tap")  # where the topology wants its own
    lab.ns.ip("tuntap", "add", "dev", "foreign0", "mode", "tap")
    lab.ns.ip("neigh", "add", "proxy", "172.16.0.77", "dev", "eth0")

    plan = lab.run("plan")
    assert "conflict: tap uml1: a tap named uml1 exists, not created by umlstate" in plan.stdout
    refused = lab.run("apply", "--yes")
    assert refused.returncode == 1
    assert "nothing was changed" in refused.stderr and "--adopt" in refused.stderr
    assert "uml0" not in lab.links(), "a refused apply must change nothing"

    adopted = lab.run("apply", "--yes", "--adopt")
    assert adopted.returncode == 0, adopted.stderr
    assert lab.links()["uml1"]["ifalias"] == f"umlstate:{lab.name}"
    assert "foreign0" in lab.links() and "ifalias" not in lab.links()["foreign0"]

    assert lab.run("destroy", "--yes").returncode == 0
    assert "foreign0" in lab.links()
    assert any("172.16.0.77" in p for p in lab.proxies())
    assert "uml0" not in lab.links()


def test_plan_json_follows_the_schema_and_a_saved_plan_refuses_a_changed_host(lab: Lab) -> None:
    result = lab.run("plan", "--json")
    data = json.loads(result.stdout)
    schema = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())
    jsonschema.validate(data, schema)
    assert data["format_version"] == 1 and data["netns"] == lab.ns.name
    assert data["summary"] == {"add": 12, "change": 6, "destroy": 0}
    assert [a["kind"] for a in data["actions"]][:3] == ["group", "group", "tun-device"]

    saved = lab.tmp / "plan.json"
    assert lab.run("plan", "--out", str(saved)).returncode == 0
    lab.ns.ip("tuntap", "add", "dev", "late0", "mode", "tap")
    stale = umlstate("apply", str(saved), netns=lab.ns.name)
    assert stale.returncode == 1 and "the host changed since this plan was saved" in stale.stderr
    lab.ns.ip("link", "del", "late0")
    fresh = umlstate("apply", str(saved), netns=lab.ns.name)
    assert fresh.returncode == 0, fresh.stderr
    assert lab.run("destroy", "--yes").returncode == 0


def test_a_second_run_waits_for_the_lock_then_exits_75_naming_the_holder(lab: Lab) -> None:
    state_dir = lab.tmp / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "lock", "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        holder.write(f"{os.getpid()}\n")
        holder.flush()
        busy = umlstate("--lock-timeout", "0.5", "apply", "--yes", str(lab.path), netns=lab.ns.name)
    assert busy.returncode == 75
    assert f"pid {os.getpid()}" in busy.stderr
    assert "uml0" not in lab.links()


def test_a_run_killed_at_every_action_boundary_is_finished_by_the_next(lab: Lab) -> None:
    total = json.loads(lab.run("plan", "--json").stdout)["actions"]
    for k in range(1, len(total)):
        killed = lab.run("apply", "--yes", env={"UMLSTATE_TEST_CRASH_AFTER": str(k)})
        assert killed.returncode == -9, killed.stderr
        # The next run finishes the work from wherever the killed one stopped.
        finished = lab.run("apply", "--yes")
        assert finished.returncode == 0, f"after a kill at action {k}: {finished.stderr}"
        assert lab.run("plan", "--detailed-exitcode").returncode == 0
        assert lab.run("destroy", "--yes").returncode == 0
        assert not any(n.startswith("uml") for n in lab.links())


def test_missing_namespace_is_a_clear_error_and_never_created() -> None:
    name = "umlstate-test-absent-" + secrets.token_hex(3)
    result = umlstate("plan", str(ROOT / "topology.example.yaml"), netns=name)
    assert result.returncode == 1
    assert f"network namespace {name} does not exist" in result.stderr
    assert name not in sh("ip", "netns", "list").stdout
