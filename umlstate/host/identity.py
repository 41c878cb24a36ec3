"""What root records about a process at spawn, and signalling only a process that still matches it.

A pid alone names nothing: once the process is reaped its number goes to the
next fork, maybe a user's look-alike. So umlstate records, while the spawned
process is still its unreaped child (its pid cannot be reused yet), the start
time, real uid and cgroup (or session) of the process, and acts only through
a pidfd opened on a process that still matches all of them. A user cannot
forge these: the start time is the kernel's, the uid is theirs, and neither
the cgroup (root's, see cgroups.py) nor a session (setsid only makes a new
one) can be joined from outside.

All of /proc is read with bounds on size, and each process's files through
one /proc/PID directory fd, so the facts read together belong to one process
even if the pid is reused halfway.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from types import TracebackType

from umlstate.host.cgroups import CGROUP_FILE_LIMIT, MAX_PIDS, Cgroups, pidfd_exited, read_bounded, v2_line
from umlstate.model.snapshot import Proc

STAT_LIMIT = 4096  # comm is at most 15 bytes; the rest is 50-odd numbers
STATUS_LIMIT = 4096  # the Uid line is the ninth or so, well before the unbounded Groups line
GONE = "ZX"  # zombie, dead: exited, only not reaped yet


@dataclass(frozen=True)
class Identity:
    """A process as umlstate started it."""

    pid: int
    start: int  # clock ticks since boot (field 22 of /proc/PID/stat): with pid, unique for the boot
    uid: int  # real uid
    cgroup: str | None  # the cgroup v2 path at spawn; None where sessions are used instead
    sid: int  # session id
    exe: str  # the program as spawned (argv[0]), for messages


@dataclass(frozen=True)
class Live:
    """What /proc says about a process now."""

    pid: int
    start: int
    uid: int
    cgroup: str | None
    sid: int
    state: str  # R, S, D, T, Z (zombie), ...
    comm: str


def parse_stat(data: bytes) -> tuple[str, str, int, int] | None:
    """(comm, state, sid, start) from a /proc/PID/stat line.

    comm sits in parentheses and may itself hold spaces and parentheses (any program name a user
    picks), so the fields are split after the LAST ')'.
    """
    close = data.rfind(b")")
    if close < 0:
        return None
    rest = data[close + 1 :].split()
    if len(rest) < 20:
        return None
    comm = data[data.find(b"(") + 1 : close].decode(errors="replace")
    return comm, rest[0].decode(errors="replace"), int(rest[3]), int(rest[19])  # fields 3, 6, 22


def live(pid: int) -> Live | None:
    """The process ``pid`` now, or None when there is none."""
    if pid <= 0:
        return None
    try:
        folder = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        parsed = parse_stat(read_bounded("stat", STAT_LIMIT, dir_fd=folder))
        uid = next((int(line.split()[1]) for line in read_bounded("status", STATUS_LIMIT, dir_fd=folder).splitlines()
                    if line.startswith(b"Uid:")), None)
        try:
            cgroup = v2_line(read_bounded("cgroup", CGROUP_FILE_LIMIT, dir_fd=folder))
        except OSError:  # no cgroup support at all: sessions are used, the field stays empty
            cgroup = None
    except (OSError, ValueError, IndexError):  # ESRCH: reaped meanwhile
        return None
    finally:
        os.close(folder)
    if parsed is None or uid is None:
        return None
    comm, state, sid, start = parsed
    return Live(pid=pid, start=start, uid=uid, cgroup=cgroup, sid=sid, state=state, comm=comm)


def record(pid: int, exe: str, *, cgroup: bool = True) -> Identity | None:
    """Record a process just spawned; call it before reaping, while the pid cannot be reused.

    ``cgroup`` False records the session alone (hosts without a writable cgroup v2).
    """
    now = live(pid)
    if now is None or now.state in GONE:
        return None
    return Identity(pid=pid, start=now.start, uid=now.uid, cgroup=now.cgroup if cgroup else None, sid=now.sid,
                    exe=exe)


def same(recorded: Identity, pid: int | None = None) -> bool:
    """The live process at ``pid`` (default recorded.pid) is the recorded one, and has not exited."""
    now = live(recorded.pid if pid is None else pid)
    if now is None or now.state in GONE:
        return False
    if now.start != recorded.start or now.uid != recorded.uid:
        return False
    # A cgroup, when recorded, is the stronger mark: nobody but root moves a process into one.
    return now.cgroup == recorded.cgroup if recorded.cgroup is not None else now.sid == recorded.sid


def identity_of(proc: Proc) -> Identity:
    """The identity in a switch's or guest's record."""
    return Identity(proc.pid, proc.start, proc.uid, proc.cgroup, proc.sid, proc.argv[0] if proc.argv else "")


def alive(proc: Proc) -> bool:
    """Still the process umlstate started: same pid, start time, uid and cgroup or session; not a zombie."""
    if not proc.start:  # never recorded (it exited before it could be): nothing of ours runs under that pid
        return False
    return same(identity_of(proc))


def remaining(unit: str, cgroups: Cgroups | None, proc: Proc | None) -> list[int]:
    """Every process still running in a switch's or guest's cgroup (or session, as a fallback)."""
    if cgroups is not None:
        return cgroups.pids(unit)
    if proc is not None and proc.sid:
        return session_pids(proc.sid, proc.uid)
    return []


class Handle:
    """A pidfd on a process verified to be the recorded one; signals go to it and to nothing else."""

    def __init__(self, fd: int, recorded: Identity) -> None:
        self.fd = fd
        self.recorded = recorded

    @classmethod
    def open(cls, recorded: Identity) -> Handle | None:
        """Pin the process first, then verify it: None when it is gone or not the recorded one."""
        try:
            fd = os.pidfd_open(recorded.pid)
        except OSError:  # ESRCH: gone; EINVAL: not a process
            return None
        # Verified after pinning, and the pinned process not exited after the check: so the /proc
        # facts were that process's, never those of a newcomer that took the pid meanwhile.
        if not same(recorded) or pidfd_exited(fd):
            os.close(fd)
            return None
        return cls(fd, recorded)

    def signal(self, sig: int) -> bool:
        """Send ``sig``; False if the process has exited (signals to a zombie would do nothing)."""
        if self.fd < 0 or pidfd_exited(self.fd):
            return False
        try:
            signal.pidfd_send_signal(self.fd, sig)
        except ProcessLookupError:
            return False
        return True

    def wait(self, timeout: float) -> bool:
        """True once the process has exited (the pidfd turns readable), within ``timeout`` seconds."""
        return self.fd < 0 or pidfd_exited(self.fd, timeout)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def session_pids(sid: int, uid: int | None = None) -> list[int]:
    """The live processes of session ``sid`` (and of ``uid``, if given), at most MAX_PIDS.

    The fallback where no cgroup v2 is writable. It is weaker: a process that calls setsid() or
    double-forks away leaves the session, and only a cgroup would still hold it.
    """
    found: list[int] = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            now = live(int(entry.name))
            if now and now.sid == sid and now.state not in GONE and (uid is None or now.uid == uid):
                found.append(now.pid)
                if len(found) >= MAX_PIDS:
                    break
    return sorted(found)


def settle(cgroups: Cgroups, unit: str, timeout: float, *, first: int, exe: str, quiet: float = 0.1) -> Identity | None:
    """The identity of a daemonizing program's lasting process: the oldest one left in its cgroup.

    ``vde_switch -d`` forks and its first process (``first``, the pid umlstate spawned) exits at
    once; the process that lasts is a descendant, and only the cgroup says which processes those
    are. Wait for ``first`` to exit, then for the oldest process in the unit to stay the oldest for
    ``quiet`` seconds (a double fork's middle process exits too). None when nothing stays or on
    timeout.
    """
    deadline = time.monotonic() + timeout
    while first in cgroups.pids(unit):  # zombies are not listed, and a pid reused elsewhere is not in it
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)
    while True:
        oldest = _oldest(cgroups, unit)
        if oldest is None:
            return None
        time.sleep(quiet)
        again = _oldest(cgroups, unit)
        found = record(oldest[1], exe)
        if again == oldest and found and (found.start, found.cgroup) == (oldest[0], cgroups.relative(unit)):
            return found
        if time.monotonic() >= deadline:
            return None


def _oldest(cgroups: Cgroups, unit: str) -> tuple[int, int] | None:
    """(start, pid) of the oldest live process in the unit's cgroup."""
    facts = [(f.start, f.pid) for p in cgroups.pids(unit) if (f := live(p)) is not None and f.state not in GONE]
    return min(facts, default=None)
