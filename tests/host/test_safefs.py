"""umlstate.host.safefs against a hostile user: real files, real users, real attacks.

Most tests need root: they make a throwaway user (umlst-*, removed at the end), give it a folder
like the ones umlstate gives users inside run_dir, and plant links, FIFOs, hard links and huge
files there from a child process running as that user, exactly as the user would. Then root acts
through safefs, and the test checks that nothing outside the user's folder changed and that no call
hung. Every test runs under a watchdog, so a hang fails the test instead of the run.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest

from umlstate.host import safetree
from umlstate.host.safefs import Dir, UnsafePath, read_bounded, read_tail
from umlstate.host.trusted import check_trusted_folder

KiB = 1024
GiB = 1 << 30


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


# --- harness ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _root_only(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip("needs root: users, chown, device nodes")


@pytest.fixture(autouse=True)
def _watchdog() -> Iterator[None]:
    """A call that hangs fails its test after 20 s instead of blocking the run."""
    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError("safefs call hung")
    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 20)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a user")
    name = f"umlst-{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        pw = pwd.getpwnam(name)
        yield User(name, pw.pw_uid, pw.pw_gid)
    finally:
        subprocess.run(["userdel", name], check=True)


@pytest.fixture
def tmp() -> Iterator[str]:
    """A root folder under sticky /tmp, mode 0755: trusted, like run_dir."""
    path = tempfile.mkdtemp(prefix="umlst-safefs-", dir="/tmp")
    try:
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def home(tmp: str, user: User) -> str:
    """The user's own folder, as umlstate makes it in run_dir: tmp/users/<user>, theirs, mode 0755."""
    path = os.path.join(tmp, "users", user.name)
    os.makedirs(path, 0o755)
    os.chown(path, user.uid, user.gid)
    return path


def spawn_as(user: User, attack: Callable[[], None]) -> int:
    """Run `attack` in a child process with the user's ids and no extra groups; returns its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
            attack()
            code = 0
        except BaseException:  # noqa: BLE001 - the child reports and exits; it must never unwind into pytest
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def join(pid: int, timeout: float = 10.0) -> None:
    """Wait for the user's process; one still running after `timeout` is killed, and the test fails."""
    deadline = time.monotonic() + timeout
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the user's process did not end; killed")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(done[1]) == 0, "the user's steps failed (see captured stderr)"


def as_user(user: User, attack: Callable[[], None]) -> None:
    join(spawn_as(user, attack))


def write(path: str, data: bytes, mode: int = 0o644) -> None:
    Path(path).write_bytes(data)
    os.chmod(path, mode)


def fingerprint(path: str) -> tuple[int, int, int, bytes | None]:
    """Owner, group, mode and content (files only) of what `path` names, without following a link."""
    st = os.lstat(path)
    content = Path(path).read_bytes() if stat.S_ISREG(st.st_mode) else None
    return st.st_uid, st.st_gid, st.st_mode, content


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@contextlib.contextmanager
def quickly(seconds: float) -> Iterator[None]:
    start = time.monotonic()
    yield
    assert time.monotonic() - start < seconds


# --- check_trusted_folder --------------------------------------------------------------------


@pytest.mark.root
def test_trusted_root_chain_passes_also_with_a_missing_tail(tmp: str) -> None:
    os.makedirs(f"{tmp}/a/b", 0o755)
    check_trusted_folder(f"{tmp}/a/b", "run_dir")
    check_trusted_folder(f"{tmp}/a/b/not/yet", "run_dir")


@pytest.mark.root
def test_trusted_refuses_a_user_folder_naming_it(tmp: str, user: User) -> None:
    os.makedirs(f"{tmp}/a/b", 0o755)
    os.chown(f"{tmp}/a", user.uid, user.gid)
    with pytest.raises(UnsafePath) as e:
        check_trusted_folder(f"{tmp}/a/b", "run_dir")
    msg = str(e.value)
    assert "run_dir" in msg and f"{tmp}/a is owned by {user.name}" in msg and f"chown root:root {tmp}/a" in msg


@pytest.mark.root
def test_trusted_refuses_group_writable(tmp: str) -> None:
    os.mkdir(f"{tmp}/a")
    os.chmod(f"{tmp}/a", 0o775)
    with pytest.raises(UnsafePath, match=r"mode 0775.*\n.*chmod go-w"):
        check_trusted_folder(f"{tmp}/a/b", "state_dir")


