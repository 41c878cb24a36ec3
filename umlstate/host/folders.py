"""The folders umlstate runs in: run_dir and state_dir root's, one folder per user inside run_dir.

Host layer, on top of ``safefs``. Before any change, run_dir and state_dir
are checked up to / (root's, not writable by group or others); then each
user whose processes must write something (sockets, UML's uml_dir) gets
``<run_dir>/users/<user>/``, owned by that user, and nothing else under
run_dir is theirs. state_dir (records, logs, COW files by default) stays
root's. Every later operation in a user's folder goes through descriptors:
a link or a swapped folder the user plants is refused, never followed.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass

import structlog

from umlstate.host import safetree
from umlstate.host.logs import LOGS_DIR
from umlstate.host.logs import open_folder as open_logs_of
from umlstate.host.safefs import Dir, UnsafePath
from umlstate.host.trusted import check_trusted_folder, open_trusted
from umlstate.host.users import primary_gid, uid_of
from umlstate.model.topology import USERS_DIR, Topology

log = structlog.get_logger("umlstate")



def check_trusted(t: Topology) -> None:
    """Refuse to run unless run_dir and state_dir (what exists of them) are root's alone, up to /."""
    check_trusted_folder(t.run_dir, "run_dir")
    check_trusted_folder(t.state_dir, "state_dir")


def open_folder(path: str) -> Dir:
    """A folder that may be a user's: trusted ones as above, any other walked without following a link."""
    try:
        return open_trusted(path)
    except UnsafePath:
        return Dir.open(path)


def open_logs(t: Topology) -> Dir | None:
    """state_dir/logs to read from, checked like any trusted folder; None before the first apply made it."""
    return open_logs_of(t.state_dir)


@dataclass
class Folders:
    """The open run_dir/users folder and state_dir/logs of one pass."""

    users: Dir
    logs: Dir

    @classmethod
    def prepare(cls, t: Topology) -> Folders:
        """Make (or fix) every folder the topology's processes need; users get theirs, mode 0755."""
        check_trusted(t)
        with open_trusted(t.run_dir, create=True) as run:
            users = run.sub(USERS_DIR, create=True, mode=0o755, uid=0, gid=0)
        try:
            for user in sorted({sw.runs_as for sw in t.switch_processes} | {g.user for g in t.guests}):
                uid = uid_of(user)
                # 0755: a guest of another user connects to a switch socket in here.
                users.sub(user, create=True, mode=0o755, uid=uid, gid=primary_gid(uid)).close()
            with open_trusted(t.state_dir, create=True) as state:
                logs_dir = state.sub(LOGS_DIR, create=True, mode=0o750, uid=0, gid=0)
        except BaseException:
            users.close()
            raise
        return cls(users, logs_dir)

    def clear_umid(self, user: str, guest: str) -> None:
        """Remove a dead guest's umid folder (pid file, socket) from the user's uml_dir, through descriptors."""
        if self.users.lstat(user) is None:
            return
        with self.users.sub(user) as home:
            st = home.lstat("uml")
            if st is None:
                return
            if not stat.S_ISDIR(st.st_mode):  # a link or file the user planted: it goes, what it names stays
                home.unlink("uml", kinds=("file", "socket", "fifo", "link"))
                return
            with home.sub("uml") as uml:
                try:
                    safetree.remove_tree(uml, guest)
                except UnsafePath as exc:  # nested too deep, too full, a mount: set aside, the guest starts afresh
                    aside = f".{guest}.stale-{secrets.token_hex(4)}"
                    os.rename(guest, aside, src_dir_fd=uml.fd, dst_dir_fd=uml.fd)
                    log.warning("umid folder set aside", guest=guest, folder=f"{uml.path}/{aside}",
                                why=exc.problem, fix=f"its user may remove it: rm -r {uml.path}/{aside}")

    def close(self) -> None:
        self.users.close()
        self.logs.close()
