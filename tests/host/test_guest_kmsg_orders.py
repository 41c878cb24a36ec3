"""The guest side of umlstate's orders (a NIC plugged in live, `umlstate check`) takes only whole records the
kernel itself logged.

umlstate writes them into a running guest's kernel log with mconsole `log`;
the guest reads them from /dev/kmsg. The kernel logs other lines with text a
guest's user controls (a process name, a path, a message a program makes it
log), and a process may write /dev/kmsg itself: none of those may make the
guest's root add an address or run its checks. The busybox init and
contrib/guest/umlstate-net share the two functions that decide it; they run
here, in busybox's sh and in dash, on records shaped as /dev/kmsg gives them.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
from pathlib import Path

import pytest

from umlstate.guestimage import INIT, KMSG_ORDER

ROOT = Path(__file__).resolve().parents[2]
RECORDS = """\
4,1201,12345678,-;umlstate: umlstate.vec1=172.16.99.11/24
4,1202,12345679,-;umlstate: umlstate.check=ab12cd
6,1203,12345680,c;umlstate: umlstate.vec12=10.0.0.2/30
 SUBSYSTEM=net
12,1204,12345681,-;umlstate: umlstate.check=feedface
14,1205,12345682,-;umlstate: umlstate.vec2=10.6.6.5/8
4,1206,12345683,-;evil[42]: segfault at 0 ip umlstate: umlstate.vec3=10.6.6.6/8
4,1207,12345684,-;audit: umlstate: umlstate.vec4=10.6.6.7/8
4,1208,12345685,-;umlstate: umlstate.vec5=10.6.6.8/8 and more
4,1209,12345686,-;xumlstate: umlstate.vec6=10.6.6.9/8
4,1210,12345687,-;umlstate: umlstate.check=AB;reboot
4,1211,12345688,-;umlstate: umlstate.check=
4,1212,12345689,-;umlstate: umlstate.vec7=10.6.6.10
4,1213,12345690,-;umlstate: umlstate.vec8=10.6.6.11/8/8
4,1214,12345691,-;umlstate: umlstate.veth0=10.6.6.12/8
4,1215,12345692,-;umlstate: umlstate.vec=10.6.6.13/8
4,1216,12345693,-;umlstate: umlstate.vec9=/8
[   13.1] umlstate: umlstate.vec10=10.6.6.14/8
"""


def test_init_and_the_contrib_script_carry_the_same_function() -> None:
    assert KMSG_ORDER in INIT
    assert KMSG_ORDER in (ROOT / "contrib" / "guest" / "umlstate-net").read_text()
    assert "</dev/kmsg" in INIT and "dmesg" not in INIT, "the guest waits for records; it never polls"


@pytest.mark.parametrize("shell", ["busybox sh", "dash"])
def test_only_whole_records_the_kernel_wrote_are_orders(shell: str) -> None:
    program = shell.split(maxsplit=1)[0]
    if shutil.which(program) is None:
        pytest.skip(f"needs {program}")
    script = KMSG_ORDER + '\nwhile IFS= read -r r; do order "$r" && echo "$kind $value"; done; true\n'
    found = subprocess.run([*shell.split(), "-c", script], input=RECORDS, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert found == ["vec vec1=172.16.99.11/24", "check ab12cd", "vec vec12=10.0.0.2/30"]


@pytest.mark.parametrize(("shell", "tools"), [("busybox sh", "busybox"), ("dash", "the host's")])
def test_the_filter_in_front_lets_each_line_that_may_be_an_order_through_at_once(shell: str, tools: str,
                                                                                tmp_path: Path) -> None:
    """`candidates` reads the log in blocks (the shell's read takes a byte a system call), yet passes each line
    that may be an order as soon as it comes: a quiet guest may log nothing after it, so a filter that waits to
    fill a buffer would hold a NIC's address back for good. With busybox's tools (the busybox init: its grep
    cannot, so awk) and the host's (a Debian guest: GNU grep); what passes still goes through `order`."""
    program, *flags = shell.split()
    found, busybox = shutil.which(program), shutil.which("busybox")
    if found is None or busybox is None:
        pytest.skip(f"needs {program} and busybox")
    env = dict(os.environ)
    if tools == "busybox":
        (tmp_path / "bin").mkdir()
        for applet in ("cat", "grep", "awk"):
            (tmp_path / "bin" / applet).symlink_to(busybox)
        env["PATH"] = str(tmp_path / "bin")
    script = KMSG_ORDER + '\ncandidates | while IFS= read -r r; do order "$r" && echo "$kind $value"; done\n'
    first = "6,1200,12345677,-;eth0: link becomes ready\n4,1201,12345678,-;umlstate: umlstate.vec1=172.16.99.11/24\n"
    guest = subprocess.Popen([found, *flags, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             env=env, text=True)
    assert guest.stdin is not None and guest.stdout is not None
    try:
        guest.stdin.write(first)
        guest.stdin.flush()
        # The log stays open, as /dev/kmsg does: the order must come out now, not when more follows.
        assert select.select([guest.stdout], [], [], 30)[0], "the order waited for more of the log"
        assert guest.stdout.readline() == "vec vec1=172.16.99.11/24\n"
        guest.stdin.write(RECORDS.split("\n", 1)[1])
        guest.stdin.close()
        rest = guest.stdout.read().splitlines()
    finally:
        guest.kill()
        guest.wait()
    assert rest == ["check ab12cd", "vec vec12=10.0.0.2/30"]
