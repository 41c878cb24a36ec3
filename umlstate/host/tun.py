"""Persistent taps, made and re-owned with ioctls on the tun node (tunctl's job).

Host layer, beside ``netlink``: taps are not made over rtnetlink but by
attaching to the tun node (TUNSETIFF) and making the attachment persistent.
Not through a library's tuntap emulation: pyroute2's forks a helper per tap
inside a namespace and, worse, silently re-attaches to an existing tap and
resets its flags. Callers check existence first.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

from umlstate.errors import ActionError
from umlstate.host import trusted

# linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def _attach(tun_path: str, name: str) -> int:
    """Open the tun node and attach to (or create) tap ``name``; return the fd."""
    try:
        fd = os.open(tun_path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        why = {errno.ENODEV: "; the kernel has no tun driver: modprobe tun (CONFIG_TUN)",
               errno.ENXIO: "; the kernel has no tun driver: modprobe tun (CONFIG_TUN)",
               errno.ENOENT: "; declare host.tun so that umlstate makes the node (c 10 200)"}.get(exc.errno or 0, "")
        raise ActionError(f"cannot open the tun device {tun_path}: {exc.strerror}{why}") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        if exc.errno == errno.EBUSY:
            raise ActionError(f"tap {name} is in use by a process (a switch or guest is attached); "
                              "stop it first") from None
        raise ActionError(f"TUNSETIFF {name}: {exc.strerror}") from None
    return fd


def create_tap(tun_path: str, name: str, uid: int, gid: int | None) -> None:
    """tunctl -u UID [-g GID] -t NAME: a persistent tap without packet information."""
    fd = _attach(tun_path, name)
    try:
        _set_owner(fd, name, uid, gid)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as exc:
        raise ActionError(f"tap {name}: {exc.strerror}") from None
    finally:
        os.close(fd)


def fix_tap(tun_path: str, name: str, uid: int, gid: int | None) -> None:
    """Change the owner and group of an existing persistent tap in place."""
    fd = _attach(tun_path, name)
    try:
        _set_owner(fd, name, uid, gid)
    finally:
        os.close(fd)


def _set_owner(fd: int, name: str, uid: int, gid: int | None) -> None:
    try:
        fcntl.ioctl(fd, TUNSETOWNER, uid)
        # The kernel refuses (gid_t)-1: a group can be set but never cleared,
        # so the planner replaces a tap whose group must go.
        if gid is not None:
            fcntl.ioctl(fd, TUNSETGROUP, gid)
    except OSError as exc:
        raise ActionError(f"tap {name}: setting owner {uid}/group {gid}: {exc.strerror}") from None


# --- the device node ------------------------------------------------------------------

TUN_MAJOR, TUN_MINOR = 10, 200


def is_tun_node(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (TUN_MAJOR, TUN_MINOR)

def make_node(path: str, mode: int | None, gid: int | None) -> None:
    """mknod c 10 200 with its mode and group, in a folder checked to be root's alone."""
    with trusted.open_trusted(os.path.dirname(path), create=True) as folder:
        name = os.path.basename(path)
        try:
            folder.mknod_char(name, mode if mode is not None else 0o600, TUN_MAJOR, TUN_MINOR)
        except FileExistsError:  # made meanwhile (hosts of one machine sharing it): fine if it is the device
            folder.chmod_entry(name, mode if mode is not None else 0o600, expect=is_tun_node)
        if gid is not None:
            folder.chown_entry(name, 0, gid, expect=is_tun_node)


def fix_node(path: str, mode: int | None, gid: int | None) -> None:
    """chmod/chgrp the node, and only if it is still the tun device (never through a link)."""
    with trusted.open_trusted(os.path.dirname(path)) as folder:
        name = os.path.basename(path)
        if mode is not None:
            folder.chmod_entry(name, mode, expect=is_tun_node)
        if gid is not None:
            folder.chown_entry(name, 0, gid, expect=is_tun_node)


def delete_node(path: str) -> None:
    """Remove the node umlstate made; anything else standing there now is left alone."""
    with trusted.open_trusted(os.path.dirname(path)) as folder:
        st = folder.lstat(os.path.basename(path))
        if st is not None and is_tun_node(st):
            os.unlink(os.path.basename(path), dir_fd=folder.fd)
