"""`umlstate import kathara`: a Kathara lab's files into a topology, without root (cli/kathara.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from umlstate.cli.kathara import convert
from umlstate.errors import UsageError
from umlstate.model.loader import load_text

LAB = {
    "lab.conf": 'LAB_DESCRIPTION="two routers"\nr1[0]="A"\nr1[1]="B/00:00:00:00:00:01"\nr1[mem]="128m"\n'
                'r1[bridged]=true\npc1[0]="A"\npc2[0]="B"\n',
    "r1.startup": "ifconfig eth0 10.0.1.1/24 up\nip addr add 10.0.2.1/24 dev eth1\nip link set eth1 up\n"
                  "sysctl -w net.ipv4.conf.all.rp_filter=0\n# route add default gw 10.0.1.254\n"
                  "/etc/init.d/frr start\n",
    "pc1.startup": "ifconfig eth0 10.0.1.5 netmask 255.255.255.0 up\nroute add default gw 10.0.1.1\n",
    "pc2.startup": "ip address add 10.0.2.5/24 dev eth0\nip route add 10.0.1.0/24 via 10.0.2.1 dev eth0\n"
                   "echo 0 > /proc/sys/net/ipv4/icmp_echo_ignore_all\n",
    "r1/etc/frr/frr.conf": "hostname r1\n",
}


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_a_lab_becomes_bridges_subnets_guests_routes_files_and_startup(tmp_path: Path) -> None:
    lab = write(tmp_path / "lab", LAB)
    text = convert(lab, name="lab", user="nobody", image="/srv/uml/base.img", out=tmp_path / "lab.yaml")
    assert "# note: r1: options not translated: bridged=true" in text
    t = yaml.safe_load(text)
    assert t["subnets"] == [{"name": "A", "cidr": "10.0.1.0/24"}, {"name": "B", "cidr": "10.0.2.0/24"}]
    pc1, pc2, r1 = t["guests"]
    assert pc1["routes"] == [{"to": "default", "via": "10.0.1.1"}] and pc1["nics"] == [{"switch": "A",
                                                                                         "address": "10.0.1.5"}]
    assert pc2["routes"] == [{"to": "10.0.1.0/24", "via": "10.0.2.1"}]
    assert pc2["sysctl"] == {"net.ipv4.icmp_echo_ignore_all": "0"}
    assert r1["mem"] == "128M" and r1["startup"] == "/etc/init.d/frr start\n"
    assert r1["sysctl"] == {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "0"}
    assert r1["nics"][0] == {"switch": "A", "address": "10.0.1.1", "allow_sources": ["10.0.2.0/24"]}
    assert r1["files"] == [{"path": "/etc/frr/frr.conf", "from": "lab/r1/etc/frr/frr.conf"}]
    load_text(text)  # a valid topology


def test_two_subnets_on_one_collision_domain_share_its_bridge(tmp_path: Path) -> None:
    # pc1 on a second subnet of A, and a second address on r1's eth0 on it: Kathara's several subnets per domain.
    lab = write(tmp_path / "lab", {**LAB, "pc1.startup": "ifconfig eth0 10.9.9.5/24 up\n",
                                   "r1.startup": LAB["r1.startup"] + "ip addr add 10.9.9.1/24 dev eth0\n"})
    text = convert(lab, name="lab", user="nobody", image="/srv/uml/base.img", out=tmp_path / "lab.yaml",
                   host_on={"A": "10.9.9.254"})
    t = yaml.safe_load(text)
    assert t["subnets"] == [{"name": "A-1", "cidr": "10.0.1.0/24"},
                            {"name": "A-2", "cidr": "10.9.9.0/24", "gateway": "10.9.9.254"},
                            {"name": "B", "cidr": "10.0.2.0/24"}]
    assert t["switches"][0] == {"name": "A", "kind": "bridge", "subnet": ["A-1", "A-2"]}
    r1 = t["guests"][2]
    assert r1["nics"][0] == {"switch": "A", "addresses": ["10.0.1.1", "10.9.9.1"], "allow_sources": ["10.0.2.0/24"]}
    assert r1["nics"][1]["allow_sources"] == ["10.0.1.0/24", "10.9.9.0/24"]
    topology = load_text(text)  # a valid topology: each address on one of its bridge's subnets
    assert [str(i) for i in topology.interfaces_of(topology.guests[2].nics[0])] == ["10.0.1.1/24", "10.9.9.1/24"]


def test_ipv6_addresses_and_routes_become_ipv6_subnets_and_routes(tmp_path: Path) -> None:
    lab = write(tmp_path / "lab", {**LAB, "pc2.startup": LAB["pc2.startup"] + "ip -6 addr add 2001:db8:2::5/64 dev eth0\n"
                                   "ip -6 route add default via 2001:db8:2::1 dev eth0\n",
                                   "r1.startup": LAB["r1.startup"] + "ip -6 address add 2001:db8:2::1/64 dev eth1\n"})
    text = convert(lab, name="lab", user="nobody", image="/srv/uml/base.img", out=tmp_path / "lab.yaml")
    t = yaml.safe_load(text)
    assert {"name": "B-2", "cidr": "2001:db8:2::/64"} in t["subnets"]
    pc2 = t["guests"][1]
    assert pc2["nics"] == [{"switch": "B", "addresses": ["10.0.2.5", "2001:db8:2::5"]}]
    assert {"to": "default", "via": "2001:db8:2::1"} in pc2["routes"]
    load_text(text)  # a valid topology


def test_the_host_on_a_domain_needs_an_address_on_one_of_its_subnets(tmp_path: Path) -> None:
    lab = write(tmp_path / "lab", LAB)
    with pytest.raises(UsageError, match=r"--host-on A=10.7.7.7: the address is on none of its subnets \(10.0.1.0/24\)"):
        convert(lab, name="lab", user="nobody", image="/srv/uml/base.img", out=tmp_path / "lab.yaml",
                host_on={"A": "10.7.7.7"})


def test_a_link_in_a_device_folder_is_left_out(tmp_path: Path) -> None:
    lab = write(tmp_path / "lab", LAB)
    (lab / "r1" / "etc" / "shadow").symlink_to("/etc/shadow")
    text = convert(lab, name="lab", user="nobody", image="/srv/uml/base.img", out=tmp_path / "lab.yaml")
    assert "/etc/shadow is not a regular file: left out" in text
    assert "from: /etc/shadow" not in text
