"""Linux bridges (kind: bridge): the form of the article's switch that every kernel reaches.

Each guest NIC gets a persistent tap of its own, owned by the guest's user and
enslaved to the bridge; the bridge carries the subnet's gateway; guests use the
vector transport (vecN). Real guests, real bridge, in namespaces made per test.
"""

from __future__ import annotations

import json

import pytest

from farm import Farm, ttl

pytestmark = [pytest.mark.slow]


def test_a_bridge_farm_comes_up_answers_the_lan_and_goes_without_a_trace(farm: Farm) -> None:
    before = farm.host.ip("-d", "-o", "link", "show").stdout
    farm.write(kind="bridge")
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
    plan = farm.cli("plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout
    status = json.loads(farm.cli("status", "--json").stdout)
    kinds = {(r["kind"], r["target"]): r["state"] for r in status["resources"]}
    assert kinds[("bridge", "sw0")] == "ok" and kinds[("tap", "web-0")] == "ok"
    destroyed = farm.cli("destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stderr
    assert farm.host.ip("-d", "-o", "link", "show").stdout == before
    assert not farm.processes()
