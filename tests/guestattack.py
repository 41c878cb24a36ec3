"""Playing a hostile guest from inside a real busybox UML guest (a pytest plugin, registered in conftest).

- ``pkt`` (tests/guesttools/pkt.c), compiled static at test time and put at /bin/pkt in the
  busybox test image: the ``attack_image`` fixture, and ``attack_farm`` (the farm on that image);
  busybox's ``arping`` is there too (``claim`` gives the line that claims an address with it).
- ``guest_sh`` (``guest_run``, ``GuestShell`` for several in a row): one line of shell in a running
  guest, as root on its console (``umlstate console`` on a pty of the test's own), its output
  delimited by markers the guest's shell computes.
- ``Capture``: tcpdump on one link of a farm namespace, started (and listening) before the
  attack, the frames read back raw.
- Frame builders (Ethernet, ARP, IPv4 ICMP echo) giving the hex ``pkt send`` takes, and just
  enough decoding to judge what was captured.

    with Capture(farm.host, guest_port(farm, "web"), "arp") as capture:
        guest_sh(farm, "web", f"pkt send vec0 {arp_frame(random_mac(), '172.16.99.2', '172.16.99.2')}")
    [frame] = capture.frames
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

from umlstate.guestimage import build
from umlstate.host.icmp import checksum
from umlstate.model.topology import nic_tap_name

from conftest import ROOT, Netns
from farm import ESCAPE, Farm, Session

PKT_SOURCE = ROOT / "tests" / "guesttools" / "pkt.c"
BROADCAST = "ff:ff:ff:ff:ff:ff"
MAX_LINE = 900  # busybox ash's line editor keeps 1024 bytes of a line; a longer one would be cut short


# --- the image -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pkt_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/guesttools/pkt.c, built static (glibc's libc.a, from libc6-dev) for the guest."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is not installed: scripts/bootstrap installs gcc and libc6-dev", pytrace=False)
    out = tmp_path_factory.mktemp("pkt") / "pkt"
    built = subprocess.run([gcc, "-static", "-Os", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror",
                            "-o", str(out), str(PKT_SOURCE)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, f"pkt.c does not build: {built.stderr}"
    return out


@pytest.fixture(scope="session")
def attack_image(pkt_binary: Path) -> Iterator[Path]:
    """The busybox test image with /bin/pkt (and arping): a guest whose root plays the attacker."""
    folder = Path(tempfile.mkdtemp(prefix="umlstate-test-attack-image-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield build(folder / "attack.img", extra={"bin/pkt": pkt_binary})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def attack_farm(farm: Farm, attack_image: Path) -> Farm:
    """The farm (host and LAN namespaces, cleaned up also on failure), its guests booting the attack image.

    Its topology is written in the farm's default form; ``attack_farm.write(kind="bridge")`` etc. keep the image.
    """
    farm.image = attack_image
    farm.write()
    return farm


# --- the guest's shell -----------------------------------------------------------------------

@dataclass(frozen=True)
class Ran:
    output: str
    status: int


class GuestShell:
    """The root shell on a running guest's console (``umlstate console`` on a pty), for commands in a row.

        with GuestShell(farm, "web") as shell:
            shell.sh("pkt ra vec0 fe:fd:ac:10:63:01")

    Each command is one line; what it printed is taken between two markers that the guest's
    shell computes (``$((0+1))``), so that the echo of the typed line never matches them, and
    each wait ends on its closing marker, or fails after ``seconds`` showing the terminal.
    """

    def __init__(self, farm: Farm, guest: str, seconds: float = 20) -> None:
        self.guest = guest
        self.session = Session(farm, guest)
        try:
            self.session.expect(rb"Escape character is \^\]", seconds=seconds)
            self.session.type(b"\r")
            self.session.expect(rb"# ", seconds=seconds)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> GuestShell:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the CLI may have ended already
            self.session.type(ESCAPE)
        self.session.close()

    def run(self, command: str, seconds: float = 20) -> Ran:
        """Run one line of shell; what it printed and its exit status."""
        if "\n" in command or "\r" in command or ESCAPE.decode() in command:
            raise ValueError("one line of shell, without the console's escape character")
        token = secrets.token_hex(4).encode()
        line = b"echo @@B" + token + b"$((0+1))@@; " + command.encode() + b"; echo @@E" + token + b"$((1+1))@@ $?"
        if len(line) > MAX_LINE:
            raise ValueError(f"the line is {len(line)} bytes; the guest's line editor keeps {MAX_LINE}")
        self.session.type(line + b"\r")
        end = self.session.expect(rb"@@E" + token + rb"2@@ (\d+)\r?\n", seconds=seconds)
        seen = self.session.seen
        begin = seen.index(b"@@B" + token + b"1@@")
        output = seen[begin:seen.rindex(end)].partition(b"\n")[2]
        return Ran(output.decode(errors="replace").replace("\r", ""), int(end.split()[1]))

    def sh(self, command: str, seconds: float = 20) -> str:
        """Run one line of shell; what it printed. Fails when it exits non-zero."""
        ran = self.run(command, seconds)
        assert ran.status == 0, f"in guest {self.guest}, `{command}` exited {ran.status}: {ran.output}"
        return ran.output

    def pkt_send(self, ifname: str, frame: str, count: int = 1, seconds: float = 20) -> str:
        """``pkt send`` a frame of any length (hex): a long one is put together in a shell variable first."""
        chunk = 600
        self.sh(f"PKT_FRAME={frame[:chunk]}")
        for at in range(chunk, len(frame), chunk):
            self.sh(f"PKT_FRAME=${{PKT_FRAME}}{frame[at:at + chunk]}")
        return self.sh(f'pkt send {ifname} "$PKT_FRAME" {count}', seconds)


def guest_run(farm: Farm, guest: str, command: str, seconds: float = 20) -> Ran:
    """Run one line of shell in a running guest, as root on its console; its output and exit status."""
    with GuestShell(farm, guest, seconds) as shell:
        return shell.run(command, seconds)


def guest_sh(farm: Farm, guest: str, command: str, seconds: float = 20) -> str:
    """Run one line of shell in a running guest, as root on its console; its output. Fails when it exits non-zero."""
    with GuestShell(farm, guest, seconds) as shell:
        return shell.sh(command, seconds)


def guest_nic(farm: Farm, guest: str, index: int = 0) -> tuple[str, str]:
    """The guest's index-th NIC as the guest sees it: (interface name, MAC), e.g. ("vec0", "fe:fd:..")."""
    out = guest_sh(farm, guest, "for d in /sys/class/net/*; do [ ${d##*/} = lo ] || echo ${d##*/} $(cat $d/address);"
                                " done")
    nics = [line.split() for line in out.splitlines() if len(line.split()) == 2]
    assert len(nics) > index, f"guest {guest} has no NIC {index}: {out!r}"
    return nics[index][0], nics[index][1]