@pytest.mark.root
def test_trusted_crosses_sticky_tmp_but_not_into_it(tmp: str) -> None:
    check_trusted_folder(tmp, "run_dir")  # root's folder under /tmp (1777)
    with pytest.raises(UnsafePath, match="others could write in it"):
        check_trusted_folder("/tmp", "run_dir")
    with pytest.raises(UnsafePath, match="another user could create"):  # could be made first by a user
        check_trusted_folder(f"/tmp/umlst-missing-{secrets.token_hex(4)}", "run_dir")


@pytest.mark.root
def test_trusted_refuses_a_user_folder_under_tmp(user: User) -> None:
    path = tempfile.mkdtemp(prefix="umlst-safefs-", dir="/tmp")
    try:
        os.chown(path, user.uid, user.gid)
        with pytest.raises(UnsafePath, match=user.name):
            check_trusted_folder(f"{path}/run", "run_dir")
    finally:
        shutil.rmtree(path)


@pytest.mark.root
def test_trusted_refuses_a_user_symlink_on_the_path(tmp: str, user: User) -> None:
    os.mkdir(f"{tmp}/real")
    os.symlink("real", f"{tmp}/ln")
    os.lchown(f"{tmp}/ln", user.uid, user.gid)
    with pytest.raises(UnsafePath, match=rf"{tmp}/ln is owned by {user.name}.*\n.*chown -h"):
        check_trusted_folder(f"{tmp}/ln/run", "run_dir")


@pytest.mark.root
def test_trusted_follows_root_symlinks_and_checks_their_target(tmp: str, user: User) -> None:
    os.makedirs(f"{tmp}/real/run", 0o755)
    os.symlink("real", f"{tmp}/rel")
    os.symlink(f"{tmp}/real", f"{tmp}/abs")
    check_trusted_folder(f"{tmp}/rel/run", "run_dir")
    check_trusted_folder(f"{tmp}/abs/run/later", "run_dir")
    os.mkdir(f"{tmp}/theirs")
    os.chown(f"{tmp}/theirs", user.uid, user.gid)
    os.symlink(f"{tmp}/theirs", f"{tmp}/to-theirs")
    with pytest.raises(UnsafePath, match=f"{tmp}/theirs is owned by {user.name}"):
        check_trusted_folder(f"{tmp}/to-theirs", "run_dir")
    os.symlink("loop-b", f"{tmp}/loop-a")
    os.symlink("loop-a", f"{tmp}/loop-b")
    with pytest.raises(UnsafePath, match="symbolic links"):
        check_trusted_folder(f"{tmp}/loop-a", "run_dir")


def test_trusted_and_dir_refuse_relative_paths() -> None:
    with pytest.raises(UnsafePath, match="absolute"):
        check_trusted_folder("var/run", "run_dir")
    with pytest.raises(UnsafePath, match="absolute"):
        Dir.open("var/run")
    with pytest.raises(UnsafePath, match="absolute"):
        read_bounded("etc/passwd", 10)


# --- Dir.open and sub ------------------------------------------------------------------------


@pytest.mark.root
def test_open_refuses_a_planted_symlink_and_creates_nothing_behind_it(home: str, user: User) -> None:
    as_user(user, lambda: os.symlink("/etc", f"{home}/uml"))
    probe = f"/etc/umlst-{secrets.token_hex(4)}"
    before = os.stat("/etc").st_mtime_ns
    try:
        with pytest.raises(UnsafePath, match=f"{home}/uml is a link"):
            Dir.open(f"{home}/uml/{os.path.basename(probe)}/sock", create=True)
        assert not os.path.lexists(probe) and os.stat("/etc").st_mtime_ns == before
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(probe)


@pytest.mark.root
def test_open_creates_missing_folders_with_their_mode_whatever_the_umask(tmp: str) -> None:
    with umask(0o077), Dir.open(f"{tmp}/a/b", create=True, mode=0o750) as d:
        assert d.path == f"{tmp}/a/b"
    for path in (f"{tmp}/a", f"{tmp}/a/b"):
        st = os.stat(path)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o750)
    assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o755  # folders already there keep their mode
    write(f"{tmp}/file", b"")
    with pytest.raises(UnsafePath, match=r"is a file .* expects a folder"):
        Dir.open(f"{tmp}/file/x")


