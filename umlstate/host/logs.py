"""Process logs: owned by root, capped, read from the end only, printed clean (host layer).

Each switch or guest writes its console and stdout to ``<state_dir>/logs/<name>.log``
through a file descriptor that root opens here and the child inherits: the child
never opens its log by path, so it cannot point it at another file. Everything in
a log after its RUN_MARK line is the guest's to choose, so reading one is bounded
(the last TAIL bytes, whatever the file's size, sparse or not) and what is shown
to root is sanitized (no terminal escape sequences, no control characters).

Every function takes the logs folder as a directory file descriptor that the
caller opened safely; names are resolved inside it, and links are never followed.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time

from umlstate.errors import ActionError, InternalError
from umlstate.host import trusted
from umlstate.host.safefs import Dir

RUN_MARK = "--- umlstate: "
LOGS_DIR = "logs"  # below state_dir: root's, 0750
MAX_LOG = 8 << 20  # a log larger than this is rotated at the next open: <name>.log -> <name>.log.1
TAIL = 64 << 10  # what reading a log ever looks at: its last 64 KiB
LINE_WIDTH = 400  # one line of a report, at most: a guest may print 64 KiB without a newline

PANIC = "Kernel panic - not syncing"  # how every Linux panic begins, UML's included
STACK_FRAME = re.compile(r"^(<\d>)?\s*\[<[0-9a-f]+>\]")  # with or without a printk level
HINTS = (  # what a log usually means, first match wins
    (re.compile(r"deadlocked on memory|Out of memory|Too few physical memory|Failed to allocate"
                r"|Cannot open root device .* error -12"),  # ENOMEM while opening the disk, too
     "the guest ran out of memory: raise mem (a UML 6.1 guest needs 64M at the very least)"),
    (re.compile(r"Failed to open /dev/net/tun|open tun", re.IGNORECASE),
     "the process's user cannot open the tun device; declare host.tun with a group it is in"),
    (re.compile(r"bind: Permission denied"), "the process's user cannot create its socket in run_dir"),
    (re.compile(r"VFS: Unable to mount root"), "the disk image is not a file system the kernel can mount as root"),
)

# A guest told IPv6 addresses whose kernel has no IPv6 says so, with the kernel's version (umlstate's busybox
# init and contrib/guest's umlstate-net): Debian's 6.1 UML kernel builds IPv6 as a module, which only the guest's
# image can carry. The guest's own word: it can only make a warning.
NO_IPV6 = re.compile(r"^(?:\[[ 0-9.]*\] )?umlstate: no IPv6 in kernel ([0-9][0-9A-Za-z._+-]{0,63})$", re.MULTILINE)

# O_NONBLOCK: a FIFO planted at the name must not block the open; O_NOCTTY: nor may a tty become ours.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_WRITE = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

# Terminal escape sequences, 7-bit and 8-bit (C1). String sequences (OSC, DCS, SOS, PM, APC) end at BEL or
# ST; one left open ends at the end of its line here, so that a lone ESC ] cannot hide the rest of a log.
_ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: ESC [ 2 J, colours, cursor moves
    r"|\x9b[0-?]*[ -/]*[@-~]"  # CSI as one C1 character
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\n]*?(?:\x07|\x1b\\|\x9c|(?=\n)|\Z)"  # OSC, DCS, SOS, PM, APC
    r"|\x1b[ -/]*[0-~]"  # the other escapes: charset selection, ESC c (reset), ESC 7 / ESC 8
)


def _log_name(name: str) -> str:
    # Names come from the validated topology; a slash here would leave the folder, so it is a bug.
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise InternalError(f"not a log name: {name!r}")
    return f"{name}.log"


def _ours(st: os.stat_result) -> bool:
    """A log root may write to: a regular file of root's (our euid), with no other name a user made."""
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_nlink == 1


