"""umlstate.host.console without a guest: the output filter, and which terminals a session may open.

The filter is fed what a hostile guest would print (queries that make a terminal answer, OSC
strings that set titles and clipboards, C1 controls, sequences split across reads); the
opening rules run against a real pty held by a real process this test starts (``sleep``),
as the guest's main process holds its console. No root needed.
"""

from __future__ import annotations

import os
import select
import subprocess
import termios
import threading
import time
import tty
from collections.abc import Iterator

import pytest

from umlstate.host import console, identity
from umlstate.host.console import ConsoleError, TerminalFilter


def shown(*chunks: bytes) -> bytes:
    f = TerminalFilter()
    return b"".join(f.feed(c) for c in chunks)


def test_text_colours_and_cursor_moves_pass_untouched() -> None:
    screen = b"login: \x1b[1;31mred\x1b[0m\r\n\x1b[2J\x1b[H\x1b[?25l\x1b[10;20r\x1b7x\x1b8\x1b(B\ttab\b\a"
    assert shown(screen) == screen
    assert shown("caf\u00e9 \u2713".encode()) == "caf\u00e9 \u2713".encode()


@pytest.mark.parametrize("query", [
    b"\x1b[6n", b"\x1b[5n", b"\x1b[c", b"\x1b[>c", b"\x1b[=c",  # DSR, DA1-3: the terminal types an answer
    b"\x1b[21t", b"\x1b[14t", b"\x1b[8;100;100t",  # window reports and resizes
    b"\x1b[?1$p", b"\x1b[ q", b"\x1b[2i",  # DECRQM, cursor style with an intermediate, media copy
    b"\x1bZ", b"\x1bc",  # DECID (answers), full reset
    b"\x1b]0;pwned\x07", b"\x1b]52;c;cm0gLXJmIH4K\x1b\\", b"\x1b]4;1;?\x07", b"\x1b]8;;http://x\x1b\\",  # OSC
    b"\x1bP$qm\x1b\\", b"\x1bP+q544e\x1b\\",  # DECRQSS, XTGETTCAP
    b"\x1b_apc\x1b\\", b"\x1b^pm\x1b\\", b"\x1bXsos\x1b\\",
    "\u009b6n".encode(), "\u009d0;pwned\u009c".encode(), "\u0090$qm\u009c".encode(),  # C1 forms
    b"\x1b[" + b"1;" * 100 + b"m",  # longer than any sequence a screen needs
    b"\x00\x05\x7f\x1b[\x18",  # controls: NUL, ENQ (answerback), DEL; CAN inside a CSI
    b"\x1b[?u", b"\x1b[?4m", b"\x1b[?1;1;0S",  # private queries: kitty keyboard, XTQMODKEYS, XTSMGRAPHICS
    b"\x1b[?1000h", b"\x1b[?1006h", b"\x1b[?1004h", b"\x1b[?2004h",  # reports that outlive the session
    b"\x1b[?2l", b"\x1b[?38h", b"\x1b[2h", b"\x1b[12l", b"\x1b[20h", b"\x1b[?25;1000h",  # VT52, Tek, KAM, SRM, LNM
    b"\x1b[999999999b", b"\x1b[1;100000H",  # counts no screen needs
    "\u202e\u2066".encode(),  # bidi overrides: text that reads as something else
])
def test_what_makes_a_terminal_answer_or_remember_is_dropped_whole(query: bytes) -> None:
    assert shown(b"<" + query + b">") == b"<>"


def test_a_terminal_not_in_utf8_gets_ascii_only() -> None:
    # U+06DB is D B 9B in UTF-8: a terminal in an 8-bit locale reads 9B as CSI, and "6n" then asks for a report.
    assert TerminalFilter(utf8=False).feed("\u06db6n caf\u00e9".encode()) == b"?6n caf?"
    assert console.utf8_terminal({"LANG": "en_US.UTF-8"}) and console.utf8_terminal({"LC_ALL": "C.utf8"})
    assert not console.utf8_terminal({"LANG": "en_US.UTF-8", "LC_ALL": "C"})
    assert not console.utf8_terminal({})


def test_a_sequence_split_across_reads_is_judged_whole() -> None:
    assert shown(b"a\x1b", b"[6", b"nb\x1b[3", b"1mc") == b"ab\x1b[31mc"
    assert shown(b"\x1b]0;ti", b"tle\x1b", b"\\after") == b"after"
    assert shown("\u00e9".encode()[:1], "\u00e9".encode()[1:]) == "\u00e9".encode()


def test_an_unterminated_string_hides_only_itself_until_it_ends() -> None:
    f = TerminalFilter()
    assert f.feed(b"before\x1b]0;" + b"x" * 100000) == b"before"
    assert f.feed(b"\x07after") == b"after"


