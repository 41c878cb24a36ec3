"""The traffic policy against a real hostile guest, on each guest kernel (bookworm's 6.1, sid's 7.2).

The security tests play the guest from the host side of its tap; here the attacker is
root inside a booted busybox guest, with ``pkt`` and ``arping`` (tests/guestattack.py),
on a bridge farm under the default policy. Each attack is one that test_guest_attack_tools
shows reaching the host's port without a policy; here the host's tables stay as they were,
and what the guests may do still works.
"""

from __future__ import annotations

import json

import pytest

from conftest import needs_root
from farm import Farm
from guestattack import GuestShell, claim, guest_nic, guest_port, icmp_echo_frame, random_mac

pytestmark = [needs_root, pytest.mark.slow]


def bridge_fdb(farm: Farm, port: str) -> set[str]:
    """The unicast MACs the bridge learned on a port."""
    out = farm.host.run("bridge", "-j", "fdb", "show", "br", "sw0", "brport", port).stdout
    return {e["mac"] for e in json.loads(out or "[]") if "self" not in e.get("flags", []) and e.get("state") != "permanent"
            and not int(e["mac"][:2], 16) & 1}


def db_entry(farm: Farm) -> str | None:
    found = [n.get("lladdr") for n in farm.host.json("-4", "neigh", "show", "dev", "sw0") if n["dst"] == "172.16.99.2"]
    return found[0] if found else None


def test_a_hostile_guest_is_held_to_its_own_addresses(attack_farm: Farm, kernel: str) -> None:
    attack_farm.write(kind="bridge", kernel=kernel)
    applied = attack_farm.cli("apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    ifname, mac = guest_nic(attack_farm, "web")
    _, db_mac = guest_nic(attack_farm, "db")
    port = guest_port(attack_farm, "web")
    gateway = attack_farm.host.json("link", "show", "dev", "sw0")[0]["address"]
    assert " 1 received" in attack_farm.lan_ping("172.16.99.2"), "the LAN reaches db"
    assert db_entry(attack_farm) == db_mac

    with GuestShell(attack_farm, "web") as web:
        assert web.run("ping -c1 -W5 172.16.99.254").status == 0, "web reaches its gateway"
        assert web.run("ping -c1 -W5 172.16.99.2").status == 0, "and its neighbour on the subnet"
        # 1. db's address, claimed with web's MAC
        assert web.run(claim(ifname, "172.16.99.2", count=2)).status == 0
        assert db_entry(attack_farm) == db_mac, "the host did not take web's claim to db's address"
        # 2. a frame from another MAC (ICMP to the gateway: the host would answer it)
        assert web.sh(f"pkt send {ifname} {icmp_echo_frame(gateway, random_mac(), '172.16.99.1', '172.16.99.254')} 3"
                      ).strip() == "pkt: sent 3"
        # 6. a router advertisement; 8. a MAC flood
        assert web.sh(f"pkt ra {ifname} {mac}").strip() == "pkt: sent 1"
        assert web.sh(f"pkt macflood {ifname} 200").strip() == "pkt: sent 200"
        # Its own traffic, sent after the attacks on the same path, still gets through: they were seen.
        assert web.run("ping -c1 -W5 172.16.99.254").status == 0

    assert " 1 received" in attack_farm.lan_ping("172.16.99.2"), "the LAN still reaches db"
    assert db_entry(attack_farm) == db_mac
    assert bridge_fdb(attack_farm, port) == {mac}, "the bridge learned no MAC but web's own on its port"
    assert attack_farm.host.json("-6", "route", "show", "default") == [], "the RA gave the host no route"
    assert "2001:db8:bad" not in json.dumps(attack_farm.host.json("-6", "addr", "show"))