def claim(ifname: str, address: str, count: int = 2) -> str:
    """The shell line that makes a guest claim an address (gratuitous ARP with busybox arping, a second apart).

    arping binds its source address first: the guest allows binding one it does not have.
    """
    return f"echo 1 > /proc/sys/net/ipv4/ip_nonlocal_bind && arping -U -s {address} -I {ifname} -c {count} {address}"


def guest_port(farm: Farm, guest: str, index: int = 0) -> str:
    """The host-side link where the guest's NIC enters the host namespace.

    The NIC's own tap on a bridge farm (``web-0``); on a switch farm, the switch's tap
    (``uml0``), which carries what the switch sends towards the host.
    """
    tap = nic_tap_name(guest, index)
    names = {link["ifname"] for link in farm.host.json("link", "show")}
    return tap if tap in names else "uml0"


# --- capturing on the host side --------------------------------------------------------------

class Capture:
    """tcpdump on one link of a namespace the test made: listening before the block runs, read back raw.

        with Capture(farm.host, "web-0", "arp", count=2) as capture:
            ...  # the attack
        capture.frames  # the raw frames that came

    Leaving the block waits until ``count`` frames matched the filter (tcpdump then exits by
    itself) or ``seconds`` passed (it is interrupted and keeps what came). Only frames that
    come in on the link by default (from the guest, on its tap): ``direction="inout"`` for all.
    """

    def __init__(self, ns: Netns, link: str, bpf: str = "", count: int = 1, seconds: float = 20,
                 direction: str = "in") -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="umlstate-test-capture-"))
        self.file = self.folder / "capture.pcap"
        self.seconds = seconds
        self.frames: list[bytes] = []
        self.stderr = b""
        # -s/-B: a small snapshot length and a large buffer, room for thousands of frames in the kernel's
        # ring (at the default 256 KiB a slot, a burst of a few dozen is dropped); -Z root: tcpdump
        # would open its file after dropping to a user of its own; -U: each frame written as it comes.
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns.name, "tcpdump", "-i", link, "-Q", direction, "-n",
                                      "-s", "2048", "-B", "16384", "--immediate-mode", "-U", "-Z", "root",
                                      "-c", str(count), "-w", str(self.file), *([bpf] if bpf else [])],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 10
        while b"listening on" not in self.stderr:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.close()
                raise AssertionError(f"tcpdump on {link} in {ns.name} did not start: {self.stderr.decode()}")
            ready, _, _ = select.select([self.proc.stderr], [], [], min(left, 0.2))
            if ready:
                self.stderr += os.read(self.proc.stderr.fileno(), 4096)

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            if error is None:
                try:
                    self.proc.wait(self.seconds)
                except subprocess.TimeoutExpired:
                    self.proc.send_signal(signal.SIGINT)  # ours: tcpdump writes what it has and exits
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(5)
                if self.file.exists():
                    self.frames = read_pcap(self.file.read_bytes())
                assert self.proc.stderr is not None
                self.stderr += self.proc.stderr.read()  # tcpdump has ended: its summary (captured, dropped)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # ours, started above
            self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def arp_sender_is(address: str) -> str:
    """A tcpdump filter: ARP whose sender address is this one (a claim of it)."""
    return f"arp and arp[14:4] == 0x{int(ipaddress.IPv4Address(address)):08x}"