def test_a_session_copies_both_ways_and_ends_at_the_escape_byte() -> None:
    guest_end, session_end = os.openpty()
    typed_r, typed_w = os.pipe()
    out_r, out_w = os.pipe()
    tty.setraw(session_end)  # as allocate() leaves a guest's console
    try:
        os.write(guest_end, b"hello \x1b]0;title\x07world\r\n")
        os.write(typed_w, b"ls\r\x1dnot sent")
        assert console.attach(session_end, typed_r, out_w) == "detached"
        assert os.read(out_r, 1000) == b"hello world\r\n"
        assert os.read(guest_end, 1000) == b"ls\r"
    finally:
        for fd in (guest_end, session_end, typed_r, typed_w, out_r, out_w):
            os.close(fd)


def test_a_guest_that_takes_no_input_cannot_keep_the_escape_from_working() -> None:
    """The guest's user owns its console and may stop it taking input (tcflow TCOOFF): typing then waits,
    and Ctrl-] still ends the session at once."""
    guest_end, session_end = os.openpty()
    typed_r, typed_w = os.pipe()
    out_r, out_w = os.pipe()
    tty.setraw(session_end)
    os.set_blocking(session_end, False)  # as open_recorded opens it
    termios.tcflow(session_end, termios.TCOOFF)
    later = threading.Timer(0.5, os.write, (typed_w, b"\x1d"))
    try:
        os.write(typed_w, b"ls\r")
        later.start()
        began = time.monotonic()
        assert console.attach(session_end, typed_r, out_w) == "detached"
        assert time.monotonic() - began < 2
    finally:
        later.join()
        for fd in (guest_end, session_end, typed_r, typed_w, out_r, out_w):
            os.close(fd)


def test_what_is_typed_as_soon_as_the_session_says_it_is_connected_reaches_the_guest() -> None:
    """Typeahead on a terminal still cooked when the session starts is neither flushed nor lost."""
    guest_end, session_end = os.openpty()
    keyboard, terminal = os.openpty()  # a person's terminal, cooked as a shell leaves it
    out_r, out_w = os.pipe()
    tty.setraw(session_end)
    try:
        os.write(keyboard, b"ls\r")  # typed before the session made the terminal raw
        announced: list[bool] = []
        later = threading.Timer(0.3, os.write, (keyboard, b"\x1d"))
        later.start()
        assert console.attach(session_end, terminal, out_w, announce=lambda: announced.append(True)) == "detached"
        later.join()
        assert announced == [True]
        assert select.select([guest_end], [], [], 1)[0], "the typeahead was lost"
        assert b"ls" in os.read(guest_end, 1000)
    finally:
        for fd in (guest_end, session_end, keyboard, terminal, out_r, out_w):
            os.close(fd)


# --- which terminal a session opens ------------------------------------------------------------------------


@pytest.fixture
def guest_with_console() -> Iterator[tuple[console.Pty, identity.Identity]]:
    """A process holding a pty's slave, recorded as spawn records a guest (its session marks it)."""
    pty = console.allocate(os.getuid())
    child = subprocess.Popen(["sleep", "60"], stdin=pty.master, pass_fds=(pty.slave,), start_new_session=True)
    try:
        found = identity.record(child.pid, "sleep", cgroup=False)
        assert found is not None
        yield pty, found
    finally:
        child.kill()
        child.wait()
        pty.close()


def test_the_recorded_console_of_a_running_holder_opens_once_at_a_time(
        guest_with_console: tuple[console.Pty, identity.Identity]) -> None:
    pty, holder = guest_with_console
    fd = console.open_recorded(pty.path, holder, "web")
    try:
        with pytest.raises(ConsoleError, match="attached in another session"):
            console.open_recorded(pty.path, holder, "web")
    finally:
        os.close(fd)
    os.close(console.open_recorded(pty.path, holder, "web"))  # free again once the first session ended


def test_a_terminal_the_guest_does_not_hold_is_never_opened(
        guest_with_console: tuple[console.Pty, identity.Identity]) -> None:
    _pty, holder = guest_with_console
    other_master, other_slave = os.openpty()  # ours, but not the holder's: a pts number reused, say
    try:
        with pytest.raises(ConsoleError, match="does not hold it"):
            console.open_recorded(os.ttyname(other_slave), holder, "web")
    finally:
        os.close(other_master)
        os.close(other_slave)


@pytest.mark.parametrize(("path", "problem"), [
    (None, "started without a console"),
    ("/etc/shadow", "not a pty"),
    ("/dev/pts/../../etc/shadow", "not a pty"),
    ("/dev/pts/ptmx", "not a pty"),
])
def test_a_recorded_path_that_is_no_pty_slave_is_refused(
        guest_with_console: tuple[console.Pty, identity.Identity], path: str | None, problem: str) -> None:
    _pty, holder = guest_with_console
    with pytest.raises(ConsoleError, match=problem):
        console.open_recorded(path, holder, "web")


def test_a_guest_that_is_gone_has_no_console(guest_with_console: tuple[console.Pty, identity.Identity]) -> None:
    pty, holder = guest_with_console
    gone = identity.Identity(holder.pid, holder.start + 1, holder.uid, holder.cgroup, holder.sid, holder.exe)
    with pytest.raises(ConsoleError, match="not running"):
        console.open_recorded(pty.path, gone, "web")
