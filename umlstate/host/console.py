"""A guest's interactive console: a pseudo-terminal root makes at spawn, and sessions attached to it.

Host layer, used by apply (a pair for each guest it starts) and by
``umlstate console``. Root opens the pair before it starts a guest: the guest
gets the master as its stdin and reads and writes its tty1 there
(``con1=fd:0``), and keeps the slave open too, unused, so that the console
outlives every session attached to it: once no process holds a slave, its
master reads EIO and UML hangs the line up for good (one session per boot).
The slave belongs to the guest's user, who may attach with any terminal
program; root records its path beside the process, and nothing the guest says
ever names it.

Attaching opens the recorded path only while the recorded guest still runs
and holds that very terminal (a user can open no one else's), checks that it
is a pty slave of the guest's user, locks it (one session at a time), then
copies bytes both ways until the escape character. Everything the guest
prints passes ``TerminalFilter``: a terminal asked a question (DSR, DA, a
window report, a DCS or OSC query) types its answer into its own input, that
is into root's shell once the session ends, and OSC sequences set titles,
clipboards and palettes; all of those are dropped, cursor moves and colours
pass.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import os
import re
import select
import stat
import termios
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass

from umlstate.errors import ActionError
from umlstate.host import identity

PTY_SLAVE_MAJORS = range(136, 144)  # UNIX98 pty slaves (Documentation/admin-guide/devices.txt)
PTS_PATH = re.compile(r"/dev/pts/([0-9]{1,7})")
ESCAPE = 0x1D  # Ctrl-]: like telnet and virsh console
MAX_PENDING = 64 << 10  # typed bytes the guest has not taken yet, at most
INPUT_DRAIN = 2.0  # seconds the rest of a piped stdin may take to go in after its end
MAX_FDS = 4096  # a guest process's descriptors looked at, at most, to find the console it holds


class ConsoleError(ActionError):
    """A guest's console cannot be attached: not running, none recorded, or not the guest's any more."""


@dataclass
class Pty:
    """A pair made for a guest about to start; the parent closes both once the guest holds them."""

    master: int
    slave: int
    path: str

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def allocate(uid: int) -> Pty:
    """A fresh pair whose slave belongs to ``uid``, in raw mode (the guest's tty does the line editing)."""
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        tty.setraw(slave)
        os.fchown(slave, uid, -1)
        os.fchmod(slave, 0o600)  # the guest's user's alone (devpts may make it group tty writable)
    except OSError:
        os.close(master)
        os.close(slave)
        raise
    return Pty(master, slave, path)


def open_recorded(path: str | None, holder: identity.Identity, guest: str) -> int:
    """Root's descriptor on the guest's console, locked for this session; raises ConsoleError.

    ``path`` is what root recorded when it started the guest; ``holder`` the guest's
    main process as recorded. The terminal is opened only if that process still runs
    and holds it, and only with O_NOCTTY (it never becomes root's controlling terminal).
    """
    if path is None:
        raise ConsoleError(f"guest {guest} was started without a console (by an older umlstate); "
                           f"it gets one when it next starts: umlstate stop {guest} && umlstate start {guest}")
    found = PTS_PATH.fullmatch(path)
    if found is None:
        raise ConsoleError(f"guest {guest}'s recorded console {path!r} is not a pty: the records were edited")
    handle = identity.Handle.open(holder)
    if handle is None:
        raise ConsoleError(f"guest {guest} is not running (its recorded process is gone)")
    with handle:
        # Judged before it is opened: a terminal that is not the guest's is never opened at all.
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise ConsoleError(f"guest {guest}'s console {path} is gone: {exc.strerror}") from None
        if not (stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in PTY_SLAVE_MAJORS
                and (os.major(st.st_rdev) - PTY_SLAVE_MAJORS[0]) * 256 + os.minor(st.st_rdev) == int(found[1])
                and st.st_uid == holder.uid):
            raise ConsoleError(f"{path} is not guest {guest}'s console any more (not a pty slave of uid {holder.uid})")
        if not holds(holder.pid, path, st) or handle.wait(0):
            raise ConsoleError(f"{path} is not guest {guest}'s console any more: its process does not hold it")
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise ConsoleError(f"guest {guest}'s console {path} cannot be opened: {exc.strerror}") from None
        try:
            now = os.fstat(fd)
            # A pts number let go of and taken again has the same inode; another user's has another owner.
            if (now.st_dev, now.st_ino, now.st_rdev, now.st_uid) != (st.st_dev, st.st_ino, st.st_rdev, st.st_uid):
                raise ConsoleError(f"{path} changed while it was opened; try again")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConsoleError(f"guest {guest}'s console is attached in another session; "
                                   f"one at a time") from None
        except BaseException:
            os.close(fd)
            raise
    return fd


def holds(pid: int, path: str, opened: os.stat_result) -> bool:
    """Whether process ``pid`` has a descriptor on the very file ``opened`` (``path``, as fstat'ed).

    Only descriptors whose link names ``path`` are stat'ed (reading a link touches no
    file system: a user's hung FUSE or NFS mount cannot stall root here), and the file
    must be the same inode of the same devpts, not a pts of a private devpts instance
    with the same device number. At most MAX_FDS descriptors are looked at.
    """
    try:
        folder = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        with os.scandir(folder) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_FDS:
                    return False
                with contextlib.suppress(OSError):
                    if os.readlink(entry.name, dir_fd=folder) != path:
                        continue
                    st = os.stat(entry.name, dir_fd=folder)  # follows the magic link to the open file
                    if (st.st_dev, st.st_ino, st.st_rdev) == (opened.st_dev, opened.st_ino, opened.st_rdev):
                        return True
    finally:
        os.close(folder)
    return False


# --- what a guest may print on root's terminal --------------------------------------------------------

CSI_FINALS = frozenset("@ABCDEFGHJKLMPSTXZ`abdefghlmrs")  # moves, erases, scrolling, colours; modes below
PRIVATE_MODES = frozenset({1, 6, 7, 12, 25, 47, 1047, 1048, 1049, 2026})  # CSI ? N h/l: cursor keys, origin,
# wrap, blink, cursor shown, the alternate screen, synchronized output; no mouse, focus or paste reports
ANSI_MODES = frozenset({4})  # CSI N h/l: insert mode; not the keyboard lock, local echo or newline modes
MAX_PARAMETER = 999  # no screen has more rows or columns; a bigger count (REP) is a flood of root's terminal
ESC_FINALS = frozenset("78DEHM=>")  # save/restore cursor, index, tab set, keypad modes
CHARSETS = frozenset("()*+")  # ESC ( B and the like: character set designation, one more byte
KEPT_CONTROLS = frozenset(b"\a\b\t\n\r\x0e\x0f")  # BEL, BS, TAB, LF, CR, SO, SI
MAX_SEQUENCE = 64  # a CSI longer than this is no sequence a terminal needs: dropped whole
# Written when a session ends, whatever the guest left set: plain colours and character sets, the main
# screen, a visible cursor, the whole screen scrolling, no insert mode, normal cursor keys and keypad.
RESET = b"\x1b[0m\x1b(B\x1b)B\x0f\x1b[?1049l\x1b[?25h\x1b[r\x1b[4l\x1b[?1l\x1b>"


def _allowed_csi(params: str, final: str) -> bool:
    private = params.startswith("?")
    body = params[1:] if private else params
    if final not in CSI_FINALS or not all(c in "0123456789;" for c in body):
        return False
    numbers = [int(n) for n in body.split(";") if n]
    if any(n > MAX_PARAMETER for n in numbers):
        return False
    if final in "hl":
        return bool(numbers) and set(numbers) <= (PRIVATE_MODES if private else ANSI_MODES)
    return not private


class TerminalFilter:
    """Streaming: what a guest prints, minus every sequence that makes a terminal answer or remember.

    Kept: printable text (ASCII only unless ``utf8``; no C1 code points, no
    format characters), BEL/BS/TAB/LF/CR/SO/SI, CSI sequences with numeric
    parameters up to MAX_PARAMETER, no intermediates and a final byte in
    CSI_FINALS (so no DSR ``n``, DA ``c``, window ops ``t``, DECRQM ``$p``),
    modes only from PRIVATE_MODES and ANSI_MODES (no mouse, focus or paste
    reports, no keyboard lock or local echo), the ESC_FINALS escapes and
    charset designations. Dropped: every OSC, DCS, SOS, PM and APC string
    (whatever its length), every other escape and control character. A
    sequence split across reads is held back until it is whole.
    """

    def __init__(self, *, utf8: bool = True) -> None:
        self._utf8 = utf8
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._state = "text"  # text, esc, csi, charset, string, string-esc
        self._sequence = ""

    def feed(self, data: bytes) -> bytes:
        out: list[str] = []
        for ch in self._decoder.decode(data):
            self._step(ch, out)
        return "".join(out).encode()

    def _step(self, ch: str, out: list[str]) -> None:
        code = ord(ch)
        state = self._state
        if state == "text":
            if ch == "\x1b":
                self._state, self._sequence = "esc", ""
            elif code == 0x9B:
                self._state, self._sequence = "csi", ""
            elif code in (0x90, 0x98, 0x9D, 0x9E, 0x9F):  # DCS, SOS, OSC, PM, APC as C1
                self._state = "string"
            elif code < 0x20 or code == 0x7F:
                if code in KEPT_CONTROLS:
                    out.append(ch)
            elif code < 0x80:
                out.append(ch)
            elif ch.isprintable():  # not C1, not bidi overrides or other format characters
                # A terminal that is not in UTF-8 would read the bytes of some characters as C1 controls.
                out.append(ch if self._utf8 else "?")
        elif state == "esc":
            if ch == "[":
                self._state = "csi"
            elif ch in "]P^_X":
                self._state = "string"
            elif ch in CHARSETS:
                self._state, self._sequence = "charset", ch
            else:
                if ch in ESC_FINALS:
                    out.append("\x1b" + ch)
                self._state = "text"
        elif state == "charset":
            if ch.isalnum() and ch.isascii():
                out.append("\x1b" + self._sequence + ch)
            self._state = "text"
        elif state == "csi":
            if 0x40 <= code <= 0x7E:  # the final byte
                params = self._sequence
                if len(params) <= MAX_SEQUENCE and _allowed_csi(params, ch):
                    out.append("\x1b[" + params + ch)
                self._state = "text"
            elif 0x20 <= code <= 0x3F:
                if len(self._sequence) <= MAX_SEQUENCE:  # past it, only its length matters: it is dropped
                    self._sequence += ch
            else:  # a control inside: not a sequence to keep; it ends here
                self._state = "text"
        elif state == "string":  # ends at BEL, ST (ESC \) or C1 ST; its content is never shown
            if ch == "\a" or code == 0x9C:
                self._state = "text"
            elif ch == "\x1b":
                self._state = "string-esc"
        elif state == "string-esc":
            self._state = "text" if ch == "\\" else "string"


# --- a session ------------------------------------------------------------------------------------------------

def attach(fd: int, stdin: int, stdout: int, escape: int = ESCAPE, *, utf8: bool = True,
           announce: Callable[[], None] | None = None) -> str:
    """Copy stdin to the console and the console, filtered, to stdout until the escape byte; say why it ended.

    Never blocks on the guest: what is typed waits in a buffer (at most MAX_PENDING
    bytes; past that, typing is lost) until the console takes it, and stdin is read
    all along, so the escape byte works even when the guest stops reading (or set
    its terminal to refuse input). A terminal on stdin is put in raw mode for the
    session and restored after, whatever happens, with RESET written first; stdin
    that is no terminal ends the session at its end. ``announce`` runs once the
    terminal is raw: what is typed after it reads goes to the guest, none of it
    echoed or flushed by the local line discipline.
    """
    saved = None
    if os.isatty(stdin):
        saved = termios.tcgetattr(stdin)
        tty.setraw(stdin, termios.TCSANOW)  # not TCSAFLUSH: what was typed ahead goes to the guest
    if announce is not None:
        announce()
    shown = TerminalFilter(utf8=utf8)
    pending = b""
    ended: float | None = None  # stdin's end: what it typed still goes, for a little while
    try:
        while True:
            if ended is not None and (not pending or time.monotonic() > ended + INPUT_DRAIN):
                return "end of input"
            readers = [fd] if ended is not None else [fd, stdin]
            ready, writable, _ = select.select(readers, [fd] if pending else [], [], 0.2 if ended else None)
            if fd in ready:
                try:
                    data = os.read(fd, 1 << 14)
                except BlockingIOError:
                    data = None
                except OSError:  # EIO: the guest let go of its terminal
                    return "the guest closed its console"
                if data == b"":
                    return "the guest closed its console"
                if data:
                    _write_all(stdout, shown.feed(data))
            if fd in writable:
                try:
                    pending = pending[os.write(fd, pending):]
                except BlockingIOError:
                    pass
                except OSError:
                    return "the guest closed its console"
            if stdin in ready:
                typed = os.read(stdin, 1 << 12)
                if not typed:
                    ended = time.monotonic()
                    continue
                cut = typed.find(bytes([escape]))
                pending = (pending + (typed if cut < 0 else typed[:cut]))[:MAX_PENDING]
                if cut >= 0:
                    with contextlib.suppress(OSError):  # what came before the escape, if the guest takes it now
                        os.write(fd, pending)
                    return "detached"
    finally:
        if saved is not None:
            with contextlib.suppress(OSError):
                _write_all(stdout, RESET)
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)


def utf8_terminal(env: dict[str, str]) -> bool:
    """Whether the locale says the terminal speaks UTF-8 (LC_ALL, else LC_CTYPE, else LANG); else ASCII only."""
    chosen = next((env[k] for k in ("LC_ALL", "LC_CTYPE", "LANG") if env.get(k)), "")
    return chosen.lower().replace("-", "").endswith("utf8") or ".utf8@" in chosen.lower().replace("-", "")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
