"""Removing a folder a user may write in, bounded and through descriptors only.

Host layer, beside ``safefs`` (whose ``Dir`` it walks). Root empties a guest's
umid folder this way when the guest is gone: its user may have left links,
mount points, a deep or wide tree, or a process that keeps writing there.
"""

from __future__ import annotations

import os
import stat

from umlstate.host.safefs import Dir, UnsafePath

_REMOVE_PASSES = 4  # once a folder is locked one pass empties it and the next sees it empty; the rest is margin


def remove_tree(parent: Dir, name: str, *, max_entries: int = 100000, max_depth: int = 32) -> None:
    """Remove the folder `name` and all below it, through descriptors only.

    Missing is fine; anything but a folder at `name` (a link, say) is unlinked itself. Links are
    removed, never followed; a mount point inside stops the removal. Each folder is first made
    root's with mode 0700, so its user can no longer add entries there, not even through a
    descriptor or working directory kept open. More than `max_entries` entries or `max_depth`
    levels is UnsafePath; what was removed by then stays removed, and every folder still there is
    handed back to its owner with its mode, so root leaves nothing its user can no longer remove.
    """
    st = parent.lstat(name)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent.fd)
        return
    with parent.sub(name) as top:
        _empty(top, os.fstat(parent.fd).st_dev, _Budget(max_entries, top.path), max_depth)
    os.rmdir(name, dir_fd=parent.fd)


class _Budget:
    """How many more entries remove_tree may remove before it gives up."""

    def __init__(self, entries: int, shown: str) -> None:
        self.total = self.left = entries
        self.shown = shown

    def spend(self) -> None:
        if self.left <= 0:
            raise UnsafePath(f"{self.shown} holds more than {self.total} entries; umlstate stopped removing it",
                             f"check why it is so large, then remove it by hand: rm -r --one-file-system {self.shown}")
        self.left -= 1


def _empty(d: Dir, dev: int, budget: _Budget, depth_left: int) -> None:
    st = os.fstat(d.fd)
    if st.st_dev != dev:
        raise UnsafePath(f"{d.path} is a mount point; umlstate does not remove other file systems",
                         f"unmount it: umount {d.path}")
    os.fchown(d.fd, 0, 0)
    os.fchmod(d.fd, 0o700)
    try:
        _empty_owned(d, dev, budget, depth_left)
    except BaseException:
        os.fchown(d.fd, st.st_uid, st.st_gid)
        os.fchmod(d.fd, stat.S_IMODE(st.st_mode))
        raise


def _empty_owned(d: Dir, dev: int, budget: _Budget, depth_left: int) -> None:
    for _ in range(_REMOVE_PASSES):
        names = d.scan(budget.left + 1)  # one more than allowed shows the budget is too small
        if not names:
            return
        for name in names:
            budget.spend()
            try:
                os.unlink(name, dir_fd=d.fd)  # never follows: a link goes, its target stays
            except IsADirectoryError:
                if depth_left <= 0:
                    raise UnsafePath(f"{d.show(name)} is nested too deep; umlstate stopped removing it",
                                     f"remove it by hand: rm -r --one-file-system {d.path}") from None
                with d.sub(name) as below:
                    _empty(below, dev, budget, depth_left - 1)
                os.rmdir(name, dir_fd=d.fd)
            except FileNotFoundError:
                pass
    raise UnsafePath(f"{d.path} keeps filling up while umlstate removes it",
                     f"stop what writes in {d.path}, then run again")
