"""Labs (issue 20): guests that route for each other, told who they are through a seed disk.

Kathara's static-routing lab in umlstate's words, on real guests in namespaces: the LAN reaches a PC
behind two guest routers (its TTL shows the hops), each router gets its forwarding sysctl, its routes,
a file and a startup script from its seed disk (vfat, cloud-init's NoCloud layout), and a guest on a
subnet the host is not on is ready from its own report.
"""

from __future__ import annotations

import json
import pwd
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from umlstate.guestimage import GUEST_MODULES, UML_MODULES, build
from umlstate.model.guest import Check
from umlstate.plan.checks import check_id

from farm import Farm, debian_image, ttl

pytestmark = [pytest.mark.slow]

HOST = """\
name: {name}
host:
  run_dir: {tmp}/run
  state_dir: {tmp}/state
  tun: {{path: {tmp}/dev/tun, mode: "0660", group: {group}}}
  groups:
    - {{name: {group}, members: [nobody]}}
  sysctl:
    net.ipv4.ip_forward: 1
"""  # every lab's host: its folders in the test's, the tun node, forwarding
LAB = HOST + """\
  routes:
    - {{to: 10.0.34.0/24, via: 10.0.1.1}}
subnets:
  - {{name: a, cidr: 10.0.1.0/24, gateway: 10.0.1.254}}
  - {{name: core, cidr: 10.0.12.0/30}}
  - {{name: b, cidr: 10.0.34.0/24}}
  - {{name: island, cidr: 10.0.99.0/24}}
switches:
  - {{name: bra, kind: bridge, subnet: a}}
  - {{name: brc, kind: bridge, subnet: core}}
  - {{name: brb, kind: bridge, subnet: b}}
  - {{name: bri, kind: bridge, subnet: island}}
guests:
  - name: r1
    user: nobody
    mem: 96M
    disk: {{base: {image}}}
    hostname: router-one
    sysctl: {{net.ipv4.ip_forward: 1}}
    routes: [{{to: 10.0.34.0/24, via: 10.0.12.2}}]
    files: [{{path: /etc/lab/r1.conf, content: "router r1 of {name}\\n"}}]
    startup: |
      echo "r1 says: $(cat /etc/lab/r1.conf) as $(hostname)"
    nics:
      - {{switch: bra, address: 10.0.1.1, allow_sources: [10.0.12.0/30, 10.0.34.0/24]}}
      - {{switch: brc, address: 10.0.12.1, allow_sources: [172.16.0.0/16, 10.0.1.0/24]}}
  - name: r2
    user: nobody
    mem: 96M
    disk: {{base: {image}}}
    sysctl: {{net.ipv4.ip_forward: 1}}
    routes: [{{to: default, via: 10.0.12.1}}]
    nics:
      - {{switch: brc, address: 10.0.12.2, allow_sources: [10.0.34.0/24]}}
      - {{switch: brb, address: 10.0.34.1, allow_sources: [172.16.0.0/16, 10.0.1.0/24, 10.0.12.0/30]}}
  - name: pc
    user: nobody
    mem: 96M
    disk: {{base: {image}}}
    routes: [{{to: default, via: 10.0.34.1}}]
    nics: [{{switch: brb, address: 10.0.34.2}}]
  - name: lonely
    user: nobody
    mem: 96M
    disk: {{base: {image}}}
    hostname: lonely
    startup: |  # a hostile guest forges a result of pc's check in its own log
      echo "umlstate-check: boot {forged} failed 1700000000 forged by lonely" > /dev/console
    nics: [{{switch: bri, address: 10.0.99.1}}]
checks:
  - {{from: pc, ping: r1}}
  - {{from: pc, ping: 10.0.99.1, expect: fail}}
  - {{from: lonely, ping: pc}}
"""


