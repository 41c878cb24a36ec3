"""Kernel parameters under /proc/sys, read and written by their dotted key.

Host layer: observation reads them, apply writes them. Keys come from the
topology (root's) or from umlstate's own records; both follow the model's
key pattern, so a key never climbs out of /proc/sys.
"""

from __future__ import annotations

import os


def path_of(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def read(key: str) -> str | None:
    """The value with white space folded (``tcp_rmem`` separates with tabs); None: no such key."""
    try:
        with open(path_of(key)) as f:
            return " ".join(f.read(4096).split())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def write(key: str, value: str) -> None:
    fd = os.open(path_of(key), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.write(fd, (value + "\n").encode())
    finally:
        os.close(fd)
