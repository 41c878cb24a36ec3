"""Carry out a plan on the host, in order, stopping at the first failure.

Third stage of the pipeline, after ``planner``. Before the first change it
writes the records of everything the plan will create (write-ahead, atomic),
so a run killed at any moment leaves state the next run recognises: a tap made
but not yet marked is still umlstate's. Each action is dispatched to one
handler; the handlers resolve user and group names at the moment they run,
since the plan may have just created the group.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import structlog

from umlstate import mconsole
from umlstate.errors import ActionError, HostError
from umlstate.host import netlink, processes, records, sysctl, tun
from umlstate.host.netlink import Netlink
from umlstate.model.snapshot import Proc, Records, Snapshot
from umlstate.model.topology import Topology
from umlstate.plan import actions as A
from umlstate.plan.planner import Plan

log = structlog.get_logger("umlstate")

# The Debian package that ships each program umlstate may run.
PACKAGES = {"groupadd": "passwd", "groupdel": "passwd", "gpasswd": "passwd", "uml_mkcow": "uml-utilities"}
BOOT_TIMEOUT = float(os.environ.get("UMLSTATE_BOOT_TIMEOUT", "90"))
BOOT_GRACE = 3.0
# Actions that are one netlink request each: queued and sent in bulk (netlink.Batch).
BATCHED = (A.MarkTap, A.SetLinkUp, A.DeleteTap, A.AddAddress, A.RemoveAddress, A.AddProxy, A.RemoveProxy)


@dataclass
class Booting:
    proc: Proc
    log: Path
    offset: int  # where this boot's output starts in the log

    def output(self) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


@dataclass
class Result:
    done: list[A.Action] = field(default_factory=list)
    seconds: float = 0.0


class ApplyFailed(ActionError):
    def __init__(self, cause: str, done: list[A.Action], failed: A.Action, left: list[A.Action]) -> None:
        self.done, self.failed, self.left = done, failed, left
        lines = [f"failed: {failed.op} {failed.kind} {failed.target}: {cause}",
                 f"done before the failure: {len(done)} action(s)"]
        lines += [f"  ok   {a.kind} {a.target}: {a.detail}" for a in done[-10:]]
        if len(done) > 10:
            lines.insert(2, f"  ... {len(done) - 10} earlier")
        lines.append(f"not done: {len(left) + 1} action(s), starting with {failed.kind} {failed.target}")
        lines.append("run `umlstate apply` again once the cause is fixed: it continues from the host as it is")
        super().__init__("\n".join(lines))


def programs_needed(plan: Plan) -> set[str]:
    needed = set()
    for action in plan.actions:
        start = action.start if isinstance(action, A.ReplaceGuest) else action
        if isinstance(start, A.StartGuest) and start.cow and start.base:
            needed.add("uml_mkcow")
        if isinstance(action, A.CreateGroup):
            needed.add("groupadd")
        elif isinstance(action, A.DeleteGroup):
            needed.add("groupdel")
        elif isinstance(action, (A.AddGroupMember, A.RemoveGroupMember)):
            needed.add("gpasswd")
    return needed


def check_programs(plan: Plan) -> list[HostError]:
    return [HostError(f"program {p} is not installed", f"apt-get install {PACKAGES[p]}")
            for p in sorted(programs_needed(plan)) if shutil.which(p) is None]


class Executor:
    def __init__(self, topology: Topology, nl: Netlink, *, crash_after: int | None = None,
                 progress: bool = False) -> None:
        self.t = topology
        self.nl = nl
        self.tun_path = topology.tun_path
        # Test hook (UMLSTATE_TEST_CRASH_AFTER): die like kill -9 after k actions.
        self.crash_after = crash_after
        self.progress = progress  # a live line on the terminal while guests boot
        self._handlers: dict[type[A.Action], Callable[[Any], object]] = {
            A.CreateTunNode: self._create_tun_node,
            A.FixTunNode: self._fix_tun_node,
            A.RestoreTunNode: self._restore_tun_node,
            A.DeleteTunNode: self._delete_tun_node,
            A.CreateGroup: lambda a: self._run("groupadd", a.name),
            A.DeleteGroup: lambda a: self._run("groupdel", a.name),
            A.AddGroupMember: lambda a: self._run("gpasswd", "-a", a.user, a.group),
            A.RemoveGroupMember: lambda a: self._run("gpasswd", "-d", a.user, a.group),
            A.SetSysctl: lambda a: sysctl.write(a.key, a.value),
            A.RestoreSysctl: lambda a: sysctl.write(a.key, a.value),
            # Taps and the netlink-only actions have no handler here: apply() sends them in bulk.
            A.FixTap: lambda a: tun.fix_tap(self.tun_path, a.name, _uid(a.owner), _gid(a.group)),
            A.StartSwitch: self._start_switch,
            A.StopSwitch: lambda a: processes.stop_switch(a.proc, a.socket),
            A.ReplaceSwitch: self._replace_switch,
            A.StartGuest: self._start_guest,
            A.StopGuest: lambda a: self.stop_guest(a.name, a.proc),
            A.ReplaceGuest: self._replace_guest,
        }
        self._booting: dict[str, Booting] = {}
        self.batch = netlink.Batch()
        self._dirs_ready = False

    def apply(self, plan: Plan, observed: Snapshot) -> Result:
        start = time.monotonic()
        final = observed
        for action in plan.actions:
            final = action.simulate(final)
        # Write-ahead: everything the plan creates is recorded before it exists.
        creating = {a.target for a in plan.actions if isinstance(a, (A.CreateTap, A.ReplaceTap))}
        records.save(self.t.state_dir, _union(observed.records, final.records, creating))
        result = Result()
        actions = list(plan.actions)
        queued: list[A.Action] = []  # sent with the batch; done once the kernel acked them
        deleting = False  # the queue holds a tap deletion
        in_group = {name for name, link in observed.links.items() if link.group == self.t.link_group}
        i = 0
        while i < len(actions):
            current = actions[i]
            whole_group = self._group_delete(actions[i:], in_group)
            try:
                if whole_group:
                    self._flush(queued, result, actions[i:])
                    deleting = False
                    self.nl.delete_group(self.t.link_group)
                elif isinstance(current, BATCHED):
                    self._queue(current)
                    queued.append(current)
                    deleting = deleting or isinstance(current, A.DeleteTap)
                elif isinstance(current, (A.CreateTap, A.ReplaceTap)):
                    if deleting or isinstance(current, A.ReplaceTap):  # its name must be free first
                        self._flush(queued, result, actions[i:])
                        deleting = False
                    self._make_tap(current)
                    queued.append(current)
                else:
                    self._flush(queued, result, actions[i:])
                    deleting = False
                    self._handlers[type(current)](current)
            except (ActionError, HostError, OSError) as exc:
                cause = str(exc) if not isinstance(exc, OSError) else exc.strerror or str(exc)
                log.error("action failed", op=current.op, kind=current.kind, target=current.target, error=cause)
                raise ApplyFailed(cause, result.done, current, actions[i + 1:]) from None
            if not isinstance(current, (*BATCHED, A.CreateTap, A.ReplaceTap)) or whole_group:
                for done in actions[i:i + max(whole_group, 1)]:
                    self._done(done, result)
            i += max(whole_group, 1)
        self._flush(queued, result, [])
        self._wait_booted()
        records.save(self.t.state_dir, replace(final.records, pending_taps=frozenset(), boot_id=observed.boot_id))
        result.seconds = time.monotonic() - start
        return result

    def _queue(self, a: A.Action) -> None:
        b = self.batch
        if isinstance(a, A.MarkTap):
            b.set_link(a, a.name, alias=a.alias, group=a.link_group)
        elif isinstance(a, A.SetLinkUp):
            b.set_link(a, a.name, up=True)
        elif isinstance(a, A.DeleteTap):
            b.delete_link(a, a.name)
        elif isinstance(a, (A.AddAddress, A.RemoveAddress)):
            b.address(a, a.ifname, a.address, add=isinstance(a, A.AddAddress))
        elif isinstance(a, (A.AddProxy, A.RemoveProxy)):
            b.proxy(a, a.uplink, a.address, add=isinstance(a, A.AddProxy))

    def _flush(self, queued: list[A.Action], result: Result, rest: list[A.Action]) -> None:
        """Send the queued requests; record each acked action; fail on the first that was refused."""
        if not queued:
            return
        limit = None
        if self.crash_after is not None:  # the test hook stops at the exact action count
            limit = max(0, self.crash_after - len(result.done))
        outcomes = self.batch.send(limit)
        failed: list[tuple[A.Action, int]] = []
        for label, code in outcomes:
            assert isinstance(label, A.Action)
            if code:
                failed.append((label, code))
            else:
                self._done(label, result)
        queued.clear()
        if failed:
            action, code = failed[0]
            cause = f"{action.detail}: {os.strerror(code)}"
            log.error("action failed", op=action.op, kind=action.kind, target=action.target, error=cause)
            raise ApplyFailed(cause, result.done, action, [a for a, _ in failed[1:]] + rest)

    def _done(self, action: A.Action, result: Result) -> None:
        log.info("action", op=action.op, kind=action.kind, target=action.target, detail=action.detail,
                 reason=action.reason)
        result.done.append(action)
        self._maybe_crash(len(result.done))

    def _make_tap(self, a: A.CreateTap | A.ReplaceTap) -> None:
        """ioctls now; the mark (ifalias, link group) queued, acked under this action's name."""
        create = a.create if isinstance(a, A.ReplaceTap) else a
        if isinstance(a, A.ReplaceTap):  # the old tap goes first, at once: the ioctl needs its name
            self.batch.delete_link(a, create.name)
            (_, code), = self.batch.send()
            if code:
                raise ActionError(f"delete {create.name}: {os.strerror(code)}")
        tun.create_tap(self.tun_path, create.name, _uid(create.owner), _gid(create.group))
        self.batch.set_link(a, create.name, alias=create.alias, group=create.link_group)

    def _group_delete(self, rest: list[A.Action], in_group: set[str]) -> int:
        """How many leading DeleteTaps one delete-by-group can carry out (0: none).

        Only when they remove every link of umlstate's group: the group then
        holds nothing else that a bulk delete could take with it.
        """
        if not isinstance(rest[0], A.DeleteTap):
            return 0
        n = 0
        while n < len(rest) and isinstance(rest[n], A.DeleteTap):
            n += 1
        return n if n > 1 and {a.target for a in rest[:n]} == in_group else 0

    def _maybe_crash(self, done: int) -> None:
        if self.crash_after is not None and done >= self.crash_after:
            os.kill(os.getpid(), 9)

    # --- handlers --------------------------------------------------------------------

    def _create_tun_node(self, a: A.CreateTunNode) -> None:
        Path(a.path).parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        mode = a.mode if a.mode is not None else 0o600
        os.mknod(a.path, stat.S_IFCHR | mode, os.makedev(10, 200))
        os.chmod(a.path, mode)  # mknod is subject to the umask; the topology is not
        if a.group is not None:
            os.chown(a.path, -1, _gid_required(a.group))

    def _fix_tun_node(self, a: A.FixTunNode) -> None:
        if a.mode is not None:
            os.chmod(a.path, a.mode)
        if a.group is not None:
            os.chown(a.path, -1, _gid_required(a.group))

    def _restore_tun_node(self, a: A.RestoreTunNode) -> None:
        os.chmod(a.path, a.mode)
        os.chown(a.path, -1, a.gid)

    def _delete_tun_node(self, a: A.DeleteTunNode) -> None:
        st = os.lstat(a.path)
        if stat.S_ISCHR(st.st_mode):  # never unlink anything but the node we made
            os.unlink(a.path)

    # --- processes -------------------------------------------------------------------

    def _ensure_dirs(self) -> None:
        """run_dir and uml_dir, writable by the users whose processes create sockets there.

        One process user (the usual case): the folders are theirs, mode 0755.
        Several: root's, mode 1777 like /tmp, so each may create but not remove
        the others' sockets. state_dir (records, logs, COW files) stays root's:
        it decides what root does on the next run.
        """
        if self._dirs_ready:
            return
        users = {sw.user for sw in self.t.switches} | {g.user for g in self.t.guests}
        uids = {_uid(u) for u in users}
        for folder in (Path(self.t.run_dir), Path(self.t.uml_dir)):
            folder.mkdir(parents=True, exist_ok=True)
            if len(uids) == 1:
                uid = next(iter(uids))
                os.chown(folder, uid, pwd.getpwuid(uid).pw_gid if _has_pw(uid) else -1)
                os.chmod(folder, 0o755)  # noqa: S103 - sockets must be reachable by their clients
            else:
                os.chown(folder, 0, 0)
                os.chmod(folder, 0o1777)  # noqa: S103 - sticky: create, never remove others' files
        Path(self.t.state_dir).mkdir(parents=True, exist_ok=True, mode=0o755)
        self._check_reachable()
        self._dirs_ready = True

    def _check_reachable(self) -> None:
        """Each process user must reach its folders: a 0700 folder above them fails late and obscurely."""
        needs: list[tuple[str, str, str]] = [(sw.user, self.t.run_dir, f"switch {sw.name}") for sw in self.t.switches]
        for g in self.t.guests:
            needs.append((g.user, self.t.uml_dir, f"guest {g.name}"))
            needs += [(g.user, str(Path(p).parent), f"guest {g.name}")
                      for p in (self.t.cow_of(g), g.disk.base, g.disk.image) if p]
        for user, folder, who in needs:
            blocked = _unreachable(folder, _uid(user))
            if blocked:
                raise HostError(f"{who} runs as {user}, who cannot reach {folder}: {blocked}",
                                f"chmod o+x on that folder, or choose folders {user} can reach")

    def _log_path(self, name: str) -> Path:
        return Path(self.t.state_dir) / "logs" / f"{name}.log"

    def _start_switch(self, a: A.StartSwitch) -> None:
        self._ensure_dirs()
        socket = Path(a.socket)
        socket.unlink(missing_ok=True)  # left by a dead switch: the snapshot saw none running
        pid = processes.spawn(a.argv, a.user, self._log_path(a.name), tun_path=self.tun_path)
        deadline = time.monotonic() + 5
        while not socket.exists() or (a.tap and not self.nl.carrier(a.tap)):
            if (not a.daemonizes and not processes.alive(Proc(pid, 0, a.argv, 0.0))) or time.monotonic() > deadline:
                what = f"attach to tap {a.tap}" if socket.exists() else f"create its socket {a.socket}"
                raise ActionError(f"switch {a.name} did not {what}; "
                                  + processes.failure_report(self._log_path(a.name)))
            time.sleep(0.02)

    def _replace_switch(self, a: A.ReplaceSwitch) -> None:
        processes.stop_switch(a.stop.proc, a.stop.socket)
        self._start_switch(a.start)

    def _replace_guest(self, a: A.ReplaceGuest) -> None:
        self.stop_guest(a.stop.name, a.stop.proc)
        self._start_guest(a.start)

    def _start_guest(self, a: A.StartGuest) -> None:
        self._ensure_dirs()
        if a.cow and a.base and not os.path.exists(a.cow):
            self._make_cow(a.cow, a.base, a.user)
        # Stale if present: the snapshot saw no live guest behind it.
        processes.remove_umid_dir(Path(self.t.uml_dir) / a.name)
        log_path = self._log_path(a.name)
        offset = log_path.stat().st_size if log_path.exists() else 0
        pid = processes.spawn(a.argv, a.user, log_path, tun_path=self.tun_path)
        try:
            started = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            started = 0.0
        self._booting[a.name] = Booting(Proc(pid, _uid(a.user), a.argv, started), log_path, offset)

    def _make_cow(self, cow: str, base: str, user: str) -> None:
        """uml_mkcow as root, then hand the file to the guest's user, mode 0600."""
        Path(cow).parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._run("uml_mkcow", cow, base)
        uid = _uid(user)
        os.chown(cow, uid, pwd.getpwuid(uid).pw_gid if _has_pw(uid) else -1)
        os.chmod(cow, 0o600)

    def _wait_booted(self) -> None:
        """Wait, for all guests at once, until each one is booted.

        Booted: its mconsole answers `version` and its kernel has started init
        (it logs "Run ... as init process"), or, for a quiet kernel, it is
        still alive GRACE seconds after mconsole answered. mconsole answers
        early, before the root file system is mounted, so its answer alone
        would call a guest ready that is about to panic.
        """
        deadline = time.monotonic() + BOOT_TIMEOUT
        waiting = dict(self._booting)
        answered: dict[str, float] = {}
        while waiting:
            for name, boot in list(waiting.items()):
                output = boot.output()
                if not processes.alive(boot.proc) or "Kernel panic" in output:
                    raise ActionError(f"guest {name} exited right after it started; "
                                      + processes.failure_report(boot.log))
                if name not in answered and mconsole.answers(f"{self.t.uml_dir}/{name}/mconsole", timeout=0.2):
                    answered[name] = time.monotonic()
                if name in answered and ("as init process" in output
                                         or time.monotonic() - answered[name] > BOOT_GRACE):
                    if self.progress:
                        sys.stderr.write("\r\x1b[K")
                    log.info("guest ready", guest=name, pid=boot.proc.pid)
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                name, boot = sorted(waiting.items())[0]
                raise ActionError(f"guest(s) {', '.join(sorted(waiting))} did not answer mconsole within "
                                  f"{BOOT_TIMEOUT:g}s (UMLSTATE_BOOT_TIMEOUT); guest {name}: "
                                  + processes.failure_report(boot.log))
            if waiting:
                if self.progress:
                    took = time.monotonic() - deadline + BOOT_TIMEOUT
                    sys.stderr.write(f"\r  booting {', '.join(sorted(waiting))} ... {took:.1f}s \x1b[K")
                    sys.stderr.flush()
                time.sleep(0.1)
        if self.progress and self._booting:
            sys.stderr.write("\r\x1b[K")
        self._booting.clear()

    def stop_guest(self, name: str, proc: Proc) -> str:
        umid = Path(self.t.uml_dir) / name
        how = processes.stop_guest(proc, str(umid / "mconsole"), umid)
        log.info("guest stopped", guest=name, pid=proc.pid, by=how)
        if how not in ("cad", "already gone"):
            # Usually an init that leaves ctrl-alt-del at 1: cad then reboots the guest.
            log.warning("cad ignored", guest=name)
        return how

    def _run(self, program: str, *args: str) -> None:
        path = shutil.which(program)
        if path is None:
            raise HostError(f"program {program} is not installed", f"apt-get install {PACKAGES[program]}")
        proc = subprocess.run([path, *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ActionError(f"{program} {' '.join(args)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")


def _union(a: Records, b: Records, pending_taps: set[str]) -> Records:
    return Records(
        sysctl_originals={**b.sysctl_originals, **a.sysctl_originals},
        proxies=a.proxies | b.proxies,
        groups_created=a.groups_created | b.groups_created,
        members_added=a.members_added | b.members_added,
        tun_created=a.tun_created or b.tun_created,
        tun_path=a.tun_path or b.tun_path,
        tun_original=a.tun_original or b.tun_original,
        pending_taps=a.pending_taps | pending_taps,
        held=b.held,
        boot_id=a.boot_id,
    )


def _uid(user: str) -> int:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise HostError(f"user {user} does not exist", f"adduser {user}") from None


def _gid(group: str | None) -> int | None:
    return None if group is None else _gid_required(group)


def _gid_required(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise HostError(f"group {group} does not exist", f"addgroup {group}") from None


def _has_pw(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _unreachable(folder: str, uid: int) -> str:
    """Why ``uid`` cannot search its way down to ``folder``, or "" if it can."""
    if uid == 0:
        return ""
    try:
        entry = pwd.getpwuid(uid)
        gids = set(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except KeyError:
        gids = set()
    path = Path(folder)
    for part in [*reversed(path.parents), path]:
        try:
            st = part.stat()
        except OSError:
            return f"{part} does not exist"
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid in gids else 0o001
        if not st.st_mode & bit:
            return f"{part} is mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}, gid {st.st_gid}"
    return ""
