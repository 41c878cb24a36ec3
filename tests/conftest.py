"""Test harness: fresh namespaces per test, and a guard on the root namespace.

Every kernel test works in a namespace named umlstate-test-* that it makes and
removes itself, also when it fails. The session guard records the root
namespace's links, addresses, routes, proxy entries and forwarding sysctls at
start and fails the run if any of them changed by the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["farm", "guestattack"]  # the host + LAN + guests fixture; a hostile guest's tools (e2e tests)
IS_ROOT = os.geteuid() == 0

needs_root = pytest.mark.skipif(not IS_ROOT, reason="kernel tests need root (network namespaces, taps)")
# Fixtures that make namespaces, taps, users or guests: a test using one needs root.
ROOT_FIXTURES = {"netns", "host_with_uplink", "farm", "lab", "image"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs root `root`, so that `pytest -m "not root"` runs as anyone.

    A test needs root when it asks for a root fixture or carries the needs_root skip; the mark
    is added here rather than by hand so that no such test can be forgotten.
    """
    for item in items:
        needs = ROOT_FIXTURES & set(getattr(item, "fixturenames", ()))
        skips_without_root = any(m.name == "skipif" and "need root" in str(m.kwargs.get("reason", ""))
                                 for m in item.iter_markers())
        if needs or skips_without_root:
            item.add_marker(pytest.mark.root)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def _root_state() -> dict[str, Any]:
    links = json.loads(sh("ip", "-d", "-j", "link", "show").stdout)
    addrs = json.loads(sh("ip", "-j", "addr", "show").stdout)
    return {
        "links": sorted((x["ifname"], x.get("ifalias", ""), x.get("group", ""), x.get("linkinfo", {}).get("info_kind", ""))
                        for x in links),
        "addresses": sorted((x["ifname"], a["local"], a["prefixlen"]) for x in addrs for a in x.get("addr_info", [])),
        "routes": sh("ip", "route", "show").stdout,
        "proxies": sh("ip", "neigh", "show", "proxy").stdout,
        "sysctls": {k: Path(f"/proc/sys/net/ipv4/{k}").read_text().strip()
                    for k in ("ip_forward", "conf/all/proxy_arp")},
    }


MADE: set[str] = set()  # the namespaces this test session made


@pytest.fixture(scope="session", autouse=True)
def root_namespace_unchanged() -> Iterator[None]:
    """Fail the run if anything in the root network namespace changed."""
    if not IS_ROOT:
        yield
        return
    before = _root_state()
    yield
    after = _root_state()
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    if changed:
        pytest.fail(f"the tests changed the ROOT network namespace: {changed}", pytrace=False)
    # Only ours: another test run on the machine may have namespaces of its own.
    left = MADE & set(sh("ip", "netns", "list").stdout.split())
    if left:
        pytest.fail(f"the tests left network namespaces behind: {sorted(left)}", pytrace=False)


@dataclass
class Netns:
    name: str

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.name, *args, check=check)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *args, check=check)

    def json(self, *args: str) -> Any:
        return json.loads(self.ip("-j", *args).stdout or "[]")

    def sysctl(self, key: str) -> str:
        return self.run("cat", "/proc/sys/" + key.replace(".", "/")).stdout.strip()

    def pids(self) -> list[int]:
        return [int(p) for p in sh("ip", "netns", "pids", self.name, check=False).stdout.split()]


def make_netns(prefix: str = "umlstate-test-") -> Netns:
    ns = Netns(prefix + secrets.token_hex(4))
    MADE.add(ns.name)
    sh("ip", "netns", "add", ns.name)
    ns.ip("link", "set", "lo", "up")
    return ns


def remove_netns(ns: Netns) -> None:
    """End only the processes inside this namespace (ours: we made it), then delete it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = ns.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while ns.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
    sh("ip", "netns", "del", ns.name, check=False)


@contextlib.contextmanager
def host_and_lan() -> Iterator[tuple[Netns, Netns]]:
    """A host namespace whose eth0 (172.16.0.1/16) is a veth to a LAN namespace's lan0 (172.16.0.2/16), like
    the seed's LAN around the guests' 172.16.99.0/24; both removed afterwards, also on failure."""
    host, lan = make_netns(), make_netns("umlstate-test-lan-")
    try:
        host.ip("link", "add", "eth0", "type", "veth", "peer", "name", "lan0", "netns", lan.name)
        host.ip("addr", "add", "172.16.0.1/16", "dev", "eth0")
        host.ip("link", "set", "eth0", "up")
        lan.ip("addr", "add", "172.16.0.2/16", "dev", "lan0")
        lan.ip("link", "set", "lan0", "up")
        yield host, lan
    finally:
        remove_netns(host)  # ends only the processes inside the namespaces made here
        remove_netns(lan)


@contextlib.contextmanager
def hosts_on_lan(addresses: dict[str, str]) -> Iterator[tuple[Netns, dict[str, Netns]]]:
    """Several host namespaces (name -> address in 172.16.0.0/16), each eth0 a port of one LAN bridge (its
    uplink and VXLAN underlay), and the LAN namespace at 172.16.0.2; all removed afterwards."""
    lan = make_netns("umlstate-test-lan-")
    hosts: dict[str, Netns] = {}
    try:
        lan.ip("link", "add", "lanbr", "type", "bridge")
        lan.ip("addr", "add", "172.16.0.2/16", "dev", "lanbr")
        lan.ip("link", "set", "lanbr", "up")
        for i, (name, address) in enumerate(addresses.items()):
            ns = hosts[name] = make_netns()
            ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", f"port{i}", "netns", lan.name)
            ns.ip("addr", "add", f"{address}/16", "dev", "eth0")
            ns.ip("link", "set", "eth0", "up")
            lan.ip("link", "set", f"port{i}", "master", "lanbr", "up")
        yield lan, hosts
    finally:
        for ns in hosts.values():
            remove_netns(ns)
        remove_netns(lan)


def remove_cgroups(topology: str) -> None:
    """The cgroups umlstate made for a topology of this test (umlstate/<name>-<digest>/<unit>), once empty."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if " - cgroup2 " in line and line.split()[3] == "/"]
    for base in (Path(mounts[0]) / "umlstate").glob(f"{topology}-*") if mounts else ():
        for unit in [p for p in base.iterdir() if p.is_dir()]:
            with contextlib.suppress(OSError):
                (unit / "cgroup.kill").write_text("1")
            for _ in range(100):
                if "populated 0" in (unit / "cgroup.events").read_text():
                    break
                time.sleep(0.05)
            with contextlib.suppress(OSError):
                unit.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()


@pytest.fixture
def netns() -> Iterator[Netns]:
    if not IS_ROOT:
        pytest.skip("needs root")
    ns = make_netns()
    try:
        yield ns
    finally:
        remove_netns(ns)


@pytest.fixture
def tmp_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder that unprivileged users can reach (pytest's own base is 0700), as /run and /var/lib are."""
    folder = Path(tempfile.mkdtemp(prefix="umlstate-test-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def host_with_uplink(netns: Netns) -> Netns:
    """A namespace with an eth0 (one end of a veth pair; this kernel has no dummy links)."""
    netns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
    netns.ip("link", "set", "eth0", "up")
    return netns


def umlstate(*args: str, netns: str | None = None, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, in its own process."""
    cmd = [sys.executable, "-m", "umlstate"]
    if netns:
        cmd += ["--netns", netns]
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=full_env, check=False)
