"""Users and groups by name or number, as the topology writes them: the one place that looks them up.

Host layer. Observation resolves them once into the snapshot (the planner
stays pure); apply resolves them again at the moment it acts, since the plan
may have just created the group.
"""

from __future__ import annotations

import grp
import pwd

from umlstate.errors import HostError


def uid_of(user: str) -> int:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise HostError(f"user {user} does not exist", f"adduser {user}") from None


def gid_of(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise HostError(f"group {group} does not exist", f"addgroup {group}") from None


def primary_gid(uid: int) -> int:
    """The user's own group; a uid without a passwd entry gets the same number."""
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid
