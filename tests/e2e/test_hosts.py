"""Several hosts: one topology, guests placed per host, one bridge stretched over VXLAN between them.

Three hosts simulated as network namespaces on one LAN (a bridge in a LAN
namespace); each host's eth0 is both its uplink (proxy ARP) and its VXLAN
underlay; each runs umlstate with --host for its own slice, with its own
run_dir and state_dir. Real guests, real VXLAN, made per test and removed.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Netns, hosts_on_lan, remove_cgroups, remove_netns, sh, umlstate

pytestmark = [pytest.mark.slow]
HOSTS = {"alpha": "172.16.0.11", "beta": "172.16.0.12", "gamma": "172.16.0.13"}


@dataclass
class Farm3:
    lan: Netns
    hosts: dict[str, Netns]
    tmp: Path
    image: Path
    group: str
    name: str

    def write(self, placement: dict[str, str], args: str = "[umlstate.mark=before-the-move]") -> Path:
        hosts = "".join(f"  - {{name: {h}, underlay: {a}, run_dir: {self.tmp}/{h}/run, state_dir: {self.tmp}/{h}/state}}\n"
                        for h, a in HOSTS.items())
        guests = "".join(f"  - {{name: {g}, user: nobody, mem: 96M, host: {h}, disk: {{base: {self.image}}}, "
                         f"args: {args if g == 'g2' else '[]'}, nics: [{{switch: br0, address: 172.16.99.{g[1:]}}}]}}\n"
                         for g, h in placement.items())
        path = self.tmp / "topology.yaml"
        path.write_text(f"""name: {self.name}
host:
  tun: {{path: {self.tmp}/dev/tun, mode: "0660", group: {self.group}}}
  groups: [{{name: {self.group}, members: [nobody]}}]
  sysctl: {{net.ipv4.ip_forward: 1}}
hosts:
{hosts}subnets:
  - {{name: guests, cidr: 172.16.99.0/24, gateway: 172.16.99.254, proxy_arp: {{uplink: eth0}}}}
switches:
  - {{name: br0, kind: bridge, subnet: guests}}
guests:
{guests}""")
        return path

    def cli(self, host: str, *args: str) -> str:
        result = umlstate("--host", host, *args[:1], str(self.tmp / "topology.yaml"), *args[1:],
                          netns=self.hosts[host].name)
        assert result.returncode in (0, 2), f"{host}: {args}: {result.stdout}{result.stderr}"
        return result.stdout + result.stderr

    def answers(self, address: str) -> bool:
        """From the LAN, within about a minute (each try waits a second)."""
        return any(self.lan.run("ping", "-c1", "-W1", address, check=False).returncode == 0 for _ in range(60))


def vxlan_fdb(ns: Netns, vxlan: str) -> set[tuple[str, str]]:
    """(MAC, remote underlay) of the VXLAN's forwarding entries."""
    out = ns.run("bridge", "-j", "fdb", "show", "dev", vxlan).stdout
    return {(e["mac"], e["dst"]) for e in json.loads(out or "[]") if "dst" in e}


@pytest.fixture
def farm3(tmp_path: Path, image: Path) -> Iterator[Farm3]:
    group = "umlst-" + secrets.token_hex(3)
    try:
        with hosts_on_lan(HOSTS) as (lan, hosts):
            name = "h" + secrets.token_hex(3)
            yield Farm3(lan, hosts, tmp_path, image, group, name)
    finally:
        sh("groupdel", group, check=False)
        if "name" in locals():
            remove_cgroups(name)


