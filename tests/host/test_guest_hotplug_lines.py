"""The guest side of hot-plug reads only whole kernel-log lines that umlstate's mconsole `log` wrote.

The kernel prints lines with text a guest's user controls (a process name, a
path, a message a program makes it log); one that merely contains
``umlstate.vec1=...`` must never make the guest's root add an address. The
busybox init and contrib/guest/umlstate-net share one expression; it runs
here on captured-like lines through busybox's own sed, as in the guest.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from umlstate.guestimage import HOTPLUG_LINES, INIT

ROOT = Path(__file__).resolve().parents[2]
LINES = """\
[   12.345678] umlstate: umlstate.vec1=172.16.99.11/24
umlstate: umlstate.vec2=10.0.0.2/30
[   13.000001] evil[42]: segfault at 0 ip umlstate: umlstate.vec3=10.6.6.6/8
[   13.100000] audit: umlstate: umlstate.vec4=10.6.6.7/8
[   13.200000] umlstate: umlstate.vec5=10.6.6.8/8 and more
[   13.300000] xumlstate: umlstate.vec6=10.6.6.9/8
"""


def test_init_and_the_contrib_script_use_the_same_expression() -> None:
    assert HOTPLUG_LINES in INIT
    assert HOTPLUG_LINES in (ROOT / "contrib" / "guest" / "umlstate-net").read_text()


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox (Debian: busybox-static)")
def test_only_whole_lines_umlstate_wrote_are_orders() -> None:
    found = subprocess.run(["busybox", "sh", "-c", HOTPLUG_LINES], input=LINES, capture_output=True, text=True,
                           check=True).stdout.split()
    assert found == ["umlstate.vec1=172.16.99.11/24", "umlstate.vec2=10.0.0.2/30"]
