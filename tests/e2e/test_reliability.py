"""Unattended operation: watch mode, reboots, kills, concurrency, bad hosts, security.

The farm tests boot real guests behind a real uml_switch (the fixture is the
end-to-end one); the others use host plumbing only, in a fresh namespace.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import pwd
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from umlstate.host import mconsole

from conftest import ROOT, Netns, needs_root, umlstate
from farm import Farm, ttl

pytestmark = [needs_root]
NOBODY = pwd.getpwnam("nobody").pw_uid


def wait_for(predicate: object, seconds: float, what: str) -> float:
    """Poll until predicate() is true; return how long it took."""
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > seconds:
            raise AssertionError(f"{what} did not happen within {seconds}s")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
def watcher(farm: Farm) -> Iterator[subprocess.Popen[str]]:
    cmd = [sys.executable, "-m", "umlstate", "--netns", farm.host.name, "--log-format", "json",
           "watch", str(farm.path), "--resync", "600"]
    # Logs to a file: a pipe nobody reads while the test runs would fill and block the watcher.
    log = open(farm.tmp / "watch.log", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


@pytest.mark.slow
def test_watch_repairs_a_deleted_tap_a_removed_proxy_and_a_killed_switch(farm: Farm,
                                                                         watcher: subprocess.Popen[str]) -> None:
    in_sync = lambda: farm.cli("plan", "--detailed-exitcode").returncode == 0  # noqa: E731
    wait_for(in_sync, 60, "the first pass")
    assert ttl(farm.lan_ping("172.16.99.1")) == 63

    farm.host.ip("neigh", "del", "proxy", "172.16.99.2", "dev", "eth0")
    took = wait_for(lambda: "172.16.99.2" in farm.host.ip("neigh", "show", "proxy").stdout, 10, "proxy repair")
    print(f"proxy entry restored in {took:.2f}s")

    os.kill(farm.switch_pid(), signal.SIGKILL)
    wait_for(lambda: _switch_running(farm), 20, "switch restart")
    wait_for(in_sync, 30, "convergence after the switch was killed")

    farm.host.ip("link", "del", "uml0")
    took = wait_for(lambda: "uml0" in farm.host.ip("link", "show").stdout, 10, "tap repair")
    print(f"tap restored in {took:.2f}s")
    wait_for(in_sync, 30, "convergence after the tap was deleted")
    assert ttl(farm.lan_ping("172.16.99.1")) == 63
    assert ttl(farm.lan_ping("172.16.99.2")) == 63

    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(10) == 0, "watch exits 0 on SIGTERM"
    events = [json.loads(line) for line in (farm.tmp / "watch.log").read_text().splitlines()
              if line.startswith("{")]
    assert any(e.get("event") == "watch stopped" for e in events)
    assert farm.cli("destroy", "--yes").returncode == 0


def test_a_panicked_guest_is_reported_with_its_last_words_and_watch_starts_it_again(farm: Farm) -> None:
    assert farm.cli("apply", "--yes").returncode == 0
    first = farm.panic("web")

    status = farm.cli("status")
    assert status.returncode == 2
    row = next(line for line in status.stdout.splitlines() if line.startswith("guest") and " web " in line)
    assert "panicked" in row and "Kernel panic - not syncing: sysrq triggered crash" in row
    assert "| sysrq: Trigger a crash" in status.stdout, "the lines that led to it, under the row"
    web = next(r for r in json.loads(farm.cli("status", "--json").stdout)["resources"]
               if (r["kind"], r["target"]) == ("guest", "web"))
    assert web["state"] == "panicked" and web["log"][-1].startswith("Kernel panic - not syncing")
    plan = farm.cli("plan")
    assert "# its log says: Kernel panic - not syncing: sysrq triggered crash" in plan.stdout

    cmd = [sys.executable, "-m", "umlstate", "--netns", farm.host.name, "--log-format", "json", "watch",
           str(farm.path), "--resync", "600"]
    with open(farm.tmp / "watch.log", "w+") as log:
        watcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            wait_for(lambda: _guest_answers(farm, "web", dead=first), 30, "the first pass's restart")
            assert ttl(farm.lan_ping("172.16.99.1")) == 63  # booted through: its init is up
            dead = farm.panic("web")
            took = wait_for(lambda: _guest_answers(farm, "web", dead), 30, "watch's restart of the panicked guest")
            print(f"\npanicked guest answering its mconsole again {took:.2f}s after its process ended")
            assert farm.cli("status").returncode == 0
        finally:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(10)
    events = [json.loads(line) for line in (farm.tmp / "watch.log").read_text().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "action" and e.get("target") == "web"
               and e.get("reason", "").startswith("its log says: Kernel panic") for e in events), \
        "watch says why it starts the guest"
    assert farm.cli("destroy", "--yes").returncode == 0


def _guest_answers(farm: Farm, guest: str, dead: int) -> bool:
    try:
        pid = farm.guest_pid(guest)
    except (KeyError, ValueError):
        return False
    return pid != dead and mconsole.answers(str(farm.user_dir() / "uml" / guest / "mconsole"), owner=NOBODY)


def _switch_running(farm: Farm) -> bool:
    try:
        farm.switch_pid()
    except ValueError:
        return False
    return True


@pytest.mark.slow
def test_one_apply_after_a_reboot_restores_the_whole_farm(farm: Farm) -> None:
    assert farm.cli("apply", "--yes").returncode == 0
    # The reboot: every process gone, the namespace's kernel state gone, files left behind.
    def killed() -> bool:
        # Again and again: a booting guest may fork a helper between the listing and the kill.
        left = farm.processes()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not left

    wait_for(killed, 10, "processes gone")
    for link in ("uml0",):
        farm.host.ip("link", "del", link)
    farm.host.ip("neigh", "flush", "proxy", "dev", "eth0", check=False)
    farm.host.run("sysctl", "-qw", "net.ipv4.ip_forward=0")
    assert (farm.user_dir() / "uml" / "web" / "pid").exists(), "stale files stay, as after a real reboot"
    state = farm.tmp / "state" / "state.json"
    records = json.loads(state.read_text())
    records["boot_id"] = "a-boot-before-this-one"
    state.write_text(json.dumps(records))

    applied = farm.cli("apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert ttl(farm.lan_ping("172.16.99.1")) == 63
    assert ttl(farm.lan_ping("172.16.99.2")) == 63
    assert json.loads(state.read_text())["boot_id"] != "a-boot-before-this-one"
    assert farm.cli("destroy", "--yes").returncode == 0


@pytest.mark.slow
def test_concurrent_applies_are_serialised_and_never_double_a_process(farm: Farm) -> None:
    cmd = [sys.executable, "-m", "umlstate", "--netns", farm.host.name, "--lock-timeout", "1", "apply",
           str(farm.path), "--yes"]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(r.wait(), err) for r in runs for _, err in [r.communicate(timeout=120)]]
    codes = sorted(code for code, _ in results)
    assert set(codes) <= {0, 75}, results
    assert 0 in codes
    for code, err in results:
        if code == 75:
            assert "holds the lock" in err and "pid " in err
    table = farm.process_table()
    switches = [pid for pid, (name, _, _) in table.items() if name == "uml_switch"]
    assert len(switches) == 1, "never two switches"
    for guest in ("web", "db"):
        mains = [pid for pid, (_, argv, ppid) in table.items() if f"umid={guest}" in argv and ppid not in table]
        assert len(mains) == 1, f"never two copies of {guest}: {table}"
    assert farm.cli("destroy", "--yes").returncode == 0


MANY_TAPS = """\
name: many
host: {{run_dir: {tmp}/run, state_dir: {tmp}/state}}
subnets:
{subnets}
taps:
{taps}
"""


def test_a_large_apply_killed_at_random_points_converges_without_duplicates(host_with_uplink: Netns,
                                                                               tmp_path: Path) -> None:
    n = 300
    subnets = "\n".join(f"  - {{name: s{i}, cidr: 10.{i // 200}.{i % 200}.0/24, gateway: 10.{i // 200}.{i % 200}.1}}"
                        for i in range(n))
    taps = "\n".join(f"  - {{name: t{i}, owner: nobody, subnet: s{i}}}" for i in range(n))
    path = tmp_path / "many.yaml"
    path.write_text(MANY_TAPS.format(tmp=tmp_path, subnets=subnets, taps=taps))
    ns = host_with_uplink.name
    rng = random.Random(1)
    killed_midway = []
    total = 3 * n + 1  # per tap: create, address, up; then the traffic policy
    for _round in range(3):
        # Killed (SIGKILL, by the executor's test hook) after a random number of its actions: tied to the
        # apply's progress, so it always lands while the host is half changed, however fast the machine.
        k = rng.randrange(1, total)
        killed = umlstate("apply", str(path), "--yes", netns=ns, env={"UMLSTATE_TEST_CRASH_AFTER": str(k)})
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        made = sum(1 for x in host_with_uplink.json("link", "show") if x["ifname"].startswith("t"))
        killed_midway.append(made < n or umlstate("plan", str(path), "--detailed-exitcode", netns=ns).returncode)
        finished = umlstate("apply", str(path), "--yes", netns=ns)
        assert finished.returncode == 0, finished.stderr[-2000:]
        assert umlstate("plan", str(path), "--detailed-exitcode", netns=ns).returncode == 0
        links = [x["ifname"] for x in host_with_uplink.json("link", "show")]
        assert sorted(x for x in links if x.startswith("t")) == sorted(f"t{i}" for i in range(n))
        addrs = [a for x in host_with_uplink.json("addr", "show") if x["ifname"].startswith("t")
                 for a in x.get("addr_info", []) if a["family"] == "inet"]
        assert len(addrs) == n, "one address per tap, never two"
        assert umlstate("destroy", str(path), "--yes", netns=ns).returncode == 0
        assert not [x for x in host_with_uplink.json("link", "show") if x["ifname"].startswith("t")]
    assert any(killed_midway), "at least one kill must land while the host was half changed"


SMALL = """\
name: small
host:
  run_dir: {tmp}/run
  state_dir: {tmp}/state
  sysctl: {{net.ipv4.ip_forward: 1}}
