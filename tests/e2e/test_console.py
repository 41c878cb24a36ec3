"""`umlstate console`: a person's terminal on a real guest's tty1, as often as they like.

The busybox guest keeps a root shell on tty1; `umlstate console` runs here on a
pseudo-terminal of the test's own (as it would on a person's), typed at and
read like one. What the guest prints to the terminal is what a hostile guest
would: queries that make a terminal answer, and OSC strings.
"""

from __future__ import annotations

import re

from conftest import needs_root
from farm import ESCAPE, Farm, Session

pytestmark = [needs_root]


def test_the_console_reaches_a_guests_shell_session_after_session_and_keeps_the_terminal_safe(farm: Farm) -> None:
    assert farm.cli("apply", "--yes").returncode == 0

    first = Session(farm, "web")
    first.expect(rb"Connected to guest web's console \(/dev/pts/\d+, tty1 in the guest\)\. Escape character is \^\]")
    first.type(b"\r")
    first.expect(rb"/ # ")
    first.type(b"export MARK=kept; echo hello-$((40+2))\r")
    first.expect(rb"hello-42")
    # What a hostile guest prints: DSR and DA queries (the terminal would type its answers into the
    # shell it returns to), a title, a clipboard write, a DECRQSS query; then a colour, which passes.
    first.type(rb"printf $((6*7))'<\033[6n\033[c\033]0;pwned\007\033]52;c;cm0gLXJmIH4K\033\\\033P$qm\033\\"
               rb"\033[31mred\033[0m>\n'" + b"\r")
    shown = first.expect(rb"42<[^>]*>")  # the output, not the echo of the command line
    assert shown == b"42<\x1b[31mred\x1b[0m>", "queries, titles and clipboard writes never reach the terminal"

    # One session at a time: a second one is refused while the first is attached.
    second = farm.cli("console", "web")
    assert second.returncode == 1 and "attached in another session" in second.stderr

    first.type(ESCAPE)
    first.expect(rb"Disconnected from guest web's console: detached\.")
    assert first.close() == 0

    # The next session finds the same shell, still logged in: the guest never saw a hangup.
    again = Session(farm, "web")
    again.expect(rb"Connected to guest web's console")
    again.type(b"echo mark=$MARK\r")
    again.expect(rb"mark=kept")

    # A guest that reboots (UML re-executes itself in the same process) keeps its console, session included.
    pid = farm.guest_pid("web")
    again.type(b"reboot -f\r")
    again.expect(rb"BusyBox v[^\n]*built-in shell", seconds=60)
    assert farm.guest_pid("web") == pid
    again.type(b"\recho after-$((1+1))\r")
    again.expect(rb"after-2")
    again.type(ESCAPE)
    assert again.close() == 0

    assert farm.cli("stop", "web").returncode == 0
    stopped = farm.cli("console", "web")
    assert stopped.returncode == 1
    assert "guest web is not running (held down by `umlstate stop`)" in stopped.stderr
    assert farm.cli("destroy", "--yes").returncode == 0


def test_the_console_and_panic_reports_on_a_vector_only_kernel(farm: Farm, vector_kernel: str) -> None:
    farm.write(kind="bridge", kernel=vector_kernel)
    assert farm.cli("apply", "--yes").returncode == 0
    session = Session(farm, "web")
    session.type(b"\r")
    session.expect(rb"/ # ")
    session.type(b"ip -4 -o addr show dev vec0\r")
    session.expect(rb"vec0 +inet 172\.16\.99\.1/24")
    session.type(ESCAPE)
    assert session.close() == 0

    farm.panic("web")
    status = farm.cli("status")
    assert status.returncode == 2
    assert re.search(r"guest +web +panicked +its log says: Kernel panic - not syncing: sysrq triggered crash",
                     status.stdout), status.stdout
    assert farm.cli("destroy", "--yes").returncode == 0
