"""Linux bridges (kind: bridge) and the vector transport, on bookworm's 6.1 and sid's vector-only 7.2.

Each guest NIC gets a persistent tap of its own, owned by the guest's user and
enslaved to the bridge; the bridge carries the subnet's gateway; guests use the
vector transport (vecN). Real guests, real bridges, in namespaces made per test.
"""

from __future__ import annotations

import json

import pytest

from farm import Farm, ttl

pytestmark = [pytest.mark.slow]


def test_a_bridge_farm_comes_up_answers_the_lan_and_goes_without_a_trace(farm: Farm, kernel: str) -> None:
    before = farm.host.ip("-d", "-o", "link", "show").stdout
    farm.write(kind="bridge", kernel=kernel)
    applied = farm.cli("apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    links = {x["ifname"]: x for x in farm.host.json("-d", "link", "show")}
    assert links["sw0"]["linkinfo"]["info_kind"] == "bridge"
    for tap in ("web-0", "db-0"):
        assert links[tap]["master"] == "sw0" and links[tap]["linkinfo"]["info_data"]["user"] in ("nobody", 65534)
    assert ttl(farm.lan_ping("172.16.99.1")) == 63, "the LAN reaches web through proxy ARP and forwarding"
    assert ttl(farm.lan_ping("172.16.99.2")) == 63
    assert farm.host.run("ping", "-c1", "-W2", "172.16.99.2").returncode == 0, "the host reaches db on the bridge"
    assert "vec0:transport=tap,ifname=web-0" in " ".join(farm.recorded("guest-web")["argv"])
    assert "umlstate-guest: ready: vec0 172.16.99.1/24" in farm.log("web")
    plan = farm.cli("plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout
    status = json.loads(farm.cli("status", "--json").stdout)
    states = {(r["kind"], r["target"]): r["state"] for r in status["resources"]}
    assert states[("bridge", "sw0")] == "ok" and states[("tap", "web-0")] == "ok" and states[("guest", "db")] == "ok"
    destroyed = farm.cli("destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stderr
    assert farm.host.ip("-d", "-o", "link", "show").stdout == before
    assert not farm.processes()


def test_a_uml_switch_on_a_vector_only_kernel_is_refused_with_the_way_out(farm: Farm, vector_kernel: str) -> None:
    farm.write(kind="uml_switch", kernel=vector_kernel)
    plan = farm.cli("plan")
    assert plan.returncode == 1
    assert "has no daemon transport (CONFIG_UML_NET_DAEMON is not set); Linux 6.16 removed the legacy" in plan.stdout
    assert "(Linux 7.2" in plan.stdout and "kind: bridge" in plan.stdout, plan.stdout
    applied = farm.cli("apply", "--yes")
    # Each guest's own error leaves that guest down, named with the way out; the host's plumbing goes on.
    assert applied.returncode == 1
    for guest in ("web", "db"):
        assert f"failed: guest {guest}: not started" in applied.stderr, applied.stderr
    assert "kind: bridge" in applied.stderr
    assert not [pid for pid, (name, _argv, _ppid) in farm.process_table().items() if name == "linux.uml"]


def test_a_vde_switch_farm_on_a_vector_only_kernel_uses_the_vector_vde_transport(farm: Farm,
                                                                                  vector_kernel: str) -> None:
    farm.write(kind="vde_switch", kernel=vector_kernel)
    applied = farm.cli("apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "vec0:transport=vde,vnl=vde://" in " ".join(farm.recorded("guest-web")["argv"])
    assert ttl(farm.lan_ping("172.16.99.1")) == 63
    assert ttl(farm.lan_ping("172.16.99.2")) == 63
    assert farm.cli("plan", "--detailed-exitcode").returncode == 0
    assert farm.cli("destroy", "--yes").returncode == 0
    assert not farm.processes()


def test_a_nic_added_to_a_running_guest_is_plugged_in_live_and_answers(farm: Farm, kernel: str) -> None:
    farm.write(kind="bridge", kernel=kernel)
    assert farm.cli("apply", "--yes").returncode == 0
    assert ttl(farm.lan_ping("172.16.99.1")) == 63
    before = farm.recorded("guest-web")

    farm.write(kind="bridge", kernel=kernel, web_more_addresses=("172.16.99.11",))
    plan = farm.cli("plan")
    assert "~ guest web" in plan.stdout and "plug vec1 vector tap web-1 live" in plan.stdout, plan.stdout
    assert "-/+ guest web" not in plan.stdout, "a plug, not a replace"
    applied = farm.cli("apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    answer = farm.lan_ping("172.16.99.11")
    assert "ttl=63" in answer, "the new NIC answers the LAN: " + applied.stdout + applied.stderr + farm.log("web")[-300:]
    after = farm.recorded("guest-web")
    assert (after["pid"], after["start"]) == (before["pid"], before["start"]), "the same guest process"
    assert farm.log("web").count("Run /sbin/init") == 1, "no reboot: init ran once"
    assert "umlstate-guest: plugged vec1 172.16.99.11/24" in farm.log("web")
    assert farm.cli("plan", "--detailed-exitcode").returncode == 0, "the record carries the new command line"

    farm.write(kind="bridge", kernel=kernel)  # the NIC goes again: the guest must let it go first
    unplug = farm.cli("plan")
    assert "unplug vec1 live" in unplug.stdout, unplug.stdout
    farm_guest_down = farm.cli("apply", "--yes")
    assert farm_guest_down.returncode == 1 and "ip link set vec1 down" in farm_guest_down.stderr
