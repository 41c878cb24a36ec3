"""Stock Debian guests, as a user brings them: clean stops, apply that waits until they answer.

Images come from scripts/build-debian-guest (mmdebstrap; cached under
/var/cache/umlstate/images): one as the script makes it (ctrl-alt-del powers
off, umlstate-net configures the network), one --stock (Debian's own
ctrl-alt-del: reboot). Real systemd guests on a bridge, in namespaces made
per test.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm import ESCAPE, Farm, Session, debian_image

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="session")
def debian_images() -> Iterator[dict[str, Path]]:
    yield {"umlstate": debian_image(), "stock": debian_image("--stock")}


def topology(farm: Farm, images: dict[str, Path], guests: dict[str, str]) -> None:
    """guests: name -> image kind; on a bridge, each at 172.16.99.<i>."""
    lines = "".join(f"  - {{name: {name}, user: nobody, mem: 256M, disk: {{base: {images[kind]}}}, "
                    f"nics: [{{switch: br0, address: 172.16.99.{i}}}]}}\n"
                    for i, (name, kind) in enumerate(guests.items(), start=1))
    farm.path.write_text(f"""name: {farm.name}
host:
  run_dir: {farm.tmp}/run
  state_dir: {farm.tmp}/state
  tun: {{path: {farm.tmp}/dev/tun, mode: "0660", group: {farm.group}}}
  groups: [{{name: {farm.group}, members: [nobody]}}]
  sysctl: {{net.ipv4.ip_forward: 1}}
subnets:
  - {{name: guests, cidr: 172.16.99.0/24, gateway: 172.16.99.254, proxy_arp: {{uplink: eth0}}}}
switches:
  - {{name: br0, kind: bridge, subnet: guests}}
guests:
{lines}""")


def seconds(what: str, output: str) -> float:
    found = re.search(rf"{what} in ([0-9.]+)s", output)
    assert found, output
    return float(found[1])


def latest_run(farm: Farm, guest: str) -> str:
    log = farm.log(guest)
    return log[log.rfind("--- umlstate: "):]


def test_stock_debian_guests_answer_when_apply_returns_and_stop_without_a_second_boot(
        farm: Farm, debian_images: dict[str, Path]) -> None:
    topology(farm, debian_images, {"deb": "umlstate", "stock": "stock", "deb2": "umlstate"})
    start = time.monotonic()
    applied = farm.cli("apply", "--yes")
    took = time.monotonic() - start
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for guest, address in (("deb", "172.16.99.1"), ("stock", "172.16.99.2"), ("deb2", "172.16.99.3")):
        assert f"guest {guest} ready in" in applied.stderr and f"answering at {address}" in applied.stderr
        assert farm.lan.run("ping", "-c1", "-W3", address, check=False).returncode == 0, \
            f"{guest} answers the moment apply returns (the LAN waits only for proxy ARP's delay)"
    print(f"\napply of 3 Debian guests, empty to all answering: {took:.1f}s")

    # The console: a login prompt on the stock image (root is locked), root's shell on the built one.
    stock = Session(farm, "stock")
    stock.type(b"\r")
    stock.expect(rb"umlguest login: ", seconds=30)
    stock.type(ESCAPE)
    assert stock.close() == 0
    deb = Session(farm, "deb")
    deb.type(b"\r")
    deb.expect(rb"root@umlguest:~# ", seconds=30)
    deb.type(b"tr ' ' '\\n' </proc/cmdline | grep '^umlstate[.]vec0='\r")
    deb.expect(rb"umlstate\.vec0=172\.16\.99\.1/24\r\n")  # the output: the command line says [.]
    deb.type(ESCAPE)
    assert deb.close() == 0

    stopped = farm.run("stop", str(farm.path), "stock")
    assert stopped.returncode == 0, stopped.stderr
    assert "guest stock stopped by cad, then its reboot in" in stopped.stderr
    assert "ctrl-alt-del.target" in stopped.stderr, "the one-line change that saves the detour"
    run = latest_run(farm, "stock")
    assert "reboot: Restarting system" in run and "systemd-shutdown[1]: Rebooting." in run
    assert run.count("Linux version") <= 1, "no second boot"
    print(f"stop of the stock Debian guest (cad reboots it): {seconds('stopped by cad, then its reboot', stopped.stderr)}s")

    started = farm.run("start", str(farm.path), "stock")
    assert started.returncode == 0, started.stderr
    again = latest_run(farm, "stock")
    assert "recovery required" not in again and "uncleanly" not in again, "its file system was left clean"

    stopped = farm.run("stop", str(farm.path), "deb")
    assert stopped.returncode == 0, stopped.stderr
    assert "guest deb stopped by cad in" in stopped.stderr and "note:" not in stopped.stderr
    print(f"stop of the umlstate-image Debian guest (cad powers off): {seconds('stopped by cad', stopped.stderr)}s")
    farm.run("start", str(farm.path), "deb")

    start = time.monotonic()
    destroyed = farm.cli("destroy", "--yes")
    took = time.monotonic() - start
    assert destroyed.returncode == 0, destroyed.stderr
    stops = [float(x) for x in re.findall(r"stopped by [a-z ,]+ in ([0-9.]+)s", destroyed.stderr)]
    assert len(stops) == 3
    assert took < sum(stops), f"the three stops ran together: {took:.1f}s for stops of {stops}"
    print(f"destroy of 3 Debian guests: {took:.1f}s (their stops: {stops})")
