"""Switch and guest processes: spawned into their own cgroup, known by what root recorded, ended whole.

Host layer, used by apply (start, stop, replace, clear), observation (is the
recorded process still the one we started?) and watch. A process runs as its
declared user (setgroups, setgid, setuid), in the namespace this process
entered, in a new session and in its own cgroup (``cgroups``; the session
alone where no cgroup v2 is writable), with no shell, its output going to a
root-owned log through the descriptor it inherits (``logs``).

Identity is what root recorded at spawn (``identity``: pid, start time, uid,
cgroup or session), never what a process says about itself: a look-alike of
another user or program is not ours and is never signalled. A UML guest is
several host processes: stopping one ends every process of its cgroup.
"""

from __future__ import annotations

import ctypes
import functools
import os
import pwd
import signal
import stat
import subprocess
import time
from collections.abc import Callable

import structlog

from umlstate.errors import ActionError
from umlstate.host import identity, mconsole
from umlstate.host.cgroups import Cgroups
from umlstate.host.console import Pty
from umlstate.host.identity import alive, identity_of
from umlstate.model.guestline import mconsole_of
from umlstate.model.snapshot import Proc
from umlstate.model.topology import DEFAULT_TUN

log = structlog.get_logger("umlstate")

CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def spawn(argv: tuple[str, ...], uid: int, log_fd: int, *, unit: str, cgroups: Cgroups | None,
          tun_path: str = DEFAULT_TUN, stale_socket: str | None = None, hold_stdin: bool = False,
          console: Pty | None = None) -> Proc:
    """Start ``argv`` as ``uid``, detached, in its own cgroup; return what identifies it.

    ``stale_socket``: a socket path the program binds, removed first if a dead
    run left it, by the child once it runs as the user (root never unlinks in
    a user's folder by name). ``hold_stdin``: stdin is a pipe whose write end
    the child holds too, so it never ends (vde_switch exits on stdin's EOF).
    ``console``: a guest's terminal pair; its master is the child's stdin, and
    the child holds the slave too (see ``console``); recorded with the process.
    """
    try:
        entry = pwd.getpwuid(uid)
        gid, home, name = entry.pw_gid, entry.pw_dir or "/", entry.pw_name
        groups = os.getgrouplist(name, gid)
    except KeyError:  # a bare uid: its own group number, no supplementary groups
        gid, home, name, groups = uid, "/", str(uid), []
    env = {"PATH": SAFE_PATH, "HOME": home, "USER": name, "LOGNAME": name, "TMPDIR": "/tmp"}
    join = cgroups.join_function(unit) if cgroups is not None else None
    stdin, keep = os.pipe() if hold_stdin else (subprocess.DEVNULL, -1)
    if console is not None:
        stdin, keep = console.master, console.slave
    try:
        child = subprocess.Popen(
            list(argv), stdin=stdin, stdout=log_fd, stderr=subprocess.STDOUT, cwd="/", env=env,
            close_fds=True, pass_fds=(keep,) if keep >= 0 else (), start_new_session=True, umask=0o077,
            # apply's own threads (the policy's load, the stops) are joined before any start: none runs here
            preexec_fn=_become(uid, gid, groups, tun_path, join, stale_socket),  # noqa: PLW1509
        )
    except OSError as exc:
        raise ActionError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    finally:
        if keep >= 0 and console is None:  # the console's pair is its caller's to close
            os.close(stdin)
            os.close(keep)
    # Recorded while it is our unreaped child: its pid cannot have been reused yet.
    found = identity.record(child.pid, argv[0], cgroup=cgroups is not None)
    if found is None:  # exited at once: a run that started and died (a crash), never alive() again
        return Proc(child.pid, uid, argv, time.time())
    return proc_of(found, argv, console.path if console is not None else None)


def proc_of(found: identity.Identity, argv: tuple[str, ...], console: str | None = None) -> Proc:
    return Proc(found.pid, found.uid, argv, started_epoch(found.start), start=found.start, cgroup=found.cgroup,
                sid=found.sid, console=console)


def _become(uid: int, gid: int, groups: list[int], tun_path: str, join: Callable[[], None] | None,  # noqa: PLR0917
            stale_socket: str | None) -> Callable[[], None]:
    """The child's last steps: its cgroup, its own view of /dev/net/tun, then the user's identity.

    uml_switch and UML's tuntap transport open /dev/net/tun by that fixed name.
    When the topology declares its node elsewhere, the child gets a private
    mount namespace in which that node is bind-mounted at /dev/net/tun, so the
    node's declared mode and group are what govern access, and the host's own
    /dev/net/tun is never touched.
    """
    bind = os.path.realpath(tun_path) != DEFAULT_TUN and os.path.exists(DEFAULT_TUN)

    def child() -> None:
        if join is not None:
            join()  # first: whatever happens next happens inside the cgroup
        if bind:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
            if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
                raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
            if libc.mount(tun_path.encode(), DEFAULT_TUN.encode(), None, MS_BIND, None) != 0:
                raise OSError(ctypes.get_errno(), f"mount --bind {tun_path} {DEFAULT_TUN}")
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
        if stale_socket is not None:  # as the user now: only what the user could remove anyway
            try:
                if stat.S_ISSOCK(os.lstat(stale_socket).st_mode):
                    os.unlink(stale_socket)
            except OSError:
                pass

    return child


@functools.cache
def _boot_epoch() -> float:
    """When this boot began (btime of /proc/stat), to date start times given in ticks since boot."""
    with open("/proc/stat", "rb") as f:
        for line in f.read(1 << 16).splitlines():
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


