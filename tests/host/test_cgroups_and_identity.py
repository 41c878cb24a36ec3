"""Cgroups and recorded identities: a guest is all of its processes, and only what umlstate started is signalled.

The root tests make real cgroups under <cgroup2 mount>/umlstate/t<random>/ and
real processes (sleep, sh, python) in them; a fixture ends those processes and
removes that subtree afterwards, also when a test fails. No test signals a
process it did not start itself: every signal goes through a cgroup it made or
a pidfd on its own child.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import pwd
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from umlstate.errors import ActionError
from umlstate.host.cgroups import Cgroups, cgroup_of, parse_mountinfo, v2_mount
from umlstate.host.identity import GONE, Handle, Identity, live, parse_stat, record, same, session_pids, settle

IS_ROOT = os.geteuid() == 0
NOBODY = pwd.getpwnam("nobody")
SYSTEM_PYTHON = "/usr/bin/python3"  # nobody cannot reach the venv's interpreter under /root


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return check()
        time.sleep(0.02)
    return True


def gone(pid: int) -> bool:
    now = live(pid)
    return now is None or now.state in GONE


class Lab:
    """One test's cgroup subtree, and the processes the test started in it."""

    def __init__(self, cgroups: Cgroups) -> None:
        self.cg = cgroups
        self.children: list[subprocess.Popen[bytes]] = []

    def spawn(self, unit: str, argv: list[str], *, nobody: bool = False,
              stdout: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        join = self.cg.join_function(unit)

        def child() -> None:  # as umlstate will: join as root, then drop privileges
            join()
            if nobody:
                os.setgroups([])
                os.setgid(NOBODY.pw_gid)
                os.setuid(NOBODY.pw_uid)

        proc = subprocess.Popen(argv, preexec_fn=child, start_new_session=True, stdin=subprocess.DEVNULL,  # noqa: PLW1509
                                stdout=stdout, cwd="/")
        self.children.append(proc)
        return proc


@pytest.fixture
def lab() -> Iterator[Lab]:
    if not IS_ROOT:
        pytest.skip("needs root: only root creates cgroups and moves processes into them")
    cgroups = Cgroups.here("t" + secrets.token_hex(3))
    if cgroups is None:
        pytest.skip(f"no writable cgroup v2 on this host (cgroup2 mount found: {v2_mount()!r}); "
                    "these tests cannot show that a guest is all of its processes")
    top = os.path.join(cgroups.mount, "umlstate")
    top_existed = os.path.isdir(top)
    the_lab = Lab(cgroups)
    try:
        yield the_lab
    finally:
        for unit in cgroups.units():  # only this test's topology: t<random>
            cgroups.kill(unit)
            cgroups.remove(unit)
        cgroups.remove_topology()
        for proc in the_lab.children:  # reap our own children (already killed with their cgroup)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if not top_existed:  # another run may be using it: rmdir only succeeds when empty
            with contextlib.suppress(OSError):
                os.rmdir(top)


# Pure parsing, no root needed.

def test_unit_names_are_validated_and_paths_are_pure() -> None:
    cg = Cgroups("/sys/fs/cgroup", "lab")
    assert cg.path("guest-web") == "/sys/fs/cgroup/umlstate/lab/guest-web"
    assert cg.relative("switch-sw0") == "/umlstate/lab/switch-sw0"
    for bad in ("", ".", "..", "a/b", "../lab", "x" * 65, "cgroup.procs", "-x", "a\nb", "a b"):
        with pytest.raises(ActionError):
            cg.path(bad)
    with pytest.raises(ActionError):
        Cgroups("/sys/fs/cgroup", "../etc")


def test_mountinfo_finds_cgroup2_with_escapes_and_skips_bind_mounted_subtrees() -> None:
    data = (b"24 1 0:22 / /sys rw - sysfs sysfs rw\n"
            b"40 24 0:38 /sub /mnt/sub rw - cgroup2 cgroup2 rw\n"  # a subtree: its paths would not match /proc
            b"41 31 0:38 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw\n")
    assert parse_mountinfo(data) == "/sys/fs/cgroup/uni fied"
    assert parse_mountinfo(b"24 1 0:22 / /sys rw - sysfs sysfs rw\n") is None
    assert parse_mountinfo(b"41 31 0:38 / /x rw shared:9 - cgroup2 cgroup2 rw\n") == "/x"  # optional fields


def test_stat_is_split_after_the_last_parenthesis() -> None:
    fields = " ".join(str(n) for n in range(4, 53))  # field n holds n, from ppid (4) on
    assert parse_stat(f"77 (a ) 9 (b) c) S {fields}".encode()) == ("a ) 9 (b) c", "S", 6, 22)
    assert parse_stat(f"77 (x) S {fields}".encode()) == ("x", "S", 6, 22)
    assert parse_stat(b"77 (x") is None
    assert live(0) is None and live(2**31 - 1) is None


def test_live_reads_a_process_whose_name_has_spaces_and_parens(tmp_path: Path) -> None:
    link = tmp_path / "a ) (b) c"  # the kernel names a process after the file it executes
    link.symlink_to("/usr/bin/sleep")
    proc = subprocess.Popen([str(link), "300"], start_new_session=True)
    try:
        now = live(proc.pid)
        assert now is not None
        assert now.comm == "a ) (b) c"
        assert now.sid == os.getsid(proc.pid) == proc.pid
        assert now.uid == os.getuid() and now.state not in "ZX"  # alive: R, S, or D while exec pages it in
        me = live(os.getpid())
        assert me is not None and me.start <= now.start  # started after this test process
        assert now.cgroup == cgroup_of(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_session_pids_lists_a_session_and_signals_go_through_recorded_identities() -> None:
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    try:
        assert wait_for(lambda: len(session_pids(proc.pid)) == 3)
        assert proc.pid in session_pids(proc.pid, uid=os.getuid())
        assert session_pids(proc.pid, uid=os.getuid() + 1) == []
    finally:
        for pid in session_pids(proc.pid):  # ours: the session this test made
            found = record(pid, "sleep", cgroup=False)
            handle = Handle.open(found) if found else None
            if handle is not None:
                with handle:
                    assert handle.signal(signal.SIGKILL)
        proc.wait()
    assert wait_for(lambda: session_pids(proc.pid) == [])


# Real cgroups: root.

@pytest.mark.root
def test_the_whole_tree_is_in_the_cgroup_and_kill_ends_every_process(lab: Lab) -> None:
    # Two background children, and one that leaves the session: setsid, then a double fork.
    proc = lab.spawn("guest-web", ["sh", "-c", "sleep 300 & sleep 300 & setsid sh -c 'sleep 302 &' & wait"])
    rel = lab.cg.relative("guest-web")

    def escaped() -> list[int]:
        return [p for p in lab.cg.pids("guest-web") if (f := live(p)) and f.sid != proc.pid]

    assert wait_for(lambda: len(lab.cg.pids("guest-web")) == 4 and len(escaped()) == 1)
    pids = lab.cg.pids("guest-web")
    assert proc.pid in pids and all(cgroup_of(p) == rel for p in pids)
    assert escaped()[0] not in session_pids(proc.pid)  # what a session-based stop would have missed
    assert lab.cg.populated("guest-web")

    assert lab.cg.kill("guest-web", timeout=5)
    proc.wait(5)
    assert all(gone(p) for p in pids)
    assert not lab.cg.populated("guest-web") and lab.cg.pids("guest-web") == []
    lab.cg.remove("guest-web")
    assert not os.path.exists(lab.cg.path("guest-web")) and lab.cg.units() == []
    lab.cg.remove("guest-web")  # missing is fine
    assert lab.cg.kill("guest-web")  # nothing to kill


@pytest.mark.root
def test_kill_without_cgroup_kill_falls_back_to_sigkill_every_member(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = lab.spawn("guest-old", ["sh", "-c", "sleep 300 & setsid sh -c 'sleep 302 &' & wait"])
    assert wait_for(lambda: len(lab.cg.pids("guest-old")) == 3)
    pids = lab.cg.pids("guest-old")
    real_open = os.open

    def old_kernel(path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if str(path).endswith("cgroup.kill"):  # kernels before 5.14 have no cgroup.kill
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", old_kernel)
    assert lab.cg.kill("guest-old", timeout=5)
    monkeypatch.undo()
    proc.wait(5)
    assert all(gone(p) for p in pids) and not lab.cg.populated("guest-old")


@pytest.mark.root
def test_a_process_of_nobody_cannot_move_itself_out(lab: Lab) -> None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"needs {SYSTEM_PYTHON} to run a probe as nobody")
    lab.cg.ensure("guest-other")
    code = ("import os, sys\n"
            "for target in sys.argv[1:]:\n"
            "    try:\n"
            "        fd = os.open(target, os.O_WRONLY); os.write(fd, b'0'); os.close(fd); print('moved', flush=True)\n"
            "    except OSError as e:\n"
            "        print(e.errno, flush=True)\n"
            "print('done', flush=True)\n"
            "import time; time.sleep(300)\n")
    targets = [os.path.join(lab.cg.mount, "cgroup.procs"),  # the root cgroup
               os.path.join(lab.cg.path("guest-other"), "cgroup.procs"),  # a sibling
               os.path.join(lab.cg.base, "cgroup.procs")]  # the parent
    proc = lab.spawn("guest-web", [SYSTEM_PYTHON, "-I", "-c", code, *targets], nobody=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    answers = [proc.stdout.readline().decode().strip() for _ in targets]
    assert proc.stdout.readline().strip() == b"done"
    assert all(a in (str(errno.EACCES), str(errno.EPERM)) for a in answers), answers
    now = live(proc.pid)
    assert now is not None and now.uid == NOBODY.pw_uid
    assert lab.cg.pids("guest-web") == [proc.pid] and cgroup_of(proc.pid) == lab.cg.relative("guest-web")
    assert lab.cg.kill("guest-web")


@pytest.mark.root
def test_recorded_identity_matches_only_its_own_process(lab: Lab) -> None:
    first = lab.spawn("guest-web", ["sleep", "300"])
    recorded = record(first.pid, "sleep")
    assert recorded is not None
    assert (recorded.uid, recorded.sid, recorded.cgroup) == (0, first.pid, lab.cg.relative("guest-web"))
    assert same(recorded)
    handle = Handle.open(recorded)
    assert handle is not None
    handle.close()
    assert Handle.open(dataclasses.replace(recorded, start=recorded.start + 1)) is None  # same pid, other start

    first.kill()
    first.wait()
    assert not same(recorded) and Handle.open(recorded) is None
    time.sleep(0.05)  # a start time counts clock ticks: the next process starts on a later one
    second = lab.spawn("guest-web", ["sleep", "300"])
    # As if the kernel gave the recorded pid to the new process: its start time gives it away.
    assert not same(recorded, second.pid)
    assert Handle.open(dataclasses.replace(recorded, pid=second.pid)) is None
    assert not gone(second.pid)


@pytest.mark.root
def test_a_look_alike_of_another_user_is_never_signalled(lab: Lab) -> None:
    mine = lab.spawn("guest-web", ["sleep", "300"])
    recorded = record(mine.pid, "sleep")
    assert recorded is not None
    mine.kill()
    mine.wait()
    # A hostile user's process with the same argv, in the same cgroup even (the worst case).
    alike = lab.spawn("guest-web", ["sleep", "300"], nobody=True)
    its = record(alike.pid, "sleep")
    assert its is not None and its.uid == NOBODY.pw_uid
    forged = [dataclasses.replace(recorded, pid=alike.pid),  # the pid reused
              dataclasses.replace(its, uid=recorded.uid),  # even the start tick shared: the uid differs
              dataclasses.replace(its, cgroup="/umlstate/other/guest-web"),
              dataclasses.replace(its, cgroup=None, sid=its.sid + 1)]
    for identity in forged:
        assert not same(identity)
        handle = Handle.open(identity)  # how umlstate stops a recorded process
        if handle is not None:
            handle.signal(signal.SIGKILL)
            handle.close()
        assert handle is None
    time.sleep(0.1)
    assert same(its) and alike.poll() is None  # still alive


@pytest.mark.root
def test_a_zombie_is_not_the_recorded_process(lab: Lab) -> None:
    proc = lab.spawn("guest-web", ["sleep", "300"])
    recorded = record(proc.pid, "sleep")
    assert recorded is not None
    handle = Handle.open(recorded)
    assert handle is not None
    try:
        os.kill(proc.pid, signal.SIGKILL)  # our own child, not reaped: a zombie holds its pid
        assert wait_for(lambda: (f := live(proc.pid)) is not None and f.state == "Z")
        assert not same(recorded) and Handle.open(recorded) is None and record(proc.pid, "sleep") is None
        assert handle.wait(1) and not handle.signal(signal.SIGTERM)
        assert not lab.cg.populated("guest-web")  # the kernel does not count zombies either
    finally:
        handle.close()
        proc.wait()


@pytest.mark.root
def test_settle_finds_the_process_a_daemonizing_program_leaves(lab: Lab) -> None:
    proc = lab.spawn("switch-sw0", ["sh", "-c", "sleep 300 &"])  # exits at once, as vde_switch -d does
    found = settle(lab.cg, "switch-sw0", 5, first=proc.pid, exe="sh")
    assert found is not None and found.pid != proc.pid
    now = live(found.pid)
    assert now is not None and now.comm == "sleep" and same(found)
    assert lab.cg.pids("switch-sw0") == [found.pid] and found.cgroup == lab.cg.relative("switch-sw0")
    proc.wait()

    empty = lab.spawn("switch-sw1", ["true"])  # a daemon that dies too leaves nothing to record
    assert settle(lab.cg, "switch-sw1", 5, first=empty.pid, exe="true") is None


@pytest.mark.root
def test_handle_wait_returns_promptly_when_the_process_exits(lab: Lab) -> None:
    proc = lab.spawn("guest-web", [sys.executable, "-c", "import time; time.sleep(300)"])
    recorded = record(proc.pid, sys.executable)
    assert isinstance(recorded, Identity)
    handle = Handle.open(recorded)
    assert handle is not None
    with handle:
        assert not handle.wait(0.05)
        assert handle.signal(signal.SIGTERM)
        started = time.monotonic()
        assert handle.wait(5)
        assert time.monotonic() - started < 1
        assert not handle.signal(signal.SIGTERM)
    assert handle.wait(0)  # closed: nothing left to wait for
    proc.wait()