def test_three_hosts_one_bridge_guests_reach_the_lan_and_each_other_and_a_guest_moves(farm3: Farm3) -> None:
    farm3.write({"g1": "alpha", "g2": "beta", "g3": "gamma"})
    for host in HOSTS:
        out = farm3.cli(host, "apply", "--yes")
        assert "Apply complete" in out, out
    for g in ("1", "2", "3"):
        assert farm3.answers(f"172.16.99.{g}"), f"the LAN reaches g{g} through the host it runs on"
    links = {x["ifname"]: x for x in farm3.hosts["alpha"].json("-d", "link", "show")}
    vxlan = next(x for x in links.values() if x.get("linkinfo", {}).get("info_kind") == "vxlan")
    assert vxlan["master"] == "br0" and vxlan["linkinfo"]["info_data"]["local"] == HOSTS["alpha"]
    entries = vxlan_fdb(farm3.hosts["alpha"], vxlan["ifname"])
    assert {("00:00:00:00:00:00", HOSTS["beta"]), ("00:00:00:00:00:00", HOSTS["gamma"])} <= entries, entries
    macs = {h: {x["ifname"]: x for x in ns.json("link", "show")}["br0"]["address"] for h, ns in farm3.hosts.items()}
    assert len(set(macs.values())) == 1, f"one gateway MAC on every host: {macs}"
    proxies = farm3.hosts["beta"].ip("neigh", "show", "proxy").stdout
    assert "172.16.99.2" in proxies and "172.16.99.1" not in proxies, "each host answers ARP for its own guests"
    # Guests reach each other across hosts: g1's init pings its neighbour when told (umlstate.ping=).
    for host in HOSTS:
        assert "No changes" in farm3.cli(host, "plan"), "every host is in sync"

    before = json.loads((farm3.tmp / "beta" / "state" / "state.json").read_text())["processes"]["guest-g2"]
    mac = next(w for w in before["argv"] if w.startswith("vec0:")).split("mac=")[1].split(",")[0]
    # The VXLAN does not learn: alpha knows where g2's MAC is from the topology alone.
    assert (mac, HOSTS["beta"]) in vxlan_fdb(farm3.hosts["alpha"], vxlan["ifname"])
    assert "umlstate-guest: marked before-the-move" in (farm3.tmp / "beta" / "state" / "logs" / "g2.log").read_text()
    farm3.write({"g1": "alpha", "g2": "gamma", "g3": "gamma"}, args="[]")
    farm3.cli("beta", "apply", "--yes")  # the host that loses the guest first, then its disk moves
    (farm3.tmp / "gamma" / "state").mkdir(parents=True, exist_ok=True)
    shutil.copy2(farm3.tmp / "beta" / "state" / "g2.cow", farm3.tmp / "gamma" / "state" / "g2.cow")
    sh("chown", "nobody:", str(farm3.tmp / "gamma" / "state" / "g2.cow"))
    for host in ("alpha", "gamma"):
        farm3.cli(host, "apply", "--yes")
    assert farm3.answers("172.16.99.2"), "the moved guest answers at the same address"
    after = json.loads((farm3.tmp / "gamma" / "state" / "state.json").read_text())["processes"]["guest-g2"]
    assert f"mac={mac}" in " ".join(after["argv"]), "and with the same MAC"
    to_g2 = {dst for m, dst in vxlan_fdb(farm3.hosts["alpha"], vxlan["ifname"]) if m == mac}
    assert to_g2 == {HOSTS["gamma"]}, f"alpha now sends g2's frames to gamma only: {to_g2}"
    assert str(after["pid"]) in sh("ip", "netns", "pids", farm3.hosts["gamma"].name).stdout.split()
    assert "guest-g2" not in json.loads((farm3.tmp / "beta" / "state" / "state.json").read_text())["processes"]
    moved_log = (farm3.tmp / "gamma" / "state" / "logs" / "g2.log").read_text()
    assert "umlstate-guest: marks: before-the-move" in moved_log, "its disk came along: " + moved_log[-500:]

    remove_netns(farm3.hosts["alpha"])  # a host goes away: the others' guests keep answering
    assert farm3.answers("172.16.99.2") and farm3.answers("172.16.99.3")
    for host in ("beta", "gamma"):
        farm3.cli(host, "destroy", "--yes")


def test_a_host_not_in_the_topology_is_a_usage_error(farm3: Farm3) -> None:
    farm3.write({"g1": "alpha"})
    result = umlstate("--host", "delta", "plan", str(farm3.tmp / "topology.yaml"), netns=farm3.hosts["alpha"].name)
    assert result.returncode == 64
    assert "this is host 'delta', which topology" in result.stderr and "hosts: alpha, beta, gamma" in result.stderr
