"""The host layer's mconsole client and process logs, against hostile guests.

Fake guests are unix datagram servers in a thread (or a child running as nobody)
that answer like UML, or lie: short, oversized, endless or trickling replies,
none at all, a FIFO or a link where the socket should be. Logs are planted with
links, FIFOs, escape sequences and a 1 GiB sparse file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import pytest

from umlstate.host import logs
from umlstate.host.logs import RUN_MARK, failure_report, offset, open_for_child, read_since, sanitize, tail
from umlstate.host.mconsole import MAGIC, VERSION, MconsoleError, answers, command

IS_ROOT = os.geteuid() == 0
NOBODY = 65534
UML = "/usr/bin/linux.uml"


def root_only(test: Callable[..., None]) -> Callable[..., None]:
    """@pytest.mark.root, skipped when not root."""
    marked: Callable[..., None] = pytest.mark.root(pytest.mark.skipif(not IS_ROOT, reason="needs root")(test))
    return marked


# --- fake guests ------------------------------------------------------------------------------------------------

Behaviour = Callable[[socket.socket, str, bytes, threading.Event], None]


def part(text: bytes = b"", *, err: int = 0, more: int = 0, length: int | None = None) -> bytes:
    """One reply datagram as UML sends it: the header and len bytes (text plus its NUL)."""
    body = text + b"\0"
    return struct.pack("=III", err, more, len(body) if length is None else length) + body


class FakeGuest:
    """A datagram socket at ``path`` served by a thread that hands each request to ``behave``."""

    def __init__(self, path: Path, behave: Behaviour) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.behave = behave
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                request, addr = self.sock.recvfrom(1024)
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests.append(request)
            with contextlib.suppress(OSError):  # the client went away
                self.behave(self.sock, addr, request, self.stop)

    def __enter__(self) -> FakeGuest:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def uml_like(sock: socket.socket, addr: str, request: bytes, stop: threading.Event) -> None:
    magic, version, length = struct.unpack_from("=III", request)
    text = request[12:12 + length]
    if (magic, version) != (MAGIC, VERSION):
        sock.sendto(part(b"bad magic", err=1), addr)
    elif text == b"version":
        sock.sendto(part(b"Linux fake 6.1.0 #1 x86_64"), addr)
    elif text == b"long":  # two parts, as UML splits an answer over 511 bytes
        sock.sendto(part(b"a" * 511, more=1), addr)
        sock.sendto(part(b"b" * 10), addr)
    else:
        sock.sendto(part(b"unknown command \x1b]0;pwned\x07\x1b[2J", err=1), addr)


def two_bytes(sock: socket.socket, addr: str, request: bytes, stop: threading.Event) -> None:
    sock.sendto(b"\0\0", addr)


def length_lies(sock: socket.socket, addr: str, request: bytes, stop: threading.Event) -> None:
    sock.sendto(struct.pack("=III", 0, 0, 4096) + b"0123456789", addr)


def garbage(sock: socket.socket, addr: str, request: bytes, stop: threading.Event) -> None:
    sock.sendto(b"\xff" * 100, addr)


def more_forever(sock: socket.socket, addr: str, request: bytes, stop: threading.Event) -> None:
    while not stop.is_set():
        sock.sendto(part(b"x" * 100, more=1), addr)


def trickle(sock: socket.socket, addr: str, request: bytes, stop: threading.Event) -> None:
    while not stop.wait(0.3):
        sock.sendto(part(b"still here", more=1), addr)


def silent(sock: socket.socket, addr: str, request: bytes, stop: threading.Event) -> None:
    pass


@pytest.fixture
def guest_dir(tmp_path: Path) -> Path:
    """The guest user's umid folder."""
    folder = tmp_path / "user" / "t1"
    folder.mkdir(parents=True)
    return folder


