"""The executor's port to switch and guest processes: started, stopped, spoken to through mconsole, waited for.

Apply layer, beside apply/host.py. ``Processes`` is the host's own: processes spawned into their cgroup as
their user and recorded at once (``remember``), COW files made through folder descriptors, guests stopped
through mconsole and ended whole, their boots waited for together (apply/boot.py). The golden
"plan -> host calls" tests give the executor a recording port instead (tests/plan/test_host_calls.py).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from umlstate.apply.boot import BootWait
from umlstate.errors import ActionError
from umlstate.host import console, cow, folders, identity, logs, mconsole, processes
from umlstate.host.cgroups import Cgroups
from umlstate.host.netlink import Netlink
from umlstate.host.users import primary_gid, uid_of
from umlstate.model.snapshot import Proc, unit_of
from umlstate.model.topology import Topology
from umlstate.plan import actions as A

log = structlog.get_logger("umlstate")

SWITCH_START_TIMEOUT = 5.0
Remember = Callable[[str, Proc], None]  # a process just started, recorded before anything else happens


class ProcessHost(Protocol):
    def start_switch(self, a: A.StartSwitch, remember: Remember) -> None: ...

    def stop_switch(self, name: str, proc: Proc) -> None: ...

    def end_leftovers(self, kind: str, name: str, recorded: Proc | None) -> None: ...

    def start_guest(self, a: A.StartGuest, remember: Remember) -> None: ...

    def stop_guest(self, name: str, proc: Proc) -> str: ...

    def console(self, name: str, proc: Proc, command: str, hint: str = "") -> None: ...

    def prepare(self) -> object: ...

    def booted(self) -> list[tuple[A.AnyAction, str]]: ...

    def close(self) -> None: ...


class Processes:
    """The host's own switch and guest processes."""

    def __init__(self, topology: Topology, nl: Netlink, boot: BootWait, *, stop_timeout: float) -> None:
        self.t = topology
        self.nl = nl
        self.boot = boot
        self.stop_timeout = stop_timeout
        self.cgroups = Cgroups.here(topology.instance)
        self._folders: folders.Folders | None = None

    def prepare(self) -> folders.Folders:
        """run_dir, the users' folders and state_dir/logs, checked and made once per pass."""
        if self._folders is None:
            self._folders = folders.Folders.prepare(self.t)
        return self._folders

    def close(self) -> None:
        """The folder descriptors a pass opened (run_dir/users, state_dir/logs)."""
        if self._folders is not None:
            self._folders.close()
            self._folders = None

    @property
    def _logs_fd(self) -> int:
        return self.prepare().logs.fd

    def _spawn(self, kind: str, name: str, argv: tuple[str, ...], user: str, remember: Remember, *,
               stale_socket: str | None = None, hold_stdin: bool = False, pty: console.Pty | None = None) -> Proc:
        unit = unit_of(kind, name)
        fd = logs.open_for_child(self._logs_fd, name, argv)
        try:
            proc = processes.spawn(argv, uid_of(user), fd, unit=unit, cgroups=self.cgroups, tun_path=self.t.tun_path,
                                   stale_socket=stale_socket, hold_stdin=hold_stdin, console=pty)
        finally:
            os.close(fd)
            if pty is not None:
                pty.close()
        # Recorded even when it exited before its identity could be read (start 0, never alive): that run
        # started and died, and its death counts towards a crash loop's backoff like any other.
        remember(unit, proc)
        return proc

    def start_switch(self, a: A.StartSwitch, remember: Remember) -> None:
        proc = self._spawn("switch", a.name, a.argv, a.user, remember, stale_socket=a.socket,
                           hold_stdin=a.holds_stdin)
        deadline = time.monotonic() + SWITCH_START_TIMEOUT
        while not _serves(a.socket) or (a.tap and not self.nl.carrier(a.tap)):
            if not identity.alive(proc) or time.monotonic() > deadline:
                what = f"attach to tap {a.tap}" if _serves(a.socket) else f"create its socket {a.socket}"
                raise ActionError(f"switch {a.name} did not {what}; " + logs.failure_report(self._logs_fd, a.name))
            time.sleep(0.02)

    def stop_switch(self, name: str, proc: Proc) -> None:
        how = processes.stop_switch(proc, unit_of("switch", name), self.cgroups)
        log.debug("switch stopped", switch=name, pid=proc.pid, by=how)

    def end_leftovers(self, kind: str, name: str, recorded: Proc | None) -> None:
        processes.end_all(unit_of(kind, name), self.cgroups, recorded)

    def start_guest(self, a: A.StartGuest, remember: Remember) -> None:
        ready = self.prepare()
        uid = uid_of(a.user)
        if a.cow and a.base:
            _make_cow(a.cow, a.base, uid)
        # Left by a dead run: UML would refuse the umid if its pid file names a live pid.
        ready.clear_umid(a.user, a.name)
        offset = logs.offset(ready.logs.fd, a.name)
        try:
            pty = console.allocate(uid)
        except OSError as exc:  # no pty left (kernel.pty.max): the guest runs, without a console to attach to
            log.warning("guest starts without a console", guest=a.name, error=exc.strerror or str(exc))
            pty = None
        proc = self._spawn("guest", a.name, a.argv, a.user, remember, pty=pty)
        self.boot.add(a.name, proc, a.line, offset, a, answer_at=a.answer_at)

    def stop_guest(self, name: str, proc: Proc) -> str:
        path = processes.mconsole_path(proc, name) or ""
        logs_fd = self._logs_fd
        offset = logs.offset(logs_fd, name)
        start = time.monotonic()
        how = processes.stop_guest(proc, path, unit_of("guest", name), self.cgroups,
                                   lambda: logs.read_since(logs_fd, name, offset), cad_wait=self.stop_timeout)
        log.info("guest stopped", guest=name, pid=proc.pid, by=how, seconds=round(time.monotonic() - start, 1))
        if how == "cad, then its reboot":
            log.warning("cad reboots", guest=name)
        elif how not in ("cad", "already gone"):
            log.warning("cad ignored", guest=name)
        return how

    def console(self, name: str, proc: Proc, command: str, hint: str = "") -> None:
        """One mconsole command to a running guest; a refusal or silence fails the action."""
        path = processes.mconsole_path(proc, name)
        if path is None:
            raise ActionError(f"guest {name} was started without a uml_dir: no mconsole to reach it")
        try:
            mconsole.command(path, command, owner=proc.uid, timeout=5.0)
        except mconsole.MconsoleError as exc:
            raise ActionError(f"{exc}{hint}") from None

    def booted(self) -> list[tuple[A.AnyAction, str]]:
        """Until every guest started in this pass answers, or cannot: those that cannot, and why."""
        return self.boot.wait(self._logs_fd) if self.boot.pending else []


def _make_cow(path: str, base: str, uid: int) -> None:
    """A COW file made natively (no uml_mkcow), owned by the guest's user, mode 0600; never by path."""
    try:
        base_stat = os.stat(base)
    except OSError as exc:
        raise ActionError(f"base image {base}: {exc.strerror}") from None
    if not stat.S_ISREG(base_stat.st_mode):
        raise ActionError(f"base image {base} is not a regular file")
    with folders.open_folder(os.path.dirname(path)) as folder:
        name = os.path.basename(path)
        if folder.lstat(name) is not None:
            return  # exists: the guest's, with the changes it made; the planner checked its header
        fd = folder.create_file(name, 0o600, uid=uid, gid=primary_gid(uid))
        try:
            cow.write_new(fd, base, base_stat)
        finally:
            os.close(fd)


def _serves(socket: str) -> bool:
    """A switch's socket is there: uml_switch's unix socket or vde_switch's folder, never through a link.

    It is in the switch user's folder: only looked at (lstat), never acted on.
    """
    try:
        mode = os.lstat(socket).st_mode
    except OSError:
        return False
    return stat.S_ISSOCK(mode) or stat.S_ISDIR(mode)
