"""Switch and guest processes: spawning, identifying, stopping.

Used by the executor (start, stop, replace) and by `umlstate stop/start`.
Processes run as their declared user (setgroups, setgid, setuid), in the
namespace this process entered, in a new session, detached, with no shell,
their output appended to ``<state_dir>/logs/<name>.log``.

Only processes umlstate identified itself are ever signalled, and each one
is checked again (pid, start time, argv) right before the signal, so a pid
reused by another program is never hit.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import structlog

from umlstate import mconsole
from umlstate.errors import ActionError
from umlstate.model.snapshot import Proc
from umlstate.model.topology import DEFAULT_TUN

log = structlog.get_logger("umlstate")

CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUN_MARK = "--- umlstate: "
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


def spawn(argv: tuple[str, ...], user: str, log_path: Path, *, tun_path: str = DEFAULT_TUN,
          cwd: str = "/") -> int:
    """Start ``argv`` as ``user``, detached; return its pid."""
    try:
        entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        raise ActionError(f"user {user} does not exist") from None
    uid, gid = entry.pw_uid, entry.pw_gid
    groups = os.getgrouplist(entry.pw_name, gid)
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.fchown(fd, uid, gid)
        os.write(fd, f"{RUN_MARK}{time.strftime('%Y-%m-%d %H:%M:%S')} starting {' '.join(argv)}\n".encode())
        env = {"PATH": SAFE_PATH, "HOME": entry.pw_dir or "/", "USER": entry.pw_name, "LOGNAME": entry.pw_name,
               "TMPDIR": "/tmp"}
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT, cwd=cwd, env=env,
            close_fds=True, start_new_session=True, umask=0o077,
            preexec_fn=_become(uid, gid, groups, tun_path),  # noqa: PLW1509 - spawned before any thread starts
        )
    except OSError as exc:
        raise ActionError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return proc.pid


def _become(uid: int, gid: int, groups: list[int], tun_path: str) -> Callable[[], None]:
    """The child's last steps as root: its own view of /dev/net/tun, then drop privileges.

    uml_switch and UML's tuntap transport open /dev/net/tun by that fixed name.
    When the topology declares its node elsewhere, the child gets a private
    mount namespace in which that node is bind-mounted at /dev/net/tun, so the
    node's declared mode and group are what govern access, and the host's own
    /dev/net/tun is never touched.
    """
    bind = os.path.realpath(tun_path) != DEFAULT_TUN and os.path.exists(DEFAULT_TUN)

    def child() -> None:
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

    return child


def current(proc: Proc) -> psutil.Process | None:
    """The live process ``proc`` names, or None if it exited or its pid was reused."""
    try:
        p = psutil.Process(proc.pid)
        if proc.started and abs(p.create_time() - proc.started) > 0.05:
            return None
        return p
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def alive(proc: Proc) -> bool:
    """Still running: not exited, not a zombie, and not a reused pid."""
    p = current(proc)
    try:
        return p is not None and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(proc: Proc, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(proc):
            return True
        time.sleep(0.05)
    return not alive(proc)


def _signal_group(proc: Proc, sig: signal.Signals) -> None:
    """Signal the session umlstate started the process in (a UML guest is several processes)."""
    p = current(proc)
    if p is None:
        return
    try:
        pgid = os.getpgid(proc.pid)
        if pgid == proc.pid:  # it leads its own group, as spawn() made it
            os.killpg(pgid, sig)
        else:
            os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def stop_switch(proc: Proc, socket: str, timeout: float = 3.0) -> str:
    if current(proc) is not None:
        _signal_group(proc, signal.SIGTERM)
        if not wait_gone(proc, timeout):
            _signal_group(proc, signal.SIGKILL)
            wait_gone(proc, timeout)
    Path(socket).unlink(missing_ok=True)
    return "stopped"


def stop_guest(proc: Proc, mconsole_path: str, umid_dir: Path, *, cad_wait: float = 15.0,
               halt_wait: float = 5.0, term_wait: float = 3.0) -> str:
    """cad, wait; halt, wait; SIGTERM, wait; SIGKILL. Returns the step that worked."""
    steps: list[tuple[str, Callable[[], None], float]] = [
        ("cad", lambda: _mconsole_quiet(mconsole_path, "cad"), cad_wait),
        ("halt", lambda: _mconsole_quiet(mconsole_path, "halt"), halt_wait),
        ("SIGTERM", lambda: _signal_group(proc, signal.SIGTERM), term_wait),
        ("SIGKILL", lambda: _signal_group(proc, signal.SIGKILL), term_wait),
    ]
    how = "already gone"
    for name, act, wait in steps:
        if current(proc) is None:
            break
        log.debug("stopping guest", pid=proc.pid, step=name)
        act()
        how = name
        if wait_gone(proc, wait):
            break
    else:
        raise ActionError(f"guest pid {proc.pid} survived cad, halt, SIGTERM and SIGKILL")
    # A clean shutdown removes the umid folder; after a signal it is left: remove it.
    remove_umid_dir(umid_dir)
    return how


def remove_umid_dir(umid_dir: Path) -> None:
    """UML's per-guest folder (pid file, mconsole socket), once its guest is gone."""
    if umid_dir.is_dir():
        for child in umid_dir.iterdir():
            child.unlink(missing_ok=True)
        umid_dir.rmdir()


def _mconsole_quiet(path: str, text: str) -> None:
    try:
        mconsole.command(path, text, timeout=1.0)
    except mconsole.MconsoleError as exc:
        log.debug("mconsole did not take the command", command=text, error=str(exc))


def failure_report(path: Path, lines: int = 8) -> str:
    """The end of a process's log from its latest start, and what it usually means.

    Logs are appended across starts (each begins with RUN_MARK), so only the
    latest run is read: an old panic must not explain a new failure. Kernel
    stack frames are left out, since they push the one line that matters
    ("Kernel panic - not syncing: ...") out of view.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    run = text[text.rfind(RUN_MARK):] if RUN_MARK in text else text
    kept = [line for line in run.splitlines()[1:] if line.strip() and not STACK_FRAME.match(line)]
    tail = kept[-lines:]
    panic = next((line for line in kept if "Kernel panic" in line), None)
    if panic and panic not in tail:
        tail = [panic, "...", *tail[2:]]
    report = f"the end of its log ({path}):\n" + "\n".join("    | " + line for line in tail or ["(empty)"])
    for pattern, hint in HINTS:
        if pattern.search(run):
            report += f"\n  hint: {hint}"
            break
    return report