def test_a_guest_that_answers_like_uml(guest_dir: Path) -> None:
    path = guest_dir / "mconsole"
    with FakeGuest(path, uml_like) as guest:
        assert command(str(path), "version", owner=os.getuid()) == "Linux fake 6.1.0 #1 x86_64"
        assert command(str(path), "long", owner=None) == "a" * 511 + "b" * 10
        assert answers(str(path), owner=os.getuid())
        with pytest.raises(MconsoleError) as refused:
            command(str(path), "frobnicate", owner=os.getuid())
    assert "the guest refused it: unknown command" in str(refused.value)
    assert "\x1b" not in str(refused.value) and "\x07" not in str(refused.value) and "pwned" not in str(refused.value)
    assert struct.unpack_from("=III", guest.requests[0]) == (MAGIC, VERSION, len("version"))
    assert len(guest.requests[0]) == 12 + 512


@pytest.mark.parametrize(("behave", "message"), [
    (two_bytes, "a reply of 2 bytes is too short"),
    (length_lies, "a reply claims 4096 bytes and holds 10"),
    (garbage, "a reply claims 4294967295 bytes"),
    (more_forever, "the reply has more than 64 parts"),
])
def test_a_lying_reply_is_an_mconsole_error_at_once(guest_dir: Path, behave: Behaviour, message: str) -> None:
    path = guest_dir / "mconsole"
    with FakeGuest(path, behave):
        start = time.monotonic()
        with pytest.raises(MconsoleError) as failed:
            command(str(path), "version", owner=os.getuid(), timeout=5)
        assert time.monotonic() - start < 1.0
        assert message in str(failed.value)
        assert not answers(str(path), owner=os.getuid())


def test_a_reply_bigger_than_max_bytes_is_refused(guest_dir: Path) -> None:
    path = guest_dir / "mconsole"
    with FakeGuest(path, uml_like), pytest.raises(MconsoleError, match="exceeds 520 bytes"):
        command(str(path), "long", owner=None, max_bytes=520)


def test_a_reply_that_trickles_in_forever_stops_at_the_overall_deadline(guest_dir: Path) -> None:
    path = guest_dir / "mconsole"
    with FakeGuest(path, trickle):
        start = time.monotonic()
        with pytest.raises(MconsoleError, match=r"no answer within 1s"):
            command(str(path), "version", owner=os.getuid(), timeout=1)
        assert 0.9 < time.monotonic() - start < 1.2


def test_no_reply_is_a_timeout(guest_dir: Path) -> None:
    path = guest_dir / "mconsole"
    with FakeGuest(path, silent):
        start = time.monotonic()
        with pytest.raises(MconsoleError, match=r"no answer within 0\.3s"):
            command(str(path), "version", owner=os.getuid(), timeout=0.3)
        assert time.monotonic() - start < 0.5
        assert not answers(str(path), owner=os.getuid(), timeout=0.2)


def refused_at_once(path: Path, owner: int | None, message: str) -> None:
    start = time.monotonic()
    with pytest.raises(MconsoleError, match=message):
        command(str(path), "halt", owner=owner, timeout=5)
    assert not answers(str(path), owner=owner, timeout=5)
    assert time.monotonic() - start < 0.2


def test_a_fifo_missing_or_stale_socket_is_refused_at_once(guest_dir: Path) -> None:
    os.mkfifo(guest_dir / "mconsole")
    refused_at_once(guest_dir / "mconsole", None, "is not a socket; refused")
    refused_at_once(guest_dir / "none", None, "No such file or directory")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(guest_dir / "stale"))
    stale.close()  # its file stays, with no one behind it
    refused_at_once(guest_dir / "stale", None, "Connection refused")
    refused_at_once(guest_dir / "bad\0path", None, "mconsole 'halt'")