subnets: [{{name: a, cidr: 172.16.99.0/24, gateway: 172.16.99.254, proxy_arp: {{uplink: eth0}}}}]
taps: [{{name: uml0, owner: nobody, subnet: a}}]
"""


def test_json_logs_one_event_per_action_and_a_quiet_no_op(host_with_uplink: Netns, tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL.format(tmp=tmp_path))
    ns = host_with_uplink.name
    applied = umlstate("--log-format", "json", "apply", str(path), "--yes", netns=ns)
    assert applied.returncode == 0
    events = [json.loads(line) for line in applied.stderr.splitlines()]
    actions = [e for e in events if e["event"] == "action"]
    assert len(actions) == 5 and all({"op", "kind", "target", "reason", "timestamp"} <= set(e) for e in actions)
    assert [e["result"] for e in events if e["event"] == "run"] == ["converged"]

    again = umlstate("--log-format", "json", "apply", str(path), "--yes", netns=ns)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", ""), "cron mails only on change"
    assert umlstate("destroy", str(path), "--yes", netns=ns).returncode == 0


def test_preflight_names_every_missing_thing_and_changes_nothing(host_with_uplink: Netns, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"""\
name: bad
host: {{run_dir: {tmp_path}/run, state_dir: {tmp_path}/state, sysctl: {{net.ipv4.ip_forward: 1}}}}
subnets: [{{name: a, cidr: 172.16.99.0/24, gateway: 172.16.99.254, proxy_arp: {{uplink: eth9}}}}]
taps: [{{name: uml0, owner: nosuchuser, group: nosuchgroup, subnet: a}}]
switches: [{{name: sw0, tap: uml0, user: nobody}}]
guests:
  - {{name: web, user: nobody, mem: 64M, kernel: /opt/uml/linux, disk: {{base: {tmp_path}/nothing.img}},
      nics: [{{switch: sw0, address: 172.16.99.1}}]}}
