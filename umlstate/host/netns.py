"""Entering the target network namespace, once, before anything else runs.

Every later stage (observation, netlink changes, spawned processes) then lives
in that namespace. setns(2) is used directly: pyroute2's helpers create a
missing namespace unless told not to, and umlstate must never create one.
"""

from __future__ import annotations

import ctypes
import errno
import os

from umlstate.errors import HostError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


def enter(name: str) -> None:
    """Move this process into the existing network namespace ``name``."""
    if not name or "/" in name or name in (".", ".."):
        raise HostError(f"invalid network namespace name {name!r}")
    path = os.path.join(NETNS_RUN_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HostError(f"network namespace {name} does not exist (umlstate never creates one)",
                        f"ip netns add {name}, or check the spelling: ip netns list") from None
    except PermissionError:
        raise HostError(f"entering network namespace {name} needs root, and this is uid {os.geteuid()}",
                        "run umlstate as root (sudo)") from None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            if err == errno.EPERM:
                raise HostError(f"entering network namespace {name} needs root (CAP_SYS_ADMIN), and this is "
                                f"uid {os.geteuid()}", "run umlstate as root (sudo)")
            raise HostError(f"cannot enter network namespace {name}: {os.strerror(err)}")
    finally:
        os.close(fd)
