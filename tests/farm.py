"""The farm: a host and a LAN namespace, a real uml_switch and real guests as nobody.

Shared by the end-to-end and reliability tests (registered in conftest as a
pytest plugin). A "host" namespace whose eth0 is a veth to a "lan" namespace
in the same /16 as the guests' /24, like the seed's 172.16.0.0/16 LAN and
172.16.99.0/24 guests; everything is made per test and removed afterwards,
also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import pwd
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from umlstate.guestimage import build
from umlstate.host import mconsole
from umlstate.host.mconsole import MconsoleError

from conftest import ROOT, Netns, host_and_lan, remove_cgroups, sh, umlstate

TOPOLOGY = """\
name: {name}
host:
  run_dir: {tmp}/run
  state_dir: {tmp}/state
  tun: {{path: {tmp}/dev/tun, mode: "0660", group: {group}}}
  groups:
    - {{name: {group}, members: [nobody]}}
  sysctl:
    net.ipv4.ip_forward: 1
subnets:
  - name: guests
    cidr: 172.16.99.0/24
    gateway: 172.16.99.254
    proxy_arp: {{uplink: eth0}}
{network}guests:
  - name: web
    user: nobody
    kernel: {kernel}
    mem: {web_mem}
    disk: {{base: {image}}}
    args: [umlstate.ping=172.16.99.2]
    nics: [{{switch: sw0, address: 172.16.99.1}}{web_more_nics}]
  - name: db
    user: nobody
    kernel: {kernel}
    mem: 96M
    disk: {{base: {image}}}
    nics: [{{switch: sw0, address: 172.16.99.2}}]
"""
# The seed's form (a switch process on a tap), and the form every kernel reaches (a Linux bridge).
SWITCH_ON_TAP = """\
taps:
  - {{name: uml0, owner: nobody, group: {group}, subnet: guests}}
switches:
  - {{name: sw0, kind: {kind}, tap: uml0, user: nobody}}
"""
BRIDGE = """\
switches:
  - {name: sw0, kind: bridge, subnet: guests}