def test_a_link_to_a_root_socket_is_not_followed(tmp_path: Path, guest_dir: Path) -> None:
    """The root daemon's socket (standing for /dev/log) receives nothing, through a linked socket or folder."""
    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    daemon.bind(str(tmp_path / "log"))
    daemon.setblocking(False)
    try:
        (guest_dir / "mconsole").symlink_to(tmp_path / "log")
        refused_at_once(guest_dir / "mconsole", None, "is a symbolic link; refused")
        (tmp_path / "user" / "linked").symlink_to(tmp_path)  # a umid folder that is a link to root's
        refused_at_once(tmp_path / "user" / "linked" / "log", None, "Not a directory")
        with pytest.raises(BlockingIOError):
            daemon.recv(1024)
    finally:
        daemon.close()


def test_a_socket_of_another_uid_is_refused(guest_dir: Path) -> None:
    path = guest_dir / "mconsole"
    with FakeGuest(path, uml_like) as guest:
        refused_at_once(path, os.getuid() + 1, f"belongs to uid {os.getuid()}, not to the guest's uid")
    assert guest.requests == []


def test_a_command_too_long_for_uml_is_refused(guest_dir: Path) -> None:
    with FakeGuest(guest_dir / "mconsole", uml_like) as guest:
        for text in ("x" * 512, "a\0b", "\udc80"):
            with pytest.raises(MconsoleError):
                command(str(guest_dir / "mconsole"), text, owner=None)
    assert guest.requests == []


@root_only
def test_a_guest_running_as_nobody_can_answer(guest_dir: Path) -> None:
    """The reply socket is given to the guest's uid, in a folder it can reach."""
    os.chown(guest_dir, NOBODY, NOBODY)
    path = guest_dir / "mconsole"
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the guest: binds as nobody, answers one request, leaves
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            os.write(ready_w, b"x")
            sock.settimeout(5)
            _, addr = sock.recvfrom(1024)
            sock.sendto(part(b"Linux nobody 6.1"), addr)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"x"
        assert os.stat(path).st_uid == NOBODY
        assert command(str(path), "version", owner=NOBODY) == "Linux nobody 6.1"
        with pytest.raises(MconsoleError, match="not to the guest's uid 0"):
            command(str(path), "version", owner=0)
    finally:
        os.close(ready_r)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid:  # state ppid pgrp session
                    members.append(int(entry.name))
    return members


