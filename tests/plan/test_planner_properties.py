"""Properties of the planner over random topologies and random hosts.

For any topology and any observed state: planning never raises, is
deterministic, and once its actions are simulated, planning again finds
nothing to do (conflicted resources are left alone, so they add no action).
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from umlstate.model import rules
from umlstate.model.guest import Disk, Guest, Nic
from umlstate.model.snapshot import HostGroup, Link, Records, Snapshot, TunNode
from umlstate.model.topology import Group, Host, ProxyArp, Subnet, Tap, Topology, TunDevice
from umlstate.plan.planner import plan

TAP_NAMES = ["uml0", "uml1", "uml2", "uml3"]
USERS = {"root": 0, "dupont": 1000}
SYSCTLS = ["net.ipv4.ip_forward", "net.ipv4.conf.all.proxy_arp"]
LINK_GROUP = 256  # any number; the topology's own is what matters


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    n_subnets = draw(st.integers(0, 3))
    subnets = tuple(
        Subnet(name=f"s{i}", cidr=ipaddress.IPv4Network(f"10.{i}.0.0/24"),
               gateway=draw(st.sampled_from([None, ipaddress.IPv4Address(f"10.{i}.0.254")])),
               proxy_arp=draw(st.sampled_from([None, ProxyArp(uplink="eth0")])))
        for i in range(n_subnets))
    tap_names = draw(st.lists(st.sampled_from(TAP_NAMES), unique=True, max_size=4))
    free_subnets = [s.name for s in subnets]
    taps = []
    for name in tap_names:
        carried = draw(st.integers(0, 2))  # no subnet, one, or a list of them
        names = tuple(free_subnets.pop() for _ in range(min(carried, len(free_subnets))))
        subnet: str | tuple[str, ...] | None = names if len(names) > 1 else names[0] if names else None
        taps.append(Tap(name=name, owner=draw(st.sampled_from(["root", "dupont", "4242"])),
                        group=draw(st.sampled_from([None, "umlusers", "77"])), subnet=subnet))
    guests = []
    for g in range(draw(st.integers(0, 3))):
        nics = []
        for tap in taps:
            if tap.subnet is not None and draw(st.booleans()):  # an address on each of its subnets
                ips = [ipaddress.IPv4Address(f"10.{int(n[1:])}.0.{g + 1}") for n in tap.subnet_names]
                nics.append(Nic(tap=tap.name, address=ips[0], addresses=tuple(ips[1:])))
        guests.append(Guest(name=f"g{g}", user="dupont", mem="64M", disk=Disk(image=f"/srv/g{g}.img"),
                            nics=tuple(nics)))
    host = Host(
        run_dir="/run/umlstate/p", state_dir="/var/lib/umlstate/p",
        tun=draw(st.sampled_from([None, TunDevice(path="/dev/net/tun", mode="0660", group="umlusers")])),
        groups=tuple(draw(st.sampled_from([(), (Group(name="umlusers", members=("dupont",)),)]))),
        sysctl={k: draw(st.sampled_from(["0", "1"])) for k in draw(st.lists(st.sampled_from(SYSCTLS), unique=True))},
    )
    topology = Topology(name="p", host=host, subnets=subnets, taps=tuple(taps), guests=tuple(guests))
    assert rules.check(topology) == [], rules.check(topology)
    return topology


@st.composite
def snapshots(draw: st.DrawFn, topology: Topology) -> Snapshot:
    links: dict[str, Link] = {}
    if draw(st.sampled_from([True, True, True, False])):
        links["eth0"] = Link("eth0", kind="veth", up=True)
    for name in draw(st.lists(st.sampled_from([*TAP_NAMES, "uml9"]), unique=True)):
        alias = draw(st.sampled_from([None, topology.alias, "umlstate:other", "by hand"]))
        links[name] = Link(
            name, kind=draw(st.sampled_from(["tun", "tun", "veth"])), up=draw(st.booleans()), alias=alias,
            group=draw(st.sampled_from([0, topology.link_group])),
            tun_type=draw(st.sampled_from(["tap", "tap", "tun"])), owner=draw(st.sampled_from([None, 0, 1000, 5])),
            tun_group=draw(st.sampled_from([None, 77, 1001])), persist=draw(st.booleans()), pi=draw(st.booleans()))
    addresses = {
        name: frozenset(draw(st.lists(st.sampled_from(
            [ipaddress.IPv4Interface(a) for a in ("10.0.0.254/24", "10.1.0.254/24", "10.0.0.254/16", "192.0.2.1/24")]),
            unique=True, max_size=2)))
        for name in links}
    candidates = [("eth0", ipaddress.IPv4Address(f"10.{i}.0.{g}")) for i in range(3) for g in range(1, 4)]
    proxies = frozenset(draw(st.lists(st.sampled_from(candidates), unique=True, max_size=4))) if "eth0" in links \
        else frozenset()
    owned_proxies = frozenset((d, str(a)) for d, a in draw(st.lists(st.sampled_from(candidates), unique=True,
                                                                     max_size=4)))
    group = draw(st.sampled_from([None, HostGroup("umlusers", 1001, frozenset()),
                                  HostGroup("umlusers", 1001, frozenset({"dupont"})),
                                  HostGroup("umlusers", 1001, frozenset({"dupont"}))]))
    exists = draw(st.booleans())
    tun = TunNode("/dev/net/tun", exists=exists, is_tun=exists and draw(st.booleans()),
                  mode=draw(st.sampled_from([0o600, 0o660, 0o666])) if exists else None,
                  gid=draw(st.sampled_from([0, 1001])) if exists else None)
    records = Records(
        sysctl_originals={k: "0" for k in draw(st.lists(st.sampled_from(SYSCTLS), unique=True))},
        proxies=owned_proxies,
        groups_created=frozenset(draw(st.sampled_from([(), ("umlusers",)]))),
        members_added=frozenset(draw(st.sampled_from([(), (("umlusers", "dupont"),)]))),
        tun_created=draw(st.booleans()),
        pending_taps=frozenset(draw(st.lists(st.sampled_from(TAP_NAMES), unique=True, max_size=2))),
    )
    return Snapshot(netns="p", users=dict(USERS), groups={"umlusers": group}, tun=tun,
                    sysctls={k: draw(st.sampled_from(["0", "1"])) for k in SYSCTLS},
                    links=links, addresses=addresses, proxies=proxies, records=records)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.booleans(), st.booleans())
def test_simulated_apply_converges(data: st.DataObject, adopt: bool, destroy: bool) -> None:
    topology = data.draw(topologies())
    observed = data.draw(snapshots(topology))
    first = plan(topology, observed, adopt=adopt, destroy=destroy)
    assert first == plan(topology, observed, adopt=adopt, destroy=destroy), "plans must be deterministic"
    if first.blockers:
        return
    simulated = observed
    for action in first.actions:
        simulated = action.simulate(simulated)
    second = plan(topology, simulated, adopt=adopt, destroy=destroy)
    assert second.actions == (), f"first plan:\n{first.actions}\nsecond plan:\n{second.actions}"