@pytest.mark.root
def test_sub_gives_a_folder_to_its_user_new_or_existing(tmp: str, user: User) -> None:
    os.makedirs(f"{tmp}/users/old", 0o755)
    with Dir.open(tmp) as run, run.sub("users") as users:
        users.sub("new", create=True, mode=0o700, uid=user.uid, gid=user.gid).close()
        users.sub("old", mode=0o750, uid=user.uid, gid=user.gid).close()
    assert fingerprint(f"{tmp}/users/new")[:3] == (user.uid, user.gid, stat.S_IFDIR | 0o700)
    assert fingerprint(f"{tmp}/users/old")[:3] == (user.uid, user.gid, stat.S_IFDIR | 0o750)


@pytest.mark.root
def test_sub_never_chowns_through_a_planted_symlink(tmp: str, home: str, user: User) -> None:
    os.mkdir(f"{tmp}/victim", 0o755)
    write(f"{tmp}/secret", b"root only", 0o600)
    before = fingerprint(f"{tmp}/victim"), fingerprint(f"{tmp}/secret")

    def plant() -> None:
        os.symlink(f"{tmp}/victim", f"{home}/uml")
        os.symlink(f"{tmp}/secret", f"{home}/sock")
    as_user(user, plant)
    with Dir.open(home) as d:
        for name in ("uml", "sock"):
            with pytest.raises(UnsafePath, match="is a link"):
                d.sub(name, create=True, mode=0o777, uid=user.uid, gid=user.gid)
    assert (fingerprint(f"{tmp}/victim"), fingerprint(f"{tmp}/secret")) == before


def test_names_must_be_one_plain_component(tmp: str) -> None:
    with Dir.open(tmp) as d:
        for bad in ("", ".", "..", "a/b", "../etc", "a\0b"):
            with pytest.raises(UnsafePath, match="plain path component"):
                d.lstat(bad)
            with pytest.raises(UnsafePath):
                d.sub(bad, create=True)


def test_names_is_bounded_and_repeatable(tmp: str) -> None:
    for i in range(20):
        write(f"{tmp}/f{i}", b"")
    with Dir.open(tmp) as d:
        assert sorted(d.names()) == sorted(d.names(limit=20)) == sorted(f"f{i}" for i in range(20))
        with pytest.raises(UnsafePath, match="more than 19 entries"):
            d.names(limit=19)
        assert d.lstat("f0") is not None and d.lstat("nope") is None


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.root
def test_reads_refuse_a_fifo_at_once(home: str, user: User) -> None:
    as_user(user, lambda: os.mkfifo(f"{home}/pid"))
    with quickly(0.5), Dir.open(home) as d:
        for read in (d.read, d.read_tail):
            with pytest.raises(UnsafePath, match="is a fifo"):
                read("pid", 4096)
        for read_path in (read_bounded, read_tail):
            with pytest.raises(UnsafePath, match="is a fifo"):
                read_path(f"{home}/pid", 4096)


@pytest.mark.root
def test_reads_refuse_a_symlink_to_roots_file(tmp: str, home: str, user: User) -> None:
    write(f"{tmp}/secret", b"root only", 0o600)
    as_user(user, lambda: os.symlink(f"{tmp}/secret", f"{home}/pid"))
    with Dir.open(home) as d, pytest.raises(UnsafePath, match="is a link") as e:
        d.read("pid", 4096)
    assert "root only" not in str(e.value)
    with pytest.raises(UnsafePath, match="is a link"):
        read_tail(f"{home}/pid", 4096)