""")
    ns = host_with_uplink
    before = (ns.ip("-d", "link", "show").stdout, ns.sysctl("net.ipv4.ip_forward"))
    result = umlstate("apply", str(path), "--yes", netns=ns.name)
    assert result.returncode == 1
    for expected in ("nothing was changed", "user nosuchuser", "group nosuchgroup",
                     "uplink interface eth9 does not exist",
                     "kernel /opt/uml/linux of guest web is not found", f"disk image {tmp_path}/nothing.img"):
        assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert (ns.ip("-d", "link", "show").stdout, ns.sysctl("net.ipv4.ip_forward")) == before


def test_a_topology_writable_by_others_is_refused_as_root(tmp_path: Path) -> None:
    path = tmp_path / "open.yaml"
    path.write_text(SMALL.format(tmp=tmp_path))
    path.chmod(0o666)
    result = umlstate("apply", str(path), "--yes", netns="umlstate-test-never-entered")
    assert result.returncode == 1
    assert "whoever can write it decides what root runs" in result.stderr and "chmod go-w" in result.stderr


def test_the_package_never_runs_a_shell() -> None:
    for source in sorted((ROOT / "umlstate").glob("*.py")):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    assert not (kw.arg == "shell" and isinstance(kw.value, ast.Constant) and kw.value.value), \
                        f"{source.name}:{node.lineno} uses shell=True"
                func = node.func
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "os":
                    assert func.attr not in ("system", "popen", "execl", "execlp", "spawnl"), \
                        f"{source.name}:{node.lineno} calls os.{func.attr}"



@pytest.mark.slow
def test_a_reference_to_a_deleted_tap_while_guests_run_is_refused_and_loses_nothing(farm: Farm) -> None:
    assert farm.cli("apply", "--yes").returncode == 0
    running = (farm.switch_pid(), farm.guest_pid("web"), farm.guest_pid("db"))
    edited = farm.path.read_text().replace("taps:\n  - {name: uml0, owner: nobody, group: " + farm.group
                                            + ", subnet: guests}\n", "taps: []\n")
    assert edited != farm.path.read_text()
    farm.path.write_text(edited)
    result = farm.cli("apply", "--yes")
    assert result.returncode == 65
    assert "switch sw0 refers to tap 'uml0', which is not defined" in result.stderr
    assert "Traceback" not in result.stderr
    assert (farm.switch_pid(), farm.guest_pid("web"), farm.guest_pid("db")) == running, "nothing is stopped"
    assert "uml0" in farm.host.ip("link", "show").stdout
    assert ttl(farm.lan_ping("172.16.99.1")) == 63
    farm.write()
    assert farm.cli("destroy", "--yes").returncode == 0