def started_epoch(ticks: int) -> float:
    return _boot_epoch() + ticks / os.sysconf("SC_CLK_TCK")


def end_all(unit: str, cgroups: Cgroups | None, proc: Proc | None, timeout: float = 5.0) -> None:
    """SIGKILL whatever is left of a switch or guest: its whole cgroup, or the recorded session."""
    if cgroups is not None:
        if not cgroups.kill(unit, timeout):
            raise ActionError(f"processes of {unit} survived cgroup.kill: {cgroups.pids(unit)}")
        cgroups.remove(unit)
        return
    if proc is None or not proc.sid:
        return
    for pid in identity.session_pids(proc.sid, proc.uid):
        facts = identity.live(pid)
        if facts is None:
            continue
        member = identity.Identity(pid, facts.start, facts.uid, None, facts.sid, "")
        handle = identity.Handle.open(member)
        if handle is not None:
            with handle:
                handle.signal(signal.SIGKILL)


def _signal_and_wait(proc: Proc, sig: signal.Signals, wait: float) -> bool:
    """Signal the recorded process through a pidfd; True once it has exited (or was already gone)."""
    handle = identity.Handle.open(identity_of(proc))
    if handle is None:
        return True
    with handle:
        handle.signal(sig)
        return handle.wait(wait)


def stop_switch(proc: Proc, unit: str, cgroups: Cgroups | None, timeout: float = 3.0) -> str:
    """SIGTERM, then SIGKILL, then whatever else its cgroup holds."""
    how = "SIGTERM"
    if not _signal_and_wait(proc, signal.SIGTERM, timeout):
        how = "SIGKILL"
        _signal_and_wait(proc, signal.SIGKILL, timeout)
    end_all(unit, cgroups, proc)
    return how


# What a guest's console says when its own shutdown is over (UML prints them as it stops).
RESTARTING = "reboot: Restarting system"  # cad mapped to reboot (systemd's and sysvinit's default)
POWERED_OFF = ("reboot: Power down", "reboot: System halted")


def stop_guest(proc: Proc, mconsole_path: str, unit: str, cgroups: Cgroups | None, console: Callable[[], str], *,
               cad_wait: float = 60.0, halt_wait: float = 10.0, term_wait: float = 3.0) -> str:
    """Stop a guest cleanly, whatever its init does with ctrl-alt-del; then end every process of it.

    ``console``: the guest's console output since the stop began. mconsole cad runs the
    guest's own shutdown: services stop, disks are unmounted or made read-only. An init
    that powers off on it ends the guest ("cad"); one that reboots (the stock default)
    reaches "reboot: Restarting system", where UML would boot again in the same pid: the
    guest is ended right there, its shutdown done ("cad, then its reboot"). An init that
    ignores it gets, after ``cad_wait``, SysRq sync and read-only remount, then halt: never
    a hard stop with dirty disks unless the guest ignores those too.
    """
    if not alive(proc):
        end_all(unit, cgroups, proc)
        return "already gone"
    log.debug("stopping guest", pid=proc.pid, step="cad")
    how = "cad"
    if _mconsole_quiet(mconsole_path, "cad", proc.uid):
        deadline = time.monotonic() + cad_wait
        while time.monotonic() < deadline:
            if _wait_gone(proc, 0.1):
                end_all(unit, cgroups, proc)
                return how
            if RESTARTING in console():
                end_all(unit, cgroups, proc)  # its shutdown is over; the reboot must not begin
                return "cad, then its reboot"
    steps: list[tuple[str, Callable[[], bool], float]] = [
        ("sync and read-only, then halt", lambda: _quiesce(mconsole_path, proc.uid), halt_wait),
        ("SIGTERM", lambda: _signal(proc, signal.SIGTERM), term_wait),
        ("SIGKILL", lambda: _signal(proc, signal.SIGKILL), term_wait),
    ]
    for name, act, wait in steps:
        if not alive(proc):
            break
        log.debug("stopping guest", pid=proc.pid, step=name)
        if not act():
            continue  # not taken (a silent or fake mconsole): no point waiting for it
        how = name
        if _wait_gone(proc, wait):
            break
    if alive(proc):
        raise ActionError(f"guest pid {proc.pid} survived cad, halt, SIGTERM and SIGKILL")
    end_all(unit, cgroups, proc)  # the helpers of a UML guest outlive its main process
    return how


def _quiesce(path: str, owner: int) -> bool:
    """SysRq s (sync) and u (remount read-only), then halt: a guest that ignored cad still stops clean."""
    for command in ("sysrq s", "sysrq u"):
        _mconsole_quiet(path, command, owner)
    time.sleep(0.5)  # the emergency sync and remount run in the guest's own time
    return _mconsole_quiet(path, "halt", owner)


def _signal(proc: Proc, sig: signal.Signals) -> bool:
    handle = identity.Handle.open(identity_of(proc))
    if handle is None:
        return False
    with handle:
        return handle.signal(sig)


def _wait_gone(proc: Proc, seconds: float) -> bool:
    handle = identity.Handle.open(identity_of(proc))
    if handle is None:
        return True
    with handle:
        return handle.wait(seconds)


def mconsole_path(proc: Proc, name: str) -> str | None:
    """A guest's mconsole socket, from the uml_dir root gave it when it started it (never from the guest)."""
    return mconsole_of(proc.argv, name)


def _mconsole_quiet(path: str, text: str, owner: int) -> bool:
    try:
        mconsole.command(path, text, owner=owner, timeout=1.0)
    except mconsole.MconsoleError as exc:
        log.debug("mconsole did not take the command", command=text, error=str(exc))
        return False
    return True