"""


KERNELS = {"debian-6.1": "linux.uml"}  # and "sid-7.2", fetched once per session: vector_kernel


@pytest.fixture(scope="session")
def vector_kernel() -> str:
    """Debian sid's vector-only UML kernel (Linux 7.2), made to run here: scripts/fetch-vector-kernel.

    Cached outside the checkout (/var/cache/umlstate/kernels), so only the first run downloads it.
    Skips loudly when the download is impossible; fails when the kernel does not work.
    """
    fetched = subprocess.run([str(ROOT / "scripts" / "fetch-vector-kernel")], capture_output=True, text=True,
                             check=False, timeout=600)
    if fetched.returncode == 2:
        pytest.skip(f"NO VECTOR-ONLY KERNEL: cannot download Debian sid's user-mode-linux: {fetched.stderr.strip()}")
    assert fetched.returncode == 0, fetched.stderr
    return fetched.stdout.strip()


def debian_image(*options: str) -> Path:
    """A Debian image from scripts/build-debian-guest (mmdebstrap; cached under /var/cache/umlstate/images, so
    only a change to the script, its pieces or its options downloads). Skips loudly when the mirror is out of
    reach."""
    built = subprocess.run([str(ROOT / "scripts" / "build-debian-guest"), *options], capture_output=True, text=True,
                           check=False, timeout=900)
    if built.returncode == 2:
        pytest.skip(f"NO DEBIAN GUEST IMAGE: the mirror cannot be reached: {built.stderr.strip()[-300:]}")
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip())


@pytest.fixture(params=["debian-6.1", "sid-7.2"])
def kernel(request: pytest.FixtureRequest) -> str:
    """Each kernel the end-to-end scenarios run on: bookworm's 6.1 (legacy and vector), sid's 7.2 (vector only)."""
    name: str = request.param
    if name == "sid-7.2":
        path: str = request.getfixturevalue("vector_kernel")
        return path
    return KERNELS[name]


@pytest.fixture(scope="session")
def image() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="umlstate-test-image-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield build(folder / "base.img")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Farm:
    def __init__(self, host: Netns, lan: Netns, tmp: Path, image: Path, group: str) -> None:
        self.host, self.lan, self.tmp, self.image, self.group = host, lan, tmp, image, group
        self.name = "f" + secrets.token_hex(3)
        self.path = tmp / "topology.yaml"
        self.write()

    def write(self, web_mem: str = "96M", kind: str = "uml_switch", kernel: str = "linux.uml",
              web_more_addresses: tuple[str, ...] = ()) -> None:
        network = BRIDGE if kind == "bridge" else SWITCH_ON_TAP.format(kind=kind, group=self.group)
        more = "".join(f", {{switch: sw0, address: {a}}}" for a in web_more_addresses)
        self.path.write_text(TOPOLOGY.format(name=self.name, tmp=self.tmp, group=self.group, image=self.image,
                                             web_mem=web_mem, kernel=kernel, network=network, web_more_nics=more))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return umlstate(*args, netns=self.host.name)

    def cli(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(command, str(self.path), *args)

    def lan_ping(self, address: str, seconds: float = 20) -> str:
        """Ping from the LAN until an answer comes; return ping's output."""
        deadline = time.monotonic() + seconds
        while True:
            result = self.lan.run("ping", "-c1", "-W1", address, check=False)
            if result.returncode == 0 or time.monotonic() > deadline:
                return result.stdout
            time.sleep(0.2)

    def recorded(self, unit: str) -> dict[str, Any]:
        """What root recorded when it started a switch or guest (its state.json entry)."""
        records = json.loads((self.tmp / "state" / "state.json").read_text())
        found: dict[str, Any] = records["processes"][unit]
        return found

    def guest_pid(self, guest: str) -> int:
        return int(self.recorded(f"guest-{guest}")["pid"])

    def switch_pid(self) -> int:
        return int(self.recorded("switch-sw0")["pid"])

    def user_dir(self) -> Path:
        """run_dir/users/nobody: the one folder the guests' user may write in."""
        return self.tmp / "run" / "users" / "nobody"

    def process_table(self) -> dict[int, tuple[str, list[str], int]]:
        """Live (not zombie) switch and guest processes of this farm: pid -> (name, argv, ppid).

        Read in one pass: UML's helper processes come and go between two looks.
        """
        found = {}
        for p in psutil.process_iter(["name", "cmdline", "status", "ppid"]):
            if p.info["status"] != psutil.STATUS_ZOMBIE and p.info["name"] in ("linux.uml", "uml_switch",
                                                                                "vde_switch") \
                    and str(self.tmp) in " ".join(p.info["cmdline"] or []):
                found[p.pid] = (p.info["name"], p.info["cmdline"] or [], p.info["ppid"])
        return found

    def processes(self) -> list[int]:
        return sorted(self.process_table())

    def log(self, name: str) -> str:
        return (self.tmp / "state" / "logs" / f"{name}.log").read_text(errors="replace")

    def panic(self, guest: str) -> int:
        """Make the guest's kernel panic (mconsole sysrq c; no reply comes); return the pid that died."""
        pid = self.guest_pid(guest)
        with contextlib.suppress(MconsoleError):
            mconsole.command(str(self.user_dir() / "uml" / guest / "mconsole"), "sysrq c",
                             owner=pwd.getpwnam("nobody").pw_uid, timeout=1)
        deadline = time.monotonic() + 10
        while alive(pid):
            assert time.monotonic() < deadline, f"{guest} did not end; its log ends: {self.log(guest)[-1500:]}"
            time.sleep(0.05)
        return pid


@pytest.fixture
def farm(tmp_path: Path, image: Path) -> Iterator[Farm]:
    group = "umlst-" + secrets.token_hex(3)
    try:
        with host_and_lan() as (host, lan):
            made = Farm(host, lan, tmp_path, image, group)
            yield made
    finally:
        sh("groupdel", group, check=False)
        if "made" in locals():
            remove_cgroups(made.name)


class Session:
    """`umlstate console` on a terminal of its own; everything it printed is kept in ``seen``."""

    def __init__(self, farm: Farm, guest: str) -> None:
        argv = [sys.executable, "-m", "umlstate", "--netns", farm.host.name, "console", str(farm.path), guest]
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the CLI, its terminal the pty
            os.environ["NO_COLOR"] = "1"
            os.execv(argv[0], argv)
        self.seen = b""

    def expect(self, pattern: bytes, seconds: float = 20) -> bytes:
        deadline = time.monotonic() + seconds
        while (found := re.search(pattern, self.seen)) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} within {seconds}s; the terminal showed: {self.seen[-600:]!r}"
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:  # EIO: the CLI exited
                    time.sleep(0.05)
        return found[0]

    def type(self, text: bytes) -> None:
        os.write(self.fd, text)

    def close(self) -> int:
        """Wait for the CLI to end (after the escape byte); its exit status."""
        deadline = time.monotonic() + 10
        while not (ended := os.waitpid(self.pid, os.WNOHANG))[0]:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)  # ours: the pty.fork child above
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.fd, 4096)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(ended[1])


ESCAPE = b"\x1d"  # Ctrl-]: ends a console session


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def ttl(ping_output: str) -> int:
    match = re.search(r"ttl=(\d+)", ping_output)
    assert match, f"no answer: {ping_output}"
    return int(match[1])
