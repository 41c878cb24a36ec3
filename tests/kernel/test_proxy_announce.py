"""The LAN learns a guest's new host at once: apply announces every proxy entry it adds (host/announce.py).

A real host namespace whose uplink is a veth to a LAN namespace, as in the
seed's farm. The LAN holds a neighbour entry for one guest's addresses (IPv4
and IPv6) pointing at another host's MAC, as its router would after the
guest ran there; apply on this host must move both to this host's uplink MAC,
and must not create entries the LAN never had. The guests are held down with
`stop`: the proxy entries are what matters here.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Netns, host_and_lan, needs_root, umlstate

pytestmark = [needs_root, pytest.mark.kernel]

OLD_HOST_MAC = "02:00:5e:00:00:99"
TOPOLOGY = """\
name: {name}
host:
  run_dir: {tmp}/run
  state_dir: {tmp}/state
  sysctl:
    net.ipv4.ip_forward: 1
    net.ipv6.conf.all.forwarding: 1
subnets:
  - {{name: a, cidr: 172.16.99.0/24, gateway: 172.16.99.254, proxy_arp: {{uplink: eth0}}}}
  - {{name: a6, cidr: "2001:db8:0:1::100/120", gateway: "2001:db8:0:1::1fe", proxy_ndp: {{uplink: eth0}}}}
switches:
  - {{name: br0, kind: bridge, subnet: [a, a6]}}
guests:
  - name: moved
    user: nobody
    mem: 96M
    disk: {{image: {tmp}/moved.img}}
    nics: [{{switch: br0, addresses: [172.16.99.1, "2001:db8:0:1::101"]}}]
  - name: new
    user: nobody
    mem: 96M
    disk: {{image: {tmp}/new.img}}
    nics: [{{switch: br0, addresses: [172.16.99.2, "2001:db8:0:1::102"]}}]
"""
MOVED = ("172.16.99.1", "2001:db8:0:1::101")
NEW = ("172.16.99.2", "2001:db8:0:1::102")


class Farm:
    def __init__(self, host: Netns, lan: Netns, tmp: Path) -> None:
        self.host, self.lan = host, lan
        self.path = tmp / "topology.yaml"
        self.path.write_text(TOPOLOGY.format(name="t" + secrets.token_hex(3), tmp=tmp))

    def run(self, *args: str) -> tuple[int, str]:
        done = umlstate(*args, str(self.path), netns=self.host.name)
        return done.returncode, done.stdout + done.stderr

    def lan_knows(self, address: str) -> str | None:
        """The MAC the LAN would send ``address``'s packets to, or None without an entry."""
        entries = self.lan.json("neigh", "show", "to", address, "dev", "lan0")
        return entries[0].get("lladdr") if entries else None

    def uplink_mac(self) -> str:
        mac: str = self.host.json("link", "show", "eth0")[0]["address"]
        return mac


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    with host_and_lan() as (host, lan):
        farm = Farm(host, lan, tmp_path)
        for guest in ("moved", "new"):
            held = umlstate("stop", str(farm.path), guest, netns=host.name)
            assert held.returncode == 0, held.stderr
        # The LAN's router still has the guest at its old host, as after it ran there.
        for address in MOVED:
            lan.ip("neigh", "replace", address, "lladdr", OLD_HOST_MAC, "dev", "lan0", "nud", "stale")
        # IPv6's NA goes out from the uplink's link-local address: wait until its duplicate detection is over.
        deadline = time.monotonic() + 30
        while host.json("-6", "addr", "show", "dev", "eth0", "scope", "link", "tentative") \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        yield farm


def test_apply_moves_the_lans_entries_to_this_host_and_creates_none(farm: Farm) -> None:
    assert [farm.lan_knows(a) for a in MOVED] == [OLD_HOST_MAC, OLD_HOST_MAC]
    code, out = farm.run("apply", "--yes")
    assert code == 0, out
    mac = farm.uplink_mac()
    deadline = time.monotonic() + 10  # the LAN's kernel takes them in as the veth hands them over: at once
    while [farm.lan_knows(a) for a in MOVED] != [mac, mac] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [farm.lan_knows(a) for a in MOVED] == [mac, mac], "gratuitous ARP and unsolicited NA, overriding"
    assert [farm.lan_knows(a) for a in NEW] == [None, None], "a LAN that never had the guest learns nothing"


def test_an_uplink_that_cannot_announce_is_a_warning_and_the_entries_are_made(farm: Farm) -> None:
    farm.host.ip("link", "set", "eth0", "down")
    code, out = farm.run("apply", "--yes")
    assert code == 0, out
    assert "the LAN was not told of new proxy entries" in out and "172.16.99.1" in out, out
    assert {e["dst"] for e in farm.host.json("neigh", "show", "proxy")} >= {"172.16.99.1", "172.16.99.2"}
    code, out = farm.run("plan", "--detailed-exitcode")
    assert code == 0, out


def test_an_uplink_without_arp_is_not_announced_on(farm: Farm) -> None:
    farm.host.ip("link", "set", "eth0", "arp", "off")
    code, out = farm.run("apply", "--yes")
    assert code == 0, out
    assert "not told" not in out, out
    assert farm.lan_knows(MOVED[0]) == OLD_HOST_MAC


def test_an_uplink_without_ipv6_announces_ipv4_and_warns_of_the_ipv6_addresses_alone(farm: Farm) -> None:
    farm.host.run("sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1")
    code, out = farm.run("apply", "--yes")
    assert code == 0, out
    mac = farm.uplink_mac()
    deadline = time.monotonic() + 10
    while farm.lan_knows(MOVED[0]) != mac and time.monotonic() < deadline:
        time.sleep(0.1)
    assert farm.lan_knows(MOVED[0]) == mac, "IPv4 was announced"
    warned = [line for line in out.splitlines() if "not told" in line]
    assert warned and all("2001:db8" in line and "172.16.99" not in line for line in warned), out
