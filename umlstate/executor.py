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
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from umlstate import actions as A
from umlstate import kernel, records
from umlstate.errors import ActionError, HostError
from umlstate.kernel import Netlink
from umlstate.model import Topology
from umlstate.observe import sysctl_path
from umlstate.planner import DEFAULT_TUN, Plan
from umlstate.snapshot import Records, Snapshot

log = structlog.get_logger("umlstate")

# The Debian package that ships each program umlstate may run.
PACKAGES = {"groupadd": "passwd", "groupdel": "passwd", "gpasswd": "passwd"}


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
    def __init__(self, topology: Topology, netlink: Netlink, *, crash_after: int | None = None) -> None:
        self.t = topology
        self.nl = netlink
        self.tun_path = topology.host.tun.path if topology.host.tun else DEFAULT_TUN
        # Test hook (UMLSTATE_TEST_CRASH_AFTER): die like kill -9 after k actions.
        self.crash_after = crash_after
        self._handlers: dict[type[A.Action], Callable[[Any], None]] = {
            A.CreateTunNode: self._create_tun_node,
            A.FixTunNode: self._fix_tun_node,
            A.RestoreTunNode: self._restore_tun_node,
            A.DeleteTunNode: self._delete_tun_node,
            A.CreateGroup: lambda a: self._run("groupadd", a.name),
            A.DeleteGroup: lambda a: self._run("groupdel", a.name),
            A.AddGroupMember: lambda a: self._run("gpasswd", "-a", a.user, a.group),
            A.RemoveGroupMember: lambda a: self._run("gpasswd", "-d", a.user, a.group),
            A.SetSysctl: lambda a: _write_sysctl(a.key, a.value),
            A.RestoreSysctl: lambda a: _write_sysctl(a.key, a.value),
            A.CreateTap: self._create_tap,
            A.ReplaceTap: self._replace_tap,
            A.FixTap: lambda a: kernel.fix_tap(self.tun_path, a.name, _uid(a.owner), _gid(a.group)),
            A.MarkTap: lambda a: self.nl.mark(a.name, a.alias, a.link_group),
            A.SetLinkUp: lambda a: self.nl.set_up(a.name),
            A.DeleteTap: lambda a: self.nl.delete_link(a.name),
            A.AddAddress: lambda a: self.nl.add_address(a.ifname, a.address),
            A.RemoveAddress: lambda a: self.nl.remove_address(a.ifname, a.address),
            A.AddProxy: lambda a: self.nl.add_proxy(a.uplink, a.address),
            A.RemoveProxy: lambda a: self.nl.remove_proxy(a.uplink, a.address),
        }

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
        i = 0
        while i < len(actions):
            batch = self._group_delete(actions[i:], observed)
            current = actions[i]
            try:
                if batch:
                    self.nl.delete_group(self.t.link_group)
                else:
                    self._handlers[type(current)](current)
            except (ActionError, HostError, OSError) as exc:
                cause = str(exc) if not isinstance(exc, OSError) else exc.strerror or str(exc)
                log.error("action failed", op=current.op, kind=current.kind, target=current.target, error=cause)
                raise ApplyFailed(cause, result.done, current, actions[i + 1:]) from None
            for done in actions[i:i + max(batch, 1)]:
                log.info("action", op=done.op, kind=done.kind, target=done.target, detail=done.detail,
                         reason=done.reason)
                result.done.append(done)
                self._maybe_crash(len(result.done))
            i += max(batch, 1)
        records.save(self.t.state_dir, replace(final.records, pending_taps=frozenset()))
        result.seconds = time.monotonic() - start
        return result

    def _group_delete(self, rest: list[A.Action], observed: Snapshot) -> int:
        """How many leading DeleteTaps one delete-by-group can carry out (0: none).

        Only when they remove every link of umlstate's group: the group then
        holds nothing else that a bulk delete could take with it.
        """
        n = 0
        while n < len(rest) and isinstance(rest[n], A.DeleteTap):
            n += 1
        names = {a.target for a in rest[:n]}
        in_group = {name for name, link in observed.links.items() if link.group == self.t.link_group}
        return n if n > 1 and names == in_group else 0

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

    def _create_tap(self, a: A.CreateTap) -> None:
        kernel.create_tap(self.tun_path, a.name, _uid(a.owner), _gid(a.group))
        self.nl.mark(a.name, a.alias, a.link_group)

    def _replace_tap(self, a: A.ReplaceTap) -> None:
        self.nl.delete_link(a.create.name)
        self._create_tap(a.create)

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
        tun_original=a.tun_original or b.tun_original,
        pending_taps=a.pending_taps | pending_taps,
    )


def _write_sysctl(key: str, value: str) -> None:
    with open(sysctl_path(key), "w") as f:
        f.write(value + "\n")


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