@pytest.mark.root
def test_reads_refuse_devices_sockets_and_folders(tmp: str) -> None:
    os.mknod(f"{tmp}/zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # a /dev/zero planted as a "log"
    os.mkdir(f"{tmp}/folder")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(f"{tmp}/sock")
        with quickly(0.5):
            for path, kind in (("/dev/zero", "char device"), (f"{tmp}/zero", "char device"),
                               (f"{tmp}/sock", "socket"), (f"{tmp}/folder", "folder")):
                with pytest.raises(UnsafePath, match=f"is a {kind}"):
                    read_bounded(path, 4096)
                with pytest.raises(UnsafePath, match=f"is a {kind}"):
                    read_tail(path, 4096)


@pytest.mark.root
def test_read_tail_of_a_huge_sparse_file_costs_nothing(home: str, user: User) -> None:
    def plant() -> None:
        with open(f"{home}/console.log", "wb") as f:
            f.truncate(GiB)
            f.seek(GiB - 3)
            f.write(b"END")
    as_user(user, plant)
    with quickly(1.0):
        tail = read_tail(f"{home}/console.log", 64 * KiB)
        with Dir.open(home) as d:
            assert d.read_tail("console.log", 64 * KiB) == tail
        with pytest.raises(UnsafePath, match=f"holds {GiB} bytes, more than the {KiB}"):
            read_bounded(f"{home}/console.log", KiB)
    assert len(tail) == 64 * KiB and tail.endswith(b"\0END")


def test_read_bounded_returns_up_to_the_cap_and_refuses_more(tmp: str) -> None:
    write(f"{tmp}/pid", b"x" * 100)
    assert read_bounded(f"{tmp}/pid", 100) == b"x" * 100
    assert read_tail(f"{tmp}/pid", 10) == b"x" * 10
    with pytest.raises(UnsafePath, match="holds 100 bytes, more than the 99"):
        read_bounded(f"{tmp}/pid", 99)
    with Dir.open(tmp) as d, pytest.raises(FileNotFoundError, match=f"{tmp}/missing"):
        d.read("missing", 10)


def test_read_bounded_reads_proc_files_that_report_no_size() -> None:
    assert read_bounded("/proc/self/status", 64 * KiB).startswith(b"Name:")
    with pytest.raises(UnsafePath, match="holds over 10 bytes, more than the 10"):
        read_bounded("/proc/self/status", 10)


# --- writing ---------------------------------------------------------------------------------


@pytest.mark.root
def test_create_file_refuses_a_planted_symlink(tmp: str, home: str, user: User) -> None:
    write(f"{tmp}/victim", b"keep", 0o600)
    before = fingerprint(f"{tmp}/victim")

    def plant() -> None:
        os.symlink(f"{tmp}/victim", f"{home}/rec")
        os.symlink(f"{tmp}/made-by-root", f"{home}/dangling")
    as_user(user, plant)
    with Dir.open(home) as d:
        for name in ("rec", "dangling"):
            with pytest.raises(FileExistsError):
                d.create_file(name, 0o644)
            with pytest.raises(UnsafePath, match="is a link"):
                d.create_file(name, 0o644, exclusive=False)
    assert fingerprint(f"{tmp}/victim") == before and not os.path.lexists(f"{tmp}/made-by-root")


@pytest.mark.root
def test_create_file_refuses_a_planted_hard_link(tmp: str, home: str, user: User) -> None:
    write(f"{tmp}/victim", b"keep", 0o666)  # a file the user may link to (protected_hardlinks)
    as_user(user, lambda: os.link(f"{tmp}/victim", f"{home}/rec"))
    with Dir.open(home) as d:
        with pytest.raises(FileExistsError):
            d.create_file("rec", 0o644)
        with pytest.raises(UnsafePath, match="2 hard links"):
            d.create_file("rec", 0o644, exclusive=False)
    assert fingerprint(f"{tmp}/victim") == (0, 0, stat.S_IFREG | 0o666, b"keep")


@pytest.mark.root
def test_create_file_sets_owner_and_mode_whatever_the_umask(home: str, user: User) -> None:
    with umask(0o077), Dir.open(home) as d:
        os.close(d.create_file("cow", 0o640, uid=user.uid, gid=user.gid))
        write(f"{home}/old", b"old data")
        fd = d.create_file("old", 0o600, exclusive=False)
        os.write(fd, b"new")
        os.close(fd)
    assert fingerprint(f"{home}/cow") == (user.uid, user.gid, stat.S_IFREG | 0o640, b"")
    assert fingerprint(f"{home}/old") == (0, 0, stat.S_IFREG | 0o600, b"new")


@pytest.mark.root
def test_open_append_refuses_links_fifos_and_users_files(tmp: str, home: str, user: User) -> None:
    write(f"{tmp}/victim", b"keep", 0o644)
    before = fingerprint(f"{tmp}/victim")

    def plant() -> None:
        os.symlink(f"{tmp}/victim", f"{home}/link.log")
        os.mkfifo(f"{home}/fifo.log")
        write(f"{home}/mine.log", b"")
    as_user(user, plant)
    with quickly(0.5), Dir.open(home) as d:
        for name, why in (("link.log", "is a link"), ("fifo.log", "is a fifo"), ("mine.log", f"owned by {user.name}")):
            with pytest.raises(UnsafePath, match=why):
                d.open_append(name, 0o640)
    assert fingerprint(f"{tmp}/victim") == before


@pytest.mark.root
def test_open_append_makes_or_extends_roots_log(tmp: str) -> None:
    with umask(0o077), Dir.open(tmp) as d:
        for line in (b"one\n", b"two\n"):
            fd = d.open_append("guest.log", 0o640)
            os.write(fd, line)
            os.close(fd)
    assert fingerprint(f"{tmp}/guest.log") == (0, 0, stat.S_IFREG | 0o640, b"one\ntwo\n")


@pytest.mark.root
def test_write_atomic_replaces_whole_and_leaves_no_temp(tmp: str, home: str, user: User) -> None:
    write(f"{tmp}/victim", b"keep", 0o644)
    as_user(user, lambda: os.symlink(f"{tmp}/victim", f"{home}/rec"))
    with umask(0o077), Dir.open(home) as d:
        d.write_atomic("rec", b"first", 0o640)  # replaces the planted link itself
        d.write_atomic("rec", b"second", 0o640)
        assert d.names() == ["rec"]
        os.mkdir(f"{home}/dir")
        with pytest.raises(UnsafePath, match="is a folder"):
            d.write_atomic("dir", b"x")
        assert sorted(d.names()) == ["dir", "rec"]
    assert fingerprint(f"{home}/rec") == (0, 0, stat.S_IFREG | 0o640, b"second")
    assert fingerprint(f"{tmp}/victim") == (0, 0, stat.S_IFREG | 0o644, b"keep")


# --- removing --------------------------------------------------------------------------------


@pytest.mark.root
def test_unlink_removes_only_the_kinds_asked_never_a_folder(tmp: str) -> None:
    write(f"{tmp}/file", b"")
    write(f"{tmp}/target", b"keep")
    os.symlink(f"{tmp}/target", f"{tmp}/link")
    os.mkfifo(f"{tmp}/fifo")
    os.mkdir(f"{tmp}/folder")
    with Dir.open(tmp) as d:
        with pytest.raises(UnsafePath, match=r"is a file .* expects a socket"):
            d.unlink("file", kinds=("socket",))
        with pytest.raises(UnsafePath, match="is a folder"):
            d.unlink("folder")
        assert d.unlink("file") and d.unlink("link") and d.unlink("fifo", kinds=("fifo",))
        assert not d.unlink("file")
        assert sorted(d.names()) == ["folder", "target"]
    assert Path(f"{tmp}/target").read_bytes() == b"keep"


@pytest.mark.root
def test_remove_tree_never_follows_links(tmp: str, home: str, user: User) -> None:
    os.mkdir(f"{tmp}/keep")
    write(f"{tmp}/keep/f1", b"one", 0o600)
    write(f"{tmp}/keep/f2", b"two", 0o600)
    before = {p: fingerprint(f"{tmp}/keep/{p}") for p in ("", "f1", "f2")}

    def plant() -> None:
        os.makedirs(f"{home}/uml/a/b/c")
        write(f"{home}/uml/a/b/c/file", b"x")
        os.symlink(f"{tmp}/keep", f"{home}/uml/a/dirlink")
        os.symlink(f"{tmp}/keep/f1", f"{home}/uml/a/b/filelink")
        os.mkfifo(f"{home}/uml/fifo")
        os.chmod(f"{home}/uml/a/b", 0o500)  # read-only for its owner: root removes it all the same
    as_user(user, plant)
    with Dir.open(home) as d:
        safetree.remove_tree(d, "uml")
        safetree.remove_tree(d, "uml")  # already gone: nothing to do
    assert os.listdir(home) == []
    assert {p: fingerprint(f"{tmp}/keep/{p}") for p in ("", "f1", "f2")} == before


@pytest.mark.root
def test_remove_tree_of_a_link_removes_the_link_only(tmp: str, home: str, user: User) -> None:
    os.mkdir(f"{tmp}/keep")
    write(f"{tmp}/keep/f", b"keep")
    as_user(user, lambda: os.symlink(f"{tmp}/keep", f"{home}/uml"))
    with Dir.open(home) as d:
        safetree.remove_tree(d, "uml")
    assert not os.path.lexists(f"{home}/uml") and Path(f"{tmp}/keep/f").read_bytes() == b"keep"


@pytest.mark.root
def test_remove_tree_is_bounded_in_entries_and_depth(home: str, user: User) -> None:
    def plant() -> None:
        os.mkdir(f"{home}/wide")
        for i in range(300):
            write(f"{home}/wide/{i}", b"")
        os.makedirs(f"{home}/deep/" + "/".join("d" * 10))
    as_user(user, plant)
    with Dir.open(home) as d:
        with pytest.raises(UnsafePath, match="more than 100 entries"):
            safetree.remove_tree(d, "wide", max_entries=100)
        with pytest.raises(UnsafePath, match="nested too deep"):
            safetree.remove_tree(d, "deep", max_depth=5)
        safetree.remove_tree(d, "wide")
        safetree.remove_tree(d, "deep")
    assert os.listdir(home) == []


@pytest.mark.root
def test_remove_tree_ends_while_the_user_keeps_adding(home: str, user: User) -> None:
    def flood() -> None:
        os.makedirs(f"{home}/uml/sub")
        os.chdir(f"{home}/uml/sub")  # works through its working directory, as a guest would
        held = os.open(".", os.O_RDONLY)
        for i in range(10**6):
            try:
                write(f"f{i}", b"")
                if i % 10 == 0:
                    os.mkdir(f"d{i}")
            except OSError:
                break
        else:
            raise AssertionError("the user was never stopped")
        # Locked out, not merely outrun: root took the folder before emptying it.
        assert os.fstat(held).st_uid == 0
    pid = spawn_as(user, flood)
    try:
        deadline = time.monotonic() + 5
        while len(os.listdir(f"{home}/uml/sub") if os.path.isdir(f"{home}/uml/sub") else ()) < 200:
            assert time.monotonic() < deadline, "the user's flood never started"
            time.sleep(0.001)
        with Dir.open(home) as d:
            safetree.remove_tree(d, "uml")
        assert os.listdir(home) == []
    finally:
        join(pid)


@pytest.mark.root
def test_remove_tree_stops_at_a_mount_point(home: str) -> None:
    os.makedirs(f"{home}/uml/mnt")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "umlst-safefs", f"{home}/uml/mnt"], check=True)
    try:
        write(f"{home}/uml/mnt/other-fs", b"keep")
        with Dir.open(home) as d, pytest.raises(UnsafePath, match="mount point"):
            safetree.remove_tree(d, "uml")
        assert Path(f"{home}/uml/mnt/other-fs").read_bytes() == b"keep"
    finally:
        subprocess.run(["umount", f"{home}/uml/mnt"], check=True)