def read_pcap(data: bytes) -> list[bytes]:
    """The frames of a classic pcap file (micro- or nanosecond, either byte order)."""
    if len(data) < 24:
        return []
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
             b"\xa1\xb2\x3c\x4d": ">"}[data[:4]]
    frames, at = [], 24
    while at + 16 <= len(data):
        length: int = struct.unpack(order + "I", data[at + 8:at + 12])[0]
        frames.append(data[at + 16:at + 16 + length])
        at += 16 + length
    return frames


# --- frames ----------------------------------------------------------------------------------

def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def random_mac() -> str:
    """A random locally administered unicast MAC."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return mac_text(bytes(raw))


def ethernet(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + payload


def ethernet_frame(dst: str, src: str, ethertype: int, payload: bytes) -> str:
    """An Ethernet frame, in the hex ``pkt send`` takes (pkt pads it to 60 bytes)."""
    return ethernet(dst, src, ethertype, payload).hex()


def arp_frame(src: str, sender_ip: str, target_ip: str, *, op: int = 1, sender_mac: str | None = None,
              dst: str = BROADCAST, target_mac: str = "00:00:00:00:00:00") -> str:
    """An ARP frame from Ethernet source ``src`` (sender MAC too, unless ``sender_mac``), as hex.

    ``op`` 1 is a request, 2 a reply; sender_ip == target_ip makes it gratuitous.
    """
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac_bytes(sender_mac or src) \
        + ipaddress.IPv4Address(sender_ip).packed + mac_bytes(target_mac) + ipaddress.IPv4Address(target_ip).packed
    return ethernet_frame(dst, src, 0x0806, body)


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), secrets.randbits(16), 0, ttl, proto, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def icmp_echo_frame(dst_mac: str, src_mac: str, src_ip: str, dst_ip: str, ident: int = 0x4242, seq: int = 1,
                    data: bytes = b"umlstate-pkt echo") -> str:
    """An ICMP echo request in IPv4 in Ethernet, as hex."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    return ethernet_frame(dst_mac, src_mac, 0x0800, ipv4(src_ip, dst_ip, 1, icmp))


@dataclass(frozen=True)
class Frame:
    """A captured Ethernet frame, decoded just enough to judge it."""
    dst: str
    src: str
    ethertype: int
    payload: bytes

    @classmethod
    def of(cls, raw: bytes) -> Frame:
        return cls(mac_text(raw[:6]), mac_text(raw[6:12]), int.from_bytes(raw[12:14], "big"), raw[14:])

    def arp(self) -> tuple[int, str, str, str, str]:
        """(op, sender MAC, sender IP, target MAC, target IP) of an ARP frame."""
        assert self.ethertype == 0x0806, f"not ARP: {self}"
        p = self.payload
        op = int.from_bytes(p[6:8], "big")
        return (op, mac_text(p[8:14]), str(ipaddress.IPv4Address(p[14:18])), mac_text(p[18:24]),
                str(ipaddress.IPv4Address(p[24:28])))

    def icmpv6_type(self) -> int | None:
        """The ICMPv6 type of an IPv6 frame without extension headers (None otherwise)."""
        if self.ethertype != 0x86DD or len(self.payload) < 41 or self.payload[6] != 58:
            return None
        return self.payload[40]

    def ipv6_source(self) -> str:
        return str(ipaddress.IPv6Address(self.payload[8:24]))
