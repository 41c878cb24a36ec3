"""Kernel parameters under /proc/sys, read and written by their dotted key.

Host layer: observation reads them, apply writes them. Keys come from the
topology (root's) or from umlstate's own records; both follow the model's
key pattern, so a key never climbs out of /proc/sys.
"""

from __future__ import annotations

import os


def path_of(key: str) -> str:
    """Dotted (net.ipv4.ip_forward), or by slashes where a part holds a dot, as sysctl(8) takes it
    (net/ipv6/conf/eth0.100/proxy_ndp: Topology.sysctls writes a link's key so)."""
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


def read(key: str) -> str | None:
    """The value with white space folded (``tcp_rmem`` separates with tabs); None: no such key."""
    try:
        with open(path_of(key)) as f:
            return " ".join(f.read(4096).split())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def quiet_ipv6(link: str) -> None:
    """No router advertisements taken and no address autoconfiguration on a link umlstate made.

    By path, not by dotted key: a link's name may hold a dot. Nothing to do where the kernel runs without
    IPv6 (the folder is missing)."""
    assert "/" not in link and link not in {".", ".."}, f"bug: {link!r} is no link name"
    for key in ("accept_ra", "autoconf"):
        try:
            fd = os.open(f"/proc/sys/net/ipv6/conf/{link}/{key}", os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.write(fd, b"0\n")
        finally:
            os.close(fd)


def write(key: str, value: str) -> None:
    fd = os.open(path_of(key), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.write(fd, (value + "\n").encode())
    finally:
        os.close(fd)