# --- device nodes, chmod and chown of entries ------------------------------------------------


def is_tun(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(10, 200)


def anything(st: os.stat_result) -> bool:
    return True


@pytest.mark.root
def test_tun_node_gets_its_mode_and_owner(home: str, user: User) -> None:
    with umask(0o077), Dir.open(home) as d:
        d.mknod_char("tun", 0o660, 10, 200)
        st = d.chown_entry("tun", user.uid, user.gid, expect=is_tun)
    assert is_tun(st) and (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (user.uid, user.gid, 0o660)


@pytest.mark.root
def test_entry_ops_refuse_a_planted_symlink_and_the_wrong_kind(tmp: str, home: str, user: User) -> None:
    os.mknod(f"{tmp}/null", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # a root device the link points at
    before = fingerprint(f"{tmp}/null")

    def plant() -> None:
        os.symlink(f"{tmp}/null", f"{home}/tun")
        write(f"{home}/file", b"", 0o600)
    as_user(user, plant)
    with Dir.open(home) as d:
        for name, expect, why in (("tun", anything, "is a link"), ("file", is_tun, "is a file")):
            with pytest.raises(UnsafePath, match=why):
                d.chmod_entry(name, 0o666, expect=expect)
            with pytest.raises(UnsafePath, match=why):
                d.chown_entry(name, 0, 0, expect=expect)
    assert fingerprint(f"{tmp}/null") == before
    assert fingerprint(f"{home}/file") == (user.uid, user.gid, stat.S_IFREG | 0o600, b"")
