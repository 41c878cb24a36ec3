"""Files of the rollout's modules: the topology copies root keeps, read and written without following links.

Shared by ``umlstate_stage`` and ``umlstate_apply`` (Ansible ships this with
each module). The folders are root's (``root_folder`` makes them so), and
every read is bounded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile

MAX_READ = 4 << 20  # a topology or a journal: text, never this large


def read(path: str) -> str | None:
    """The file's text, or None when it is missing; never through a link, never more than MAX_READ."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        data = os.read(fd, MAX_READ + 1)
        if len(data) > MAX_READ:
            raise OSError(errno.EFBIG, f"{path} is larger than {MAX_READ} bytes")
        return data.decode()
    finally:
        os.close(fd)


def root_folder(folder: str) -> bool:
    """Make ``folder`` (and its parents) if missing; make it root's and not writable by group or others,
    as `file: state=directory owner=root mode=go-w` would. True when something changed."""
    changed = False
    if not os.path.lexists(folder):
        os.makedirs(folder, mode=0o755)
        changed = True
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ENOTDIR, f"{folder} is not a folder (a link?)")
    if st.st_uid != 0:
        os.lchown(folder, 0, -1)
        changed = True
    if st.st_mode & 0o022:
        os.chmod(folder, stat.S_IMODE(st.st_mode) & ~0o022)
        changed = True
    return changed


def write_atomic(path: str, text: str) -> None:
    """``text`` at ``path``, root's, 0644, whole or not at all (a temporary file in the same folder, renamed)."""
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".umlstate-stage-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            os.fchown(f.fileno(), 0, 0)
            os.fchmod(f.fileno(), 0o644)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
