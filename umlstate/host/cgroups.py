"""Every switch and guest in a cgroup v2 of its own: <mount>/umlstate/<topology instance>/<unit>.

A guest is all of its processes (a UML guest is about five host processes,
and SIGKILL to the main one leaves the helpers alive), and its user may be
hostile: setsid() or a double fork escapes a session or process group, but
not a cgroup. An unprivileged process cannot move itself out, because moving
needs write access to the cgroup.procs of the common ancestor, which is
root's. So stopping a unit is cgroup.kill, and what is in the unit's cgroup is
exactly what umlstate started there and its descendants.

Everything read here (mountinfo, cgroup.procs, /proc/PID/cgroup) is read with
a bound on size: processes a user controls decide how long some of them are.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import select
import signal
import stat
import time
from collections.abc import Callable

from umlstate.errors import ActionError, HostError

UNIT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # no '/', never '.' or '..', fits a file name
TOP = "umlstate"
MAX_PIDS = 4096  # more than any guest or switch has; a fork bomb is still ended whole by cgroup.kill
MOUNTINFO_LIMIT = 1 << 20
CGROUP_FILE_LIMIT = 32 << 10  # /proc/PID/cgroup: one line per hierarchy, paths are umlstate's own
_OCTAL = re.compile(rb"\\([0-7]{3})")


def read_bounded(path: str, limit: int, dir_fd: int | None = None) -> bytes:
    """At most ``limit`` bytes of a file; loops because procfs and cgroupfs hand out pages, not files."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def parse_mountinfo(data: bytes) -> str | None:
    """The first cgroup2 mount whose root is the hierarchy's root, so /proc/PID/cgroup paths map onto it."""
    for line in data.splitlines():
        left, sep, right = line.partition(b" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.startswith(b"cgroup2 "):
            continue
        if fields[3] == b"/":  # a bind mount of a subtree would shift every path
            return os.fsdecode(_OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), fields[4]))
    return None


@functools.cache
def v2_mount() -> str | None:
    """The cgroup2 mount point (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts); cached."""
    try:
        return parse_mountinfo(read_bounded("/proc/self/mountinfo", MOUNTINFO_LIMIT))
    except OSError:
        return None


def v2_line(data: bytes) -> str | None:
    """The path of the "0::/path" line of a /proc/PID/cgroup text."""
    for line in data.splitlines():
        if line.startswith(b"0::"):
            return os.fsdecode(line[3:])
    return None


def cgroup_of(pid: int) -> str | None:
    """The cgroup v2 path of a process ("/umlstate/lab/guest-web"), or None when it is gone."""
    if pid <= 0:
        return None
    try:
        return v2_line(read_bounded(f"/proc/{pid}/cgroup", CGROUP_FILE_LIMIT))
    except OSError:
        return None


def check_name(name: str, what: str = "cgroup unit") -> str:
    if not UNIT_RE.fullmatch(name) or name.startswith("cgroup."):
        raise ActionError(f"{what} name {name!r} is not valid: want [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}")
    return name