def _lstat(folder_fd: int, file: str) -> os.stat_result | None:
    try:
        return os.stat(file, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(folder_fd: int, file: str, st: os.stat_result) -> None:
    try:
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(file, dir_fd=folder_fd)
        else:
            os.unlink(file, dir_fd=folder_fd)  # a link itself, never what it points to
    except FileNotFoundError:
        pass


def open_for_child(folder_fd: int, name: str, argv: tuple[str, ...]) -> int:
    """Open ``<name>.log`` for a child to inherit as stdout and stderr; return the fd (close-on-exec).

    Rotates a log over MAX_LOG to ``<name>.log.1`` first. Anything at the name that root
    did not make (a link, a FIFO, a device, another user's file) is removed, not opened,
    and a fresh file takes its place: root never writes through a name someone else chose.
    """
    file = _log_name(name)
    try:
        st = _lstat(folder_fd, file)
        cleared = st is not None  # once the name was cleared, only a file made by this very open will do
        if st is not None and not _ours(st):
            _remove(folder_fd, file, st)
        elif st is not None and st.st_size > MAX_LOG:
            # renameat replaces the older rotation; if something odd stands there, drop the log instead.
            try:
                os.rename(file, f"{file}.1", src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
            except OSError:
                _remove(folder_fd, file, st)
        else:
            cleared = False
        fd = os.open(file, _WRITE | (os.O_EXCL if cleared else 0), 0o640, dir_fd=folder_fd)
        try:
            if not _ours(os.fstat(fd)):  # something raced in between the lstat and the open
                os.close(fd)
                fd = -1
                os.unlink(file, dir_fd=folder_fd)
                fd = os.open(file, _WRITE | os.O_EXCL, 0o640, dir_fd=folder_fd)
            os.fchmod(fd, 0o640)  # whatever the umask, and whatever mode an older version left
            # O_NONBLOCK was only for the open; the child must not inherit it on its stdout.
            os.set_blocking(fd, True)
            os.write(fd, f"{RUN_MARK}{time.strftime('%Y-%m-%d %H:%M:%S')} starting {' '.join(argv)}\n".encode())
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
    except OSError as exc:
        raise ActionError(f"cannot open the log {_shown(folder_fd, file)}: {exc.strerror or exc}") from None
    return fd


def over_cap(folder_fd: int, name: str) -> bool:
    """The log is root's and longer than MAX_LOG: the next pass cuts it."""
    st = _lstat(folder_fd, _log_name(name))
    return st is not None and _ours(st) and st.st_size > MAX_LOG


def cap(folder_fd: int, name: str) -> bool:
    """Keep a running process's log under MAX_LOG: its last TAIL bytes go to <name>.log.1, the log restarts empty.

    The process writes with O_APPEND through the descriptor it inherited, so its next
    write lands at the new end; nothing it could plant is followed (the log is root's).
    Every pass of a root run calls this, so a guest that prints without end never fills
    state_dir between two starts. True when the log was cut.
    """
    if not over_cap(folder_fd, name):
        return False
    file = _log_name(name)
    fd = os.open(file, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=folder_fd)
    try:
        now = os.fstat(fd)
        if not _ours(now):
            return False
        tail = os.pread(fd, TAIL, max(0, now.st_size - TAIL))
        kept = f"{file}.1"
        temporary = f".{file}.1.new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=folder_fd)
        out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640,
                      dir_fd=folder_fd)
        try:
            os.write(out, tail)
        finally:
            os.close(out)
        os.rename(temporary, kept, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    return True


def modified(folder_fd: int, name: str) -> float | None:
    """When the process's log was last written (root's file, never followed): about when it stopped."""
    try:
        st = _lstat(folder_fd, _log_name(name))
    except OSError:
        return None
    return st.st_mtime if st is not None and stat.S_ISREG(st.st_mode) else None


def offset(folder_fd: int, name: str) -> int:
    """The log's current size: where the output of a process started now will begin."""
    try:
        st = _lstat(folder_fd, _log_name(name))
    except OSError:
        return 0
    return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0


def _read_end(folder_fd: int, file: str, start: int, max_bytes: int) -> str:
    """The bytes from ``start`` on, at most the last ``max_bytes`` of them, decoded; raises OSError.

    Only the end is ever read (pread at size - max_bytes), so the cost does not grow with the
    file. A file smaller than ``start`` was rotated or truncated since: all of it is new.
    """
    fd = os.open(file, _READ, dir_fd=folder_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file")
        size = st.st_size
        start = 0 if start > size else max(start, 0)
        begin = max(start, size - max(max_bytes, 0))
        data = os.pread(fd, size - begin, begin) if size > begin else b""
    finally:
        os.close(fd)
    text = data.decode(errors="replace")
    cut = text.find("\n")
    if begin > start and 0 <= cut < len(text) - 1:
        text = text[cut + 1:]  # cut in the middle of a line: drop its end, unless it is all there is
    return text


def read_since(folder_fd: int, name: str, start: int, max_bytes: int = TAIL) -> str:
    """What was written since ``start`` (an earlier offset()), at most its last max_bytes, sanitized.

    An unreadable log (missing, not a regular file) reads as nothing.
    """
    try:
        return sanitize(_read_end(folder_fd, _log_name(name), start, max_bytes))
    except OSError:
        return ""


def _latest_run(text: str) -> str:
    """From the last RUN_MARK line on (only a mark at the start of a line counts)."""
    at = text.rfind("\n" + RUN_MARK)
    return text[at + 1:] if at >= 0 else text


def tail(folder_fd: int, name: str, max_bytes: int = TAIL) -> str:
    """The latest run (from the last RUN_MARK within the last max_bytes), sanitized; "" when unreadable."""
    try:
        return sanitize(_latest_run(_read_end(folder_fd, _log_name(name), 0, max_bytes)))
    except OSError:
        return ""


def lacks_ipv6(run: str) -> str | None:
    """The kernel version a guest's run (``tail``) said has no IPv6, if it said so."""
    said = NO_IPV6.search(run)
    return said[1] if said else None


def sanitize(text: str) -> str:
    """Safe to print to root's terminal: no escape sequences, no control characters but newline and tab.

    Printable unicode stays (str.isprintable: letters, marks, symbols, the space); format characters such
    as bidi overrides go, since they can make a line read as something it is not.
    """
    if text.isprintable():  # no escape (ESC is a control character), nothing to drop: most lines, at C speed
        return text
    text = _ESCAPE.sub("", text)
    return "".join(ch for ch in text if ch.isprintable() or ch in "\n\t")


def _shown(folder_fd: int, file: str) -> str:
    """The log's path, for messages only (never opened by it)."""
    try:
        return os.path.join(os.readlink(f"/proc/self/fd/{folder_fd}"), file)
    except OSError:
        return file


def failure_report(folder_fd: int, name: str, lines: int = 8) -> str:
    """The end of a process's log from its latest start, and what it usually means.

    Logs are appended across starts (each begins with RUN_MARK), so only the
    latest run is read: an old panic must not explain a new failure. Reads the
    last TAIL bytes at most, and prints nothing of the guest's unsanitized.
    """
    file = _log_name(name)
    shown = sanitize(_shown(folder_fd, file))
    try:
        text = _read_end(folder_fd, file, 0, TAIL)
    except FileNotFoundError:
        return f"(no log at {shown})"
    except OSError as exc:
        return f"(no readable log at {shown}: {exc.strerror or exc})"
    run = sanitize(_latest_run(text))
    report = f"the end of its log ({shown}):\n" + "\n".join("    | " + line for line in _last_lines(run, lines)
                                                             or ["(empty)"])
    for pattern, hint in HINTS:
        if pattern.search(run):
            report += f"\n  hint: {hint}"
            break
    return report


def last_words(folder_fd: int, name: str, lines: int = 8) -> tuple[str | None, tuple[str, ...]]:
    """A dead guest's panic line, if its latest run has one, and that run's last lines; sanitized.

    The panic line is the kernel's, unless the guest's user wrote it there: it
    only ever labels a guest whose process is gone, which root saw for itself.
    """
    try:
        run = sanitize(_latest_run(_read_end(folder_fd, _log_name(name), 0, TAIL)))
    except OSError:
        return None, ()
    kept = _kept(run)
    at = next((i for i, line in enumerate(kept) if PANIC in line), None)
    if at is None:
        return None, tuple(kept[-lines:])
    # What led to the panic, not the stack dump after it.
    return kept[at][kept[at].index(PANIC):], tuple(kept[max(0, at + 1 - lines):at + 1])


def _kept(run: str) -> list[str]:
    """A run's lines but its RUN_MARK, blank lines and kernel stack frames, clipped."""
    body = run.splitlines()
    if body and body[0].startswith(RUN_MARK):
        body = body[1:]
    return [_clip(line) for line in body if line.strip() and not STACK_FRAME.match(line)]


def _last_lines(run: str, lines: int) -> list[str]:
    """A run's last lines but its RUN_MARK and kernel stack frames, which push the line that matters
    ("Kernel panic - not syncing: ...") out of view; that line is kept whenever there is one."""
    kept = _kept(run)
    shown = kept[-lines:]
    panic = next((line for line in kept if PANIC in line), None)
    if panic and panic not in shown:
        shown = [panic, "...", *shown[2:]]
    return shown


def _clip(line: str) -> str:
    return line if len(line) <= LINE_WIDTH else line[:LINE_WIDTH] + " [...]"


def open_folder(state_dir: str) -> Dir | None:
    """state_dir/logs to read from, checked like any trusted folder; None before the first apply made it."""
    try:
        with trusted.open_trusted(state_dir) as state:
            return state.sub(LOGS_DIR)
    except FileNotFoundError:
        return None
