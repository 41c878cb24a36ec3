"""Trusted folders (run_dir, state_dir, a topology's folder): vetted by path, since only root may change them.

Host layer, beside host/safefs.py, which acts inside folders a user can write through descriptors. A path
that passes here can be handed to ``safefs.Dir.open``: nothing but root can change where it leads.
"""

from __future__ import annotations

import contextlib
import os
import stat

from umlstate.errors import HostError
from umlstate.host.safefs import Dir, UnsafePath, describe, kind_of

GO_WRITE = stat.S_IWGRP | stat.S_IWOTH
MAX_LINKS = 40  # the kernel's own limit on symlinks followed in one lookup



def _untrusted(subject: str, comp: str, st: os.stat_result, why: str, fix: str) -> UnsafePath:
    return UnsafePath(f"{subject} is not safe for root: {comp} is {describe(st)}; {why}", fix)


def check_trusted_folder(path: str, what: str) -> None:
    """Raise UnsafePath unless only root can change what `path` (absolute) names.

    `path` and every folder on the way from / must be owned by root and not writable by group or
    others. A sticky folder (like /tmp, mode 1777) may be crossed, as others cannot rename or replace
    the root-owned entry below it, but it cannot be the folder itself. A symlink on the way is followed
    only if owned by root (its folder was checked like any other) and its target is checked the same
    way. A missing tail passes, since root will make it with `Dir.open(create=True)`, unless others
    could write where it would be made, and so make it first.

    Once this passes, nothing but root can change where `path` leads, so `os.path.realpath(path)` is
    safe to hand to `Dir.open`, which refuses links of any owner.
    """
    if not os.path.isabs(path):
        raise UnsafePath(f"{what} {path!r} is not an absolute path", "give the full path, starting with /")
    subject = f"{what} {path}"
    todo = [c for c in reversed(path.split("/")) if c not in ("", ".")]  # a stack: next component last
    root_st = os.lstat("/")
    cur, cur_st = "/", root_st
    fix_owner = "chown root:root {0} && chmod go-w {0}"
    if cur_st.st_uid != 0:
        raise _untrusted(subject, cur, cur_st, "it must be owned by root", fix_owner.format(cur))
    links = 0
    while todo:
        name = todo.pop()
        if cur_st.st_mode & GO_WRITE and not cur_st.st_mode & stat.S_ISVTX:
            raise _untrusted(subject, cur, cur_st, "others could replace what it holds", f"chmod go-w {cur}")
        if name == "..":  # a folder already checked on the way down
            cur = os.path.dirname(cur)
            cur_st = os.lstat(cur)
            continue
        child = os.path.join(cur, name)
        try:
            st = os.lstat(child)
        except FileNotFoundError:
            if cur_st.st_mode & GO_WRITE:
                raise _untrusted(subject, cur, cur_st, f"another user could create {child} before root does",
                                 f"create it as root first: mkdir -m 755 {child}") from None
            return
        if st.st_uid != 0:
            how = "chown -h root:root {0}" if stat.S_ISLNK(st.st_mode) else fix_owner
            raise _untrusted(subject, child, st, "it must be owned by root", how.format(child))
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise UnsafePath(f"{what} {path}: more than {MAX_LINKS} symbolic links on the way",
                                 f"point {what} at the real folder")
            target = os.readlink(child)
            todo.extend(reversed([c for c in target.split("/") if c not in ("", ".")]))
            if target.startswith("/"):
                cur, cur_st = "/", root_st
            continue  # a relative target resolves from the link's own folder, which `cur` still is
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"{what} {path}: {child} is a {kind_of(st)}, not a folder", f"point {what} at a folder")
        cur, cur_st = child, st
    if cur_st.st_mode & GO_WRITE:  # the folder itself: sticky or not, others must not write in it
        raise _untrusted(subject, cur, cur_st, "others could write in it", f"chmod go-w {cur}")


def check_root_file(path: str) -> None:
    """As root, refuse a topology (or saved plan) anyone but root could write: it decides what root runs.

    The file must be root's and not writable by group or others, and so must
    every folder up to / (or sticky, like /tmp, above a root-owned one), for
    the path as given and for where its links lead.
    """
    if os.geteuid() != 0:
        return
    for folder in {os.path.dirname(os.path.abspath(path)), os.path.dirname(os.path.realpath(path))}:
        check_trusted_folder(folder, f"the folder of {path}")
    try:
        st = os.stat(path)
    except OSError:
        return  # the loader says what is wrong with a missing file
    if st.st_uid != 0 or st.st_mode & 0o022 or not stat.S_ISREG(st.st_mode):
        raise HostError(f"{path} is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}; whoever "
                        "can write it decides what root runs, so only root may",
                        f"chown root: {path} && chmod go-w {path}")


def open_trusted(path: str, *, create: bool = False, mode: int = 0o755) -> Dir:
    """A folder checked to be root's up to /; root's own links on the way are resolved first (``mode``: of
    the folders ``create`` makes)."""
    check_trusted_folder(path, path)
    return Dir.open(os.path.realpath(path), create=create, mode=mode)


def read_below(folder: str, below: str, limit: int) -> bytes:
    """A file below a topology's folder (a guest file's ``from``): anyone's file, so each folder on the way is
    opened without following a link, and the file is read with a bound, only if regular and not hard-linked
    (a link planted in a lab folder never makes root read /etc/shadow into a seed)."""
    *steps, name = below.split("/")
    with contextlib.ExitStack() as held:
        current = held.enter_context(open_trusted(folder) if os.geteuid() == 0 else Dir.open(os.path.realpath(folder)))
        for step in steps:
            current = held.enter_context(current.sub(step))
        st = current.lstat(name)
        if st is not None and st.st_nlink != 1:
            raise UnsafePath(f"{folder}/{below} has {st.st_nlink} hard links, so it is also a file elsewhere",
                             "give the guest a copy of its own")
        return current.read(name, limit)