def pidfd_exited(pidfd: int, timeout: float = 0.0) -> bool:
    """A pidfd is readable once its process has exited (zombie or reaped); poll, as select stops at fd 1024."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0, math.ceil(timeout * 1000))))


class Cgroups:
    """umlstate's subtree: <mount>/umlstate/<topology>/<unit>, e.g. .../umlstate/lab/guest-web."""

    def __init__(self, mount: str, topology: str) -> None:
        self.mount = mount
        self.topology = check_name(topology, "topology")
        self.base = os.path.join(mount, TOP, self.topology)

    @classmethod
    def here(cls, topology: str) -> Cgroups | None:
        """This host's subtree, or None without a writable cgroup v2 (callers then fall back to sessions)."""
        mount = v2_mount()
        if mount is None or not os.access(mount, os.W_OK) or not os.path.exists(os.path.join(mount, "cgroup.procs")):
            return None
        return cls(mount, topology)

    def path(self, unit: str) -> str:
        return os.path.join(self.base, check_name(unit))

    def relative(self, unit: str) -> str:
        """The unit's path as /proc/PID/cgroup shows it (the mount's root is the hierarchy's root)."""
        return f"/{TOP}/{self.topology}/{check_name(unit)}"

    def ensure(self, unit: str) -> str:
        """mkdir -p, root's and 0755: only root may then move processes in or out, or make sub-cgroups."""
        path = self.path(unit)
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
            for folder in (os.path.join(self.mount, TOP), self.base, path):
                st = os.lstat(folder)
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
                    raise HostError(f"cgroup {folder} is not root's or is writable by others",
                                    f"remove it (rmdir {folder}) after ending its processes")
        except OSError as exc:
            raise HostError(f"cannot create cgroup {path}: {exc.strerror or exc}",
                            "run as root on a host with a writable cgroup v2") from None
        return path

    def join_function(self, unit: str) -> Callable[[], None]:
        """For preexec_fn, run as root before privileges are dropped: the child joins the unit's cgroup.

        Everything is computed here in the parent; the child only does open/write/close. If joining
        fails the exception aborts the exec, so nothing ever runs outside its cgroup.
        """
        procs = os.fsencode(os.path.join(self.ensure(unit), "cgroup.procs"))

        def join() -> None:
            fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")  # "0" is the writing process itself
            finally:
                os.close(fd)

        return join

    def pids(self, unit: str) -> list[int]:
        """The processes in the unit's cgroup (not zombies), at most MAX_PIDS; [] when it is missing."""
        try:
            data = read_bounded(os.path.join(self.path(unit), "cgroup.procs"), MAX_PIDS * 12)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ActionError(f"cannot list cgroup {self.path(unit)}: {exc.strerror or exc}") from None
        if len(data) == MAX_PIDS * 12:
            data = data[: data.rfind(b"\n") + 1]  # drop a number cut in half
        return sorted({int(x) for x in data.split() if x.isdigit()})[:MAX_PIDS]

    def populated(self, unit: str) -> bool:
        try:
            data = read_bounded(os.path.join(self.path(unit), "cgroup.events"), 4096)
        except FileNotFoundError:
            return False
        return b"populated 1" in data.splitlines()

    def kill(self, unit: str, timeout: float = 5.0) -> bool:
        """SIGKILL every process of the unit, then wait until it is empty; True when it is."""
        path = self.path(unit)
        if not os.path.isdir(path):
            return True
        deadline = time.monotonic() + timeout
        try:
            fd = os.open(os.path.join(path, "cgroup.kill"), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"1")  # the kernel kills them all, and whatever they fork meanwhile
            finally:
                os.close(fd)
            fallback = False
        except FileNotFoundError:  # kernels before 5.14: kill what we see, again, until no fork outruns us
            fallback = True
        while self.populated(unit):
            if fallback:
                rel = self.relative(unit)
                for pid in self.pids(unit):
                    _kill_member(pid, rel)
            if time.monotonic() >= deadline:
                return not self.populated(unit)
            time.sleep(0.01)
        return True

    def remove(self, unit: str) -> None:
        """rmdir the unit's cgroup; it must be empty (kill it first); a missing one is fine."""
        try:
            os.rmdir(self.path(unit))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ActionError(f"cannot remove cgroup {self.path(unit)}: {exc.strerror or exc}") from None

    def remove_topology(self) -> None:
        """rmdir the topology's folder once it holds no units; a missing or non-empty one is left alone."""
        with contextlib.suppress(OSError):  # ENOENT, or ENOTEMPTY/EBUSY
            os.rmdir(self.base)

    def units(self, folders: frozenset[str] | None = None) -> list[str]:
        """The unit folders under this topology, for pruning what an earlier run left (``folders``: those just
        listed, rather than a second listing)."""
        return sorted(self.folders() if folders is None else folders)[:MAX_PIDS]

    def folders(self) -> frozenset[str]:
        """Every unit folder under this topology now: a unit not among them holds no process (one listing, not
        a failed open per unit)."""
        try:
            with os.scandir(self.base) as it:
                return frozenset(e.name for e in it if e.is_dir(follow_symlinks=False) and UNIT_RE.fullmatch(e.name))
        except FileNotFoundError:
            return frozenset()


def _kill_member(pid: int, rel: str) -> None:
    """SIGKILL ``pid`` only if it is still in cgroup ``rel``: the pidfd pins the process we checked."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        # Checked after opening the pidfd, and the pidfd not exited after the check: then the pid
        # number was that process's all along, never a reused one.
        if cgroup_of(pid) == rel and not pidfd_exited(fd):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)