def check_rows(farm: Farm, until: Callable[[dict[str, dict[str, str]]], bool],
               count: int = 3) -> dict[str, dict[str, str]]:
    """status's check rows by target, once ``until`` holds (the guests run their checks as they boot)."""
    deadline = time.monotonic() + 90
    while True:
        status = json.loads(farm.cli("status", "--json").stdout)
        rows = {r["target"]: r for r in status["resources"] if r["kind"] == "check"}
        if (len(rows) == count and all(r["state"] != "missing" for r in rows.values()) and until(rows)) \
                or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def logged(farm: Farm, guest: str, line: str, timeout: float = 90) -> str:
    """``guest``'s console log once it holds ``line`` (or at ``timeout``): apply returns when a guest answers,
    and a guest's startup runs after its network is up, so its output may come a moment later."""
    deadline = time.monotonic() + timeout
    while line not in (text := farm.log(guest)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return text


def checks_pass_in_sync_then_destroyed(farm: Farm, count: int) -> None:
    """Every check of the lab passes (the guests run them as they boot), a plan finds nothing left, and
    destroy succeeds."""
    rows = check_rows(farm, until=lambda r: all(x["state"] == "ok" for x in r.values()), count=count)
    assert all(r["state"] == "ok" for r in rows.values()), rows
    plan = farm.cli("plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    destroyed = farm.cli("destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr


def write_lab(farm: Farm, kernel: str = "linux.uml", lab: str = LAB, *, debian: bool = False) -> None:
    """The lab, its guests booting ``kernel`` from an image that carries that kernel's modules: umlstate's
    busybox image, or with ``debian`` a stock Debian one from scripts/build-debian-guest (at 256M)."""
    fetched = Path(kernel).parent / "modules" if "/" in kernel else None  # scripts/fetch-vector-kernel keeps them
    if fetched is not None and not fetched.is_dir():
        pytest.skip(f"{kernel} was fetched without its modules: its guests cannot read a seed disk")
    if debian:
        image = debian_image("--modules", UML_MODULES, *(("--modules", str(fetched)) if fetched else ()))
    elif fetched is not None:
        image = build(farm.tmp / "lab.img", modules=(Path(UML_MODULES), fetched))
    else:
        image = farm.image
    forged = check_id(Check.model_validate({"from": "pc", "ping": "r1"}))
    text = lab.format(name=farm.name, tmp=farm.tmp, group=farm.group, image=image, forged=forged)
    if debian:
        text = text.replace("    mem: 96M\n", "    mem: 256M\n")
    farm.path.write_text(text.replace("    user: nobody\n", f"    user: nobody\n    kernel: {kernel}\n"))


STARTUP_SAYS = {False: "umlstate-guest: startup: ", True: "umlstate-net: startup: "}  # busybox's init, Debian's


@pytest.mark.parametrize("debian", [False, True], ids=["busybox", "debian"])
def test_the_static_routing_lab_comes_up_from_empty_and_the_lan_reaches_the_far_pc(farm: Farm, kernel: str,
                                                                                   debian: bool) -> None:
    write_lab(farm, kernel, debian=debian)
    applied = farm.cli("apply", "--yes")
    said = applied.stdout + applied.stderr
    assert applied.returncode == 0, said
    # A subnet without the host: lonely is ready from its own report, not from an answer the host cannot get.
    assert "umlstate: network up" in farm.log("lonely")
    farm.lan.ip("route", "add", "10.0.0.0/8", "via", "172.16.0.1")
    # The LAN's ping crosses the host, r1 and r2: 64 - 3 on the way back.
    assert ttl(farm.lan_ping("10.0.34.2", seconds=60)) == 61, said + farm.log("r2")[-800:]
    assert ttl(farm.lan_ping("10.0.1.1")) == 63
    routes = farm.host.ip("route", "show", "proto", "186").stdout
    assert "10.0.34.0/24 via 10.0.1.1" in routes, routes
    said_r1 = f"{STARTUP_SAYS[debian]}r1 says: router r1 of {farm.name} as router-one"
    r1 = logged(farm, "r1", said_r1)
    assert said_r1 in r1, r1[-1500:]
    assert "ubd1r=" in " ".join(farm.recorded("guest-r1")["argv"])
    seed = (farm.tmp / "state" / "seeds" / "r1.img").stat()
    assert (seed.st_uid, seed.st_gid, seed.st_mode & 0o777) == (pwd.getpwnam("nobody").pw_uid, 0, 0o400), \
        "the guest's user alone reads its seed"
    assert "umlstate.gw=" not in " ".join(farm.recorded("guest-pc")["argv"]), "its own default route replaces it"
    plan = farm.cli("plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr

    # Checks: each guest ran its own once its network was up; status shows each one's last result.
    rows = check_rows(farm, until=lambda r: r["lonely ping pc"]["state"] == "failed")
    assert rows["pc ping r1"]["state"] == "ok" and "passed at" in rows["pc ping r1"]["detail"], rows
    assert "forged" in logged(farm, "lonely", "forged"), "lonely did print its forgery; it counts for nothing"
    assert rows["pc ping 10.0.99.1 (expect fail)"]["state"] == "ok", rows
    assert "ping 10.0.34.2: no answer, expected pass" in rows["lonely ping pc"]["detail"], rows
    assert farm.cli("status").returncode == 2, "a failing check is not ok"
    checked = farm.cli("check")
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "ok         pc ping r1: ping 10.0.1.1: answered, expected pass" in checked.stdout, checked.stdout
    assert "FAILED     lonely ping pc" in checked.stdout and "2 of 3 check(s)" in checked.stdout, checked.stdout

    # A change reaches the running guest at its next boot; the plan says so, and nothing restarts.
    farm.path.write_text(farm.path.read_text().replace("router r1 of", "router one of"))
    changed = farm.cli("plan")
    assert "~ guest r1" in changed.stdout and "reads it at its next boot" in changed.stdout, changed.stdout
    assert "-/+ guest" not in changed.stdout
    assert farm.cli("apply", "--yes").returncode == 0
    assert farm.cli("plan", "--detailed-exitcode").returncode == 0

    destroyed = farm.cli("destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert farm.host.ip("route", "show", "proto", "186").stdout.strip() == ""
    assert not list((farm.tmp / "state" / "seeds").glob("*.img"))
    assert not farm.processes()


TWO_SUBNETS = HOST + """\
subnets:
  - {{name: a, cidr: 10.0.1.0/24, gateway: 10.0.1.254}}
  - {{name: b, cidr: 10.0.2.0/24, gateway: 10.0.2.254}}
switches:
  - {{name: br, kind: bridge, subnet: [a, b]}}
guests:
  - name: r1
    user: nobody
    mem: 96M
    disk: {{base: {image}}}
    startup: |
      echo "r1 has on lan0: $(ip -4 -o addr show dev lan0 | awk '{{print $4}}' | tr '\\n' ' ')"
    nics:
      - {{switch: br, name: lan0, addresses: [10.0.1.1, 10.0.2.1]}}
  - name: pc
    user: nobody
    mem: 96M
    disk: {{base: {image}}}
    nics: [{{switch: br, address: 10.0.2.2}}]
checks:
  - {{from: pc, ping: 10.0.2.1}}
  - {{from: pc, ping: 10.0.1.1}}
"""


def test_a_bridge_carries_two_subnets_and_a_named_nic_holds_an_address_on_each(farm: Farm, kernel: str) -> None:
    """Kathara's several subnets on one collision domain: the bridge holds both gateways; r1's NIC is named
    lan0 and holds an address on each (the first from its command line, the second from its seed)."""
    write_lab(farm, kernel, TWO_SUBNETS)
    applied = farm.cli("apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    gateways = farm.host.ip("-4", "-o", "addr", "show", "dev", "br").stdout
    assert "10.0.1.254/24" in gateways and "10.0.2.254/24" in gateways, gateways
    said = "umlstate-guest: startup: r1 has on lan0: 10.0.1.1/24 10.0.2.1/24"
    assert said in logged(farm, "r1", said), farm.log("r1")[-1500:]
    farm.lan.ip("route", "add", "10.0.0.0/8", "via", "172.16.0.1")
    assert ttl(farm.lan_ping("10.0.2.1", seconds=60)) == 63, farm.log("r1")[-1500:]
    assert ttl(farm.lan_ping("10.0.1.1")) == 63
    # pc reaches r1's address on its own subnet directly, and the other through the host's gateway.
    checks_pass_in_sync_then_destroyed(farm, count=2)
    assert not farm.processes()


IPV6 = HOST + """\
    net.ipv6.conf.all.forwarding: 1
subnets:
  - {{name: a, cidr: 172.16.99.0/24, gateway: 172.16.99.254, proxy_arp: {{uplink: eth0}}}}
  - {{name: a6, cidr: "2001:db8:0:1::100/120", gateway: "2001:db8:0:1::1fe", proxy_ndp: {{uplink: eth0}}}}
  - {{name: b6, cidr: "2001:db8:0:1::200/120", gateway: "2001:db8:0:1::2fe", proxy_ndp: {{uplink: eth0}}}}
switches:
  - {{name: br, kind: bridge, subnet: [a, a6]}}
  - {{name: br6, kind: bridge, subnet: b6}}
guests:
  - name: dual
    user: nobody
    mem: 96M
    disk: {{base: {image}}}
    nics: [{{switch: br, addresses: [172.16.99.11, "2001:db8:0:1::111"]}}]
  - name: six
    user: nobody
    mem: 96M
    disk: {{base: {image}}}
    nics: [{{switch: br, address: "2001:db8:0:1::122"}}]
  - name: only6
    user: nobody
    mem: 96M
    disk: {{base: {image}}}
    nics: [{{switch: br6, address: "2001:db8:0:1::222"}}]
checks:
  - {{from: six, ping: "2001:db8:0:1::111"}}
  - {{from: dual, ping: six}}
"""


def test_ipv6_guests_are_reached_from_the_lan_through_proxy_ndp(farm: Farm, kernel: str) -> None:
    """A bridge with an IPv4 and an IPv6 subnet (inside the LAN's /64, as proxy ARP's are inside its /16): the
    host answers neighbour solicitations on eth0 for the guests, and routes to them. Debian's 6.1 UML kernel
    has IPv6 as a module, which the image carries; sid's 7.2 has it built in. ``six`` has IPv6 alone: it is
    ready from its own report, and its default route is its subnet's gateway, from its seed; ``only6`` is on a
    bridge with an IPv6 subnet alone, whose port takes no IPv4."""
    write_lab(farm, kernel, IPV6)
    farm.host.ip("addr", "add", "2001:db8:0:1::1/64", "dev", "eth0", "nodad")
    farm.lan.ip("addr", "add", "2001:db8:0:1::2/64", "dev", "lan0", "nodad")
    applied = farm.cli("apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert farm.host.run("sysctl", "-n", "net.ipv6.conf.eth0.proxy_ndp").stdout.strip() == "1"
    proxies = farm.host.ip("-6", "neigh", "show", "proxy").stdout
    assert "2001:db8:0:1::111 dev eth0" in proxies and "2001:db8:0:1::122 dev eth0" in proxies, proxies
    for address in ("2001:db8:0:1::122", "2001:db8:0:1::111", "172.16.99.11", "2001:db8:0:1::222"):
        assert ttl(farm.lan_ping(address, seconds=60)) == 63, address + farm.log("six")[-1500:]
    checks_pass_in_sync_then_destroyed(farm, count=2)
    assert farm.host.ip("-6", "neigh", "show", "proxy").stdout.strip() == ""
    assert farm.host.run("sysctl", "-n", "net.ipv6.conf.eth0.proxy_ndp").stdout.strip() == "0", "restored"
    assert not farm.processes()


def test_a_guest_whose_image_lacks_its_kernels_ipv6_module_is_a_warning(farm: Farm) -> None:
    """Debian's 6.1 UML kernel builds IPv6 as a module: an image with the seed's vfat modules but not ipv6.ko
    boots a dual-stack guest on its IPv4 address; the guest says its kernel has no IPv6, and plan warns."""
    versions = sorted(Path(UML_MODULES).glob("*/kernel")) if Path(UML_MODULES).is_dir() else []
    if not versions:
        pytest.skip(f"no UML kernel modules in {UML_MODULES}: this kernel has IPv6 built in or no modules")
    version = versions[-1].parent
    kept = farm.tmp / "modules" / version.name
    for module in GUEST_MODULES:
        if "ipv6" not in module and (version / module).is_file():
            (kept / module).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(version / module, kept / module)
    image = build(farm.tmp / "no-ipv6.img", modules=(farm.tmp / "modules",))
    farm.path.write_text(IPV6.format(name=farm.name, tmp=farm.tmp, group=farm.group, image=image)
                         .split("  - name: six")[0] + "checks: []\n")
    applied = farm.cli("apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    said = f"umlstate: no IPv6 in kernel {version.name}"
    assert said in logged(farm, "dual", said), farm.log("dual")[-1500:]
    planned = farm.cli("plan", "--detailed-exitcode")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert f"guest dual says its kernel ({version.name}) has no IPv6" in planned.stdout + planned.stderr, \
        planned.stdout + planned.stderr
    assert "2001:db8:0:1::111 is not on it" in planned.stdout + planned.stderr
    destroyed = farm.cli("destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr


DEBIAN = HOST + """\
    net.ipv6.conf.all.forwarding: 1
  routes:
    - {{to: 10.0.34.0/24, via: 10.0.1.1}}
subnets:
  - {{name: a, cidr: 10.0.1.0/24, gateway: 10.0.1.254}}
  - {{name: a6, cidr: "2001:db8:0:1::100/120", gateway: "2001:db8:0:1::1fe", proxy_ndp: {{uplink: eth0}}}}
  - {{name: b, cidr: 10.0.34.0/24}}
switches:
  - {{name: bra, kind: bridge, subnet: [a, a6]}}
  - {{name: brb, kind: bridge, subnet: b}}
guests:
  - name: r1
    user: nobody
    mem: 256M
    disk: {{base: {image}}}
    hostname: deb-router
    sysctl: {{net.ipv4.ip_forward: 1}}
    files: [{{path: /etc/lab/r1.conf, content: "router r1 of {name}\\n"}}]
    startup: |
      echo "r1 says: $(cat /etc/lab/r1.conf) as $(hostname), on lan0: $(ip -o addr show dev lan0 scope global | awk '{{print $4}}' | tr '\\n' ' ')"
    nics:
      - {{switch: bra, name: lan0, addresses: [10.0.1.1, "2001:db8:0:1::111"], allow_sources: [10.0.34.0/24]}}
      - {{switch: brb, address: 10.0.34.1, allow_sources: [172.16.0.0/16, 10.0.1.0/24]}}
  - name: pc
    user: nobody
    mem: 256M
    disk: {{base: {image}}}
    routes: [{{to: default, via: 10.0.34.1}}]
    nics: [{{switch: brb, address: 10.0.34.2}}]
checks:
  - {{from: pc, ping: r1}}
  - {{from: pc, ping: 10.0.1.254}}
  - {{from: pc, ping: "2001:db8:0:1::111"}}
"""


def test_a_debian_lab_reads_its_seed_and_routes_for_its_neighbour(farm: Farm, kernel: str) -> None:
    """Stock Debian guests (systemd) from scripts/build-debian-guest, whose umlstate-net reads the seed disk:
    r1 is a router with a hostname, a file and a startup script, its first NIC named lan0 with an IPv4 and an
    IPv6 address (the image carries the kernel's IPv6 and vfat modules, loaded by the kernel through the image's
    own modprobe); pc sits on a subnet without the host, behind r1. The LAN reaches pc through the host and r1,
    and r1's IPv6 address through proxy NDP; pc's checks pass, and the one it cannot pass (it has no IPv6)
    fails, at boot and on `umlstate check`."""
    write_lab(farm, kernel, DEBIAN, debian=True)
    farm.host.ip("addr", "add", "2001:db8:0:1::1/64", "dev", "eth0", "nodad")
    farm.lan.ip("addr", "add", "2001:db8:0:1::2/64", "dev", "lan0", "nodad")
    applied = farm.cli("apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr + farm.log("r1")[-3000:]
    said_r1 = (f"{STARTUP_SAYS[True]}r1 says: router r1 of {farm.name} as deb-router, "
               "on lan0: 10.0.1.1/24 2001:db8:0:1::111/120")
    assert said_r1 in logged(farm, "r1", said_r1), farm.log("r1")[-3000:]
    farm.lan.ip("route", "add", "10.0.0.0/8", "via", "172.16.0.1")
    assert ttl(farm.lan_ping("10.0.34.2", seconds=60)) == 62, farm.log("pc")[-3000:]
    assert ttl(farm.lan_ping("2001:db8:0:1::111", seconds=60)) == 63, farm.log("r1")[-3000:]

    rows = check_rows(farm, until=lambda r: all(x["state"] in ("ok", "failed") for x in r.values()))
    assert rows["pc ping r1"]["state"] == "ok", rows
    assert rows["pc ping 10.0.1.254"]["state"] == "ok", rows
    assert rows["pc ping 2001:db8:0:1::111"]["state"] == "failed", rows
    assert "no answer, expected pass" in rows["pc ping 2001:db8:0:1::111"]["detail"], rows
    checked = farm.cli("check")
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "ok         pc ping 10.0.1.254: ping 10.0.1.254: answered, expected pass" in checked.stdout, checked.stdout
    assert "2 of 3 check(s)" in checked.stdout, checked.stdout
    planned = farm.cli("plan", "--detailed-exitcode")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "no IPv6" not in planned.stdout + planned.stderr, "the image carries the kernel's ipv6 module"

    destroyed = farm.cli("destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert farm.host.ip("-6", "neigh", "show", "proxy").stdout.strip() == ""
    assert not farm.processes()


def test_a_route_through_no_neighbour_and_a_file_without_content_are_refused_where_they_are_written(
        farm: Farm) -> None:
    write_lab(farm)
    text = farm.path.read_text().replace("via: 10.0.12.2}]", "via: 10.9.9.9}]")
    text = text.replace('content: "router r1 of', 'from: nowhere.conf, mode: "0600"}]\n    #')
    farm.path.write_text(text)
    checked = farm.cli("validate")
    assert checked.returncode == 65
    out = json.dumps(checked.stdout + checked.stderr)
    assert "route to 10.0.34.0/24 goes via 10.9.9.9, which is on none of its NICs' subnets" in out, out
    assert "nowhere.conf" in out and "cannot read" in out, out


KATHARA = {  # Kathara's static-routing lab (main-labs/basic-topics/static-routing), its routes uncommented
    "lab.conf": 'LAB_DESCRIPTION="static routes"\n\nr1[0]="A"\nr1[1]="B"\nr1[image]="kathara/core"\n\n'
                'r2[0]="C"\nr2[1]="B"\nr2[image]="kathara/core"\n\npc1[0]="A"\npc1[image]="kathara/core"\n\n'
                'pc2[0]="C"\npc2[image]="kathara/core"\n',
    "r1.startup": "ifconfig eth0 195.11.14.1/24 up\nifconfig eth1 100.0.0.9/30 up\n"
                  "route add -net 200.1.1.0/24 gw 100.0.0.10 dev eth1\n",
    "r2.startup": "ifconfig eth0 200.1.1.1/24 up\nifconfig eth1 100.0.0.10/30 up\n"
                  "route add -net 195.11.14.0/24 gw 100.0.0.9 dev eth1\n",
    "pc1.startup": "ifconfig eth0 195.11.14.5/24 up\nroute add default gw 195.11.14.1 dev eth0\n",
    "pc2.startup": "ip address add 200.1.1.7/24 dev eth0\nip route add default via 200.1.1.1 dev eth0\n",
    "r1/etc/lab/motd": "r1 of the static-routing lab\n",
}


def test_katharas_static_routing_lab_imports_and_runs(farm: Farm) -> None:
    lab = farm.tmp / "kathara-static-routing"
    for name, text in KATHARA.items():
        (lab / name).parent.mkdir(parents=True, exist_ok=True)
        (lab / name).write_text(text)
    out = farm.tmp / "imported.yaml"
    imported = farm.run("import", "kathara", str(lab), "--image", str(farm.image), "--out", str(out),
                        "--host-on", "A=195.11.14.254")
    assert imported.returncode == 0, imported.stdout + imported.stderr
    topology = yaml.safe_load(out.read_text())
    assert [g["name"] for g in topology["guests"]] == ["pc1", "pc2", "r1", "r2"]
    r1 = topology["guests"][2]
    assert r1["routes"] == [{"to": "200.1.1.0/24", "via": "100.0.0.10"}]
    assert r1["files"] == [{"path": "/etc/lab/motd", "from": "kathara-static-routing/r1/etc/lab/motd"}]
    # Where this farm keeps its state, and the checks a student would write.
    topology["name"] = farm.name
    topology["host"] |= {"run_dir": f"{farm.tmp}/run", "state_dir": f"{farm.tmp}/state",
                         "tun": {"path": f"{farm.tmp}/dev/tun", "mode": "0660", "group": farm.group},
                         "groups": [{"name": farm.group, "members": ["nobody"]}]}
    topology["checks"] = [{"from": "pc1", "ping": "pc2"}, {"from": "pc2", "ping": "pc1"}]
    for guest in topology["guests"]:
        guest["mem"] = "96M"
    out.write_text(yaml.safe_dump(topology, sort_keys=False))
    applied = farm.run("apply", str(out), "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert farm.host.run("ping", "-c1", "-W2", "195.11.14.5").returncode == 0, "the host is on collision domain A"
    deadline = time.monotonic() + 90
    while (checked := farm.run("check", str(out))).returncode != 0 and time.monotonic() < deadline:
        time.sleep(1)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 of 2 check(s) went as expected" in checked.stdout
    assert farm.run("destroy", str(out), "--yes").returncode == 0