@root_only
@pytest.mark.slow
def test_a_real_uml_guest_answers_and_halts(tmp_path: Path) -> None:
    if not os.access(UML, os.X_OK):
        pytest.skip(f"{UML} is missing: apt-get install user-mode-linux")
    if not (shutil.which("busybox") or os.path.exists("/bin/busybox")):
        pytest.skip("busybox is missing: the guest image needs it")
    from umlstate.guestimage import build

    image = build(tmp_path / "disk.img")
    os.chown(image, NOBODY, NOBODY)
    (tmp_path / "uml").mkdir()
    os.chown(tmp_path / "uml", NOBODY, NOBODY)
    sock = tmp_path / "uml" / "t1" / "mconsole"

    def become_nobody() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    with open(tmp_path / "console.log", "wb") as console:
        guest = subprocess.Popen(
            [UML, "umid=t1", f"uml_dir={tmp_path}/uml", "mem=96M", f"ubd0={image}", "con=null", "con0=null,fd:1"],
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "HOME": "/", "TMPDIR": "/tmp"}, start_new_session=True,
            preexec_fn=become_nobody,  # noqa: PLW1509 - nothing else runs in the child before exec
        )
    try:
        deadline = time.monotonic() + 60
        while not answers(str(sock), owner=NOBODY):
            assert guest.poll() is None, (tmp_path / "console.log").read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the guest's mconsole never answered"
            time.sleep(0.2)
        version = command(str(sock), "version", owner=NOBODY)
        assert re.search(r"\b\d+\.\d+\.\d+", version), version
        with contextlib.suppress(MconsoleError):  # the guest may be gone before its reply is
            command(str(sock), "halt", owner=NOBODY, timeout=5)
        assert guest.wait(30) is not None
        deadline = time.monotonic() + 10
        while session_members(guest.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session_members(guest.pid) == [], "halt left processes of the guest behind"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(guest.pid, signal.SIGKILL)  # our own session's group only
        guest.wait(10)


# --- logs -------------------------------------------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path: Path) -> Iterator[int]:
    """The logs folder as the fd the caller would have opened safely."""
    (tmp_path / "logs").mkdir(mode=0o755)
    fd = os.open(tmp_path / "logs", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def write_run(folder: int, name: str, output: str, argv: tuple[str, ...] = ("linux.uml", "mem=64M")) -> None:
    fd = open_for_child(folder, name, argv)
    try:
        os.write(fd, output.encode())
    finally:
        os.close(fd)


def test_a_log_is_root_s_append_only_and_inherited_blocking(tmp_path: Path, folder: int) -> None:
    fd = open_for_child(folder, "web", ("linux.uml", "mem=64M"))
    try:
        assert not os.get_inheritable(fd), "close-on-exec: only the child it is given to gets it"
        assert os.get_blocking(fd), "O_NONBLOCK was for the open only"
        subprocess.run(["sh", "-c", "echo from the child"], stdout=fd, check=True)
    finally:
        os.close(fd)
    st = os.stat(tmp_path / "logs" / "web.log")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o640)
    text = (tmp_path / "logs" / "web.log").read_text()
    assert re.fullmatch(rf"{re.escape(RUN_MARK)}\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d starting linux.uml mem=64M\n"
                        "from the child\n", text)
    with pytest.raises(Exception, match="not a log name"):
        open_for_child(folder, "../etc", ("x",))


def test_a_log_over_max_log_is_rotated_at_the_next_open(tmp_path: Path, folder: int,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_LOG", 100)
    write_run(folder, "web", "one\n" * 50)
    write_run(folder, "web", "two\n" * 50)
    assert "one" in (tmp_path / "logs" / "web.log.1").read_text()
    write_run(folder, "web", "three\n")
    rotated = (tmp_path / "logs" / "web.log.1").read_text()
    assert "two" in rotated and "one" not in rotated, "the older rotation is replaced"
    current = (tmp_path / "logs" / "web.log").read_text()
    assert current.count(RUN_MARK) == 1 and current.endswith("three\n")


def test_a_running_process_log_is_capped_while_it_keeps_writing(tmp_path: Path, folder: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest that prints without end: each root pass cuts its log, and its own writes go on at the new end."""
    monkeypatch.setattr(logs, "MAX_LOG", 1000)
    monkeypatch.setattr(logs, "TAIL", 100)
    fd = open_for_child(folder, "web", ("linux.uml",))  # the child's descriptor, O_APPEND
    try:
        os.write(fd, b"x" * 5000 + b"last words\n")
        assert logs.cap(folder, "web")
        assert (tmp_path / "logs" / "web.log").read_bytes() == b""
        kept = (tmp_path / "logs" / "web.log.1").read_bytes()
        assert len(kept) == 100 and kept.endswith(b"last words\n")
        os.write(fd, b"still here\n")
        assert (tmp_path / "logs" / "web.log").read_bytes() == b"still here\n", "appends land at the new end"
        assert not logs.cap(folder, "web"), "a small log is left alone"
    finally:
        os.close(fd)


def test_a_1_gib_sparse_log_costs_only_its_tail(tmp_path: Path, folder: int) -> None:
    path = tmp_path / "logs" / "web.log"
    with open(path, "wb") as f:
        f.write(f"{RUN_MARK}2026-11-24 starting linux.uml\n".encode())
        f.truncate(1 << 30)
        f.seek(1 << 30)
        f.write(f"\n{RUN_MARK}2026-11-24 starting linux.uml\nKernel panic - not syncing: Out of memory\n".encode())
    tracemalloc.start()
    try:
        start = time.monotonic()
        report = failure_report(folder, "web")
        seconds = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < 0.5 and peak < 1 << 20, (seconds, peak)
    assert report.splitlines()[1:] == ["    | Kernel panic - not syncing: Out of memory",
                                       "  hint: the guest ran out of memory: raise mem (a UML 6.1 guest needs 64M at the "
                                       "very least)"]
    assert len(tail(folder, "web", max_bytes=1000)) <= 1000
    assert offset(folder, "web") == (1 << 30) + len(f"\n{RUN_MARK}2026-11-24 starting linux.uml\n"
                                                    "Kernel panic - not syncing: Out of memory\n")


HOSTILE = ("\x1b[2J\x1b[Hcleared \x1b]0;root@host: owned\x07title \x1b]2;other\x1b\\st\r\n"
           "bell\x07 \x1b[31mred\x1b[0m \x9b2Jc1 \x1bcreset \u202eevil\u202c \x00nul \x08back\r\n"
           "héllo ✓ 日本\ttab \x1b]8;;http://x\x07open and never closed \x1b]0;unterminated\n"
           "Kernel panic - not syncing: \x1b[1mboom\x1b[0m\n")
CLEAN = ("cleared title st\n"
         "bell red c1 reset evil nul back\n"
         "héllo ✓ 日本\ttab open and never closed \n"
         "Kernel panic - not syncing: boom\n")


def test_escape_sequences_and_control_characters_never_reach_the_terminal(folder: int) -> None:
    assert sanitize(HOSTILE) == CLEAN
    start = offset(folder, "web")
    write_run(folder, "web", HOSTILE)
    for text in (tail(folder, "web"), read_since(folder, "web", start), failure_report(folder, "web")):
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", text), repr(text)
        assert "owned" not in text and "unterminated" not in text and "http" not in text
        assert "héllo ✓ 日本" in text and "Kernel panic - not syncing: boom" in text


def test_a_fifo_or_link_at_the_log_name_is_not_read_and_is_replaced(tmp_path: Path, folder: int) -> None:
    logs_dir = tmp_path / "logs"
    target = tmp_path / "secret"
    target.write_text("root's secret\n")
    os.mkfifo(logs_dir / "fifo.log")
    (logs_dir / "link.log").symlink_to(target)
    start = time.monotonic()
    for name in ("fifo", "link"):
        assert tail(folder, name) == "" and read_since(folder, name, 0) == ""
        assert failure_report(folder, name).startswith(f"(no readable log at {logs_dir / name}.log: ")
        assert offset(folder, name) == 0
        write_run(folder, name, "fresh\n")
        st = os.lstat(logs_dir / f"{name}.log")
        assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
        assert tail(folder, name).endswith("fresh\n")
    assert time.monotonic() - start < 1.0
    assert target.read_text() == "root's secret\n", "the link's target is untouched"


@root_only
def test_a_log_another_user_owns_or_links_to_is_replaced(tmp_path: Path, folder: int) -> None:
    logs_dir = tmp_path / "logs"
    (logs_dir / "web.log").write_text("planted\n")
    os.chown(logs_dir / "web.log", NOBODY, NOBODY)
    os.link(logs_dir / "web.log", tmp_path / "elsewhere")  # a second name: not a log root made
    write_run(folder, "web", "fresh\n")
    assert os.stat(logs_dir / "web.log").st_uid == 0
    assert "planted" not in (logs_dir / "web.log").read_text()
    assert (tmp_path / "elsewhere").read_text() == "planted\n"


def test_read_since_reads_only_the_new_boot(tmp_path: Path, folder: int, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run(folder, "web", "Kernel panic - not syncing: the old boot\n")
    start = offset(folder, "web")
    write_run(folder, "web", "the new boot\n")
    since = read_since(folder, "web", start)
    assert since.startswith(RUN_MARK) and since.endswith("the new boot\n") and "old boot" not in since
    assert read_since(folder, "web", offset(folder, "web")) == ""
    assert read_since(folder, "none", 0) == ""
    # The next open rotated the log: everything in the new file is the new boot's.
    monkeypatch.setattr(logs, "MAX_LOG", 10)
    start = offset(folder, "web")
    write_run(folder, "web", "after rotation\n")
    assert read_since(folder, "web", start).endswith("after rotation\n")


def test_a_failure_report_reads_only_the_latest_start_and_skips_stack_frames(tmp_path: Path, folder: int) -> None:
    log = tmp_path / "logs" / "web.log"
    frames = "".join(f" [<6006{i:04x}>] ? some_function+0x0/0x16\n" for i in range(30))
    log.write_text(
        f"{RUN_MARK}2026-11-24 10:00:00 starting linux.uml mem=32M\n"
        "Kernel panic - not syncing: System is deadlocked on memory\n" + frames +
        f"{RUN_MARK}2026-11-24 10:05:00 starting linux.uml mem=64M\n"
        "Core identification\n" + "".join(f"boot line {i}\n" for i in range(12)) +
        "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(98,0)\n" + frames)
    report = failure_report(folder, "web")
    lines = report.splitlines()
    assert lines[0] == f"the end of its log ({log}):"
    assert lines[1:-2] == [f"    | boot line {i}" for i in range(5, 12)]
    assert lines[-2] == "    | Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(98,0)"
    assert "[<" not in report, "stack frames are left out"
    assert "deadlocked" not in report and "mem is too small" not in report, "an older start explains nothing"
    assert lines[-1] == "  hint: the disk image is not a file system the kernel can mount as root"


def test_a_failure_report_keeps_an_early_panic_and_clips_long_lines(tmp_path: Path, folder: int) -> None:
    write_run(folder, "web", "Kernel panic - not syncing: early\n" + "".join(f"line {i}\n" for i in range(20)) +
              "x" * 10_000 + "\n")
    lines = failure_report(folder, "web").splitlines()
    assert lines[1:3] == ["    | Kernel panic - not syncing: early", "    | ..."]
    assert lines[-1] == "    | " + "x" * logs.LINE_WIDTH + " [...]"
    write_run(folder, "web", "y" * 100_000 + "\n")  # longer than the tail: its end is all there is
    assert failure_report(folder, "web").splitlines()[1:] == ["    | " + "y" * logs.LINE_WIDTH + " [...]"]


def test_a_failure_report_of_an_empty_or_missing_log(tmp_path: Path, folder: int) -> None:
    assert failure_report(folder, "none") == f"(no log at {tmp_path / 'logs' / 'none.log'})"
    (tmp_path / "logs" / "empty.log").write_text(f"{RUN_MARK}2026-11-24 starting uml_switch\n")
    assert failure_report(folder, "empty").endswith("    | (empty)")


def test_a_root_device_that_cannot_be_opened_for_lack_of_memory_is_not_blamed_on_the_image(
        tmp_path: Path, folder: int) -> None:
    """Seen in the benchmark: ENOMEM opening ubda, then the generic 'Unable to mount root' panic."""
    (tmp_path / "logs" / "g0.log").write_text(
        f"{RUN_MARK}2026-11-24 starting linux.uml mem=64M\n"
        'VFS: Cannot open root device "98:0" or unknown-block(98,0): error -12\n'
        "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(98,0)\n")
    assert failure_report(folder, "g0").endswith(
        "hint: the guest ran out of memory: raise mem (a UML 6.1 guest needs 64M at the very least)")


def test_a_line_is_sanitized_alone_as_within_a_log() -> None:
    """One hostile piece at a time (a log event's value is often one short word): none slips past."""
    for piece, clean in (("\u202eevil", "evil"), ("\x9b2Jx", "x"), ("\x1b]0;t\x07x", "x"), ("a\x00b", "ab"),
                         ("\x1bcx", "x"), ("plain words ✓", "plain words ✓")):
        assert sanitize(piece) == clean, repr(piece)
