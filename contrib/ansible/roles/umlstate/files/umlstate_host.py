"""The host's side of the rollout's steps: run by the host's Python, one JSON request in, one JSON reply out.

The role's action plugin (``action_plugins/umlstate_host.py``) sends this file
to ``python -I`` on its stdin, the request after it (its length on a line,
then the JSON): one round trip, like a pipelined module, without a module's
wrapping. Standard library only; it runs as root, so the topology copies root
keeps are read and written without following links, in folders only root can
write, and every read is bounded.

- ``stage``: check the copy's folder (made if missing, refused unless only root
  could have written it: ``root_folder``), read the copy the host kept from its
  last run and the move journal (each may be missing), write the new topology
  next to the copy (``<path>.next``) and, unless it is the copy itself,
  validate it with the host's own umlstate.
- ``apply``: write the move journal when asked, put the copy in place
  (rename ``<path>.next`` to it, or write the departure topology), then run
  ``umlstate apply`` on it.
- ``look``, ``pack``, ``unpack``, ``remove``: a moving guest's COW file,
  carried from its old host through the controller to its new one as a
  sparse stream (only its data blocks, compressed): ``pack`` writes it into
  the action's temporary folder on the old host, ``unpack`` makes the file
  from it in a private folder next to the destination and renames it into
  place; ``remove`` removes the old one once the guest runs on its new host
  (and the journal once the disks have landed).
  moves.py carries only a COW file that lies directly in the host's state_dir
  on both sides, a folder umlstate refuses unless it is root's alone: no
  guest's user can swap the file or its folder meanwhile. The file itself is
  the user's, so it is opened without following a link or blocking on a FIFO,
  only a regular file on its folder's mount is carried, read below the size it
  had when opened, and refused if it changes meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

MAX_READ = 4 << 20  # a topology or a journal: text, never this large (umlstate reads no larger topology)


def open_regular(path: str) -> int | None:
    """A regular file, read-only, or None when it is missing: never through a link, never blocking on a FIFO
    (every file this program reads as root: a copy, a journal, a user's COW file, a carried archive)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(exc.errno, f"{path} is not a regular file (a link)") from None
        raise OSError(exc.errno, f"{path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return fd


def read(path: str) -> str | None:
    """The file's text, or None when it is missing; never through a link, never more than MAX_READ."""
    fd = open_regular(path)
    if fd is None:
        return None
    try:
        data = os.read(fd, MAX_READ + 1)
        if len(data) > MAX_READ:
            raise OSError(errno.EFBIG, f"{path} is larger than {MAX_READ} bytes")
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise OSError(errno.EINVAL, f"{path} is not UTF-8 text") from None
    finally:
        os.close(fd)


def root_folder(folder: str) -> bool:
    """Make ``folder`` (and its parents) if missing, root's, 0755; True when it made it.

    What the folder holds decides root's next steps (the kept copy is what the host's timer applies; the
    journal says which COW files to carry), so only root may ever have written there: every folder from /
    to it must be root's and not a link, none writable by others (a sticky one on the way, like /tmp, may
    be crossed: others cannot replace root's entry in it), and none missing below one that others can
    write. A folder that fails is refused, never repaired: a user may have planted files in it already.
    The rule is umlstate's own for the folders it trusts (umlstate.host.trusted), without its links.
    """
    if not os.path.isabs(folder):
        raise OSError(errno.EINVAL, f"{folder} is not an absolute path")
    cur = "/"
    for name in [c for c in folder.split("/") if c]:
        above = os.lstat(cur)
        child = os.path.join(cur, name)
        try:
            st = os.lstat(child)
        except FileNotFoundError:
            if above.st_mode & 0o022:
                raise OSError(errno.EPERM, f"others can write {cur}, so they could make {child} before root "
                                           f"does: make it as root first (mkdir -m 755 {child})") from None
            os.makedirs(folder, mode=0o755)
            return True
        if above.st_mode & 0o022 and not above.st_mode & stat.S_ISVTX:
            raise OSError(errno.EPERM, f"others can write {cur} and so replace {child}: chmod go-w {cur}")
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, f"{child} is not a folder (a link?): give the path without links")
        if st.st_uid != 0:
            raise OSError(errno.EPERM, f"{child} is not root's (uid {st.st_uid}): check what it holds, "
                                       f"then chown root {child}")
        cur = child
    if os.lstat(cur).st_mode & 0o022:
        raise OSError(errno.EPERM, f"others can write {cur}: check what it holds, then chmod go-w {cur}")
    return False


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """``text`` at ``path``, root's, ``mode``, whole or not at all (a temporary file in the same folder, renamed)."""
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".umlstate-stage-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            os.fchown(f.fileno(), 0, 0)
            os.fchmod(f.fileno(), mode)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def run(argv: list[str]) -> tuple[int, str, str]:
    """umlstate's exit code and output; it gets no stdin (ours is the request) and no colours."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False,
                              env={**os.environ, "NO_COLOR": "1"})
    except OSError as exc:  # as a shell says it: 127 not found, 126 not runnable
        return 127 if isinstance(exc, FileNotFoundError) else 126, "", f"{argv[0]}: {exc.strerror or exc}"
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


def stage(host: str, path: str, journal: str, content: str, validate: list[str]) -> dict[str, Any]:
    staged = path + ".next"
    try:
        changed = root_folder(os.path.dirname(path))  # first: what is read below is root's only then
        previous, journaled = read(path), read(journal)
        if read(staged) != content:
            write_atomic(staged, content)
        changed |= content != previous  # staging itself is bookkeeping: a new topology is news
    except OSError as exc:
        return {"failed": True, "rc": 1, "msg": f"staging the topology: {exc.strerror or exc}"}
    # The kept copy was put in place by a run whose stage had this host's umlstate validate it: the same
    # topology again (a re-run) moves nothing, and the apply that follows validates it before it changes
    # anything. A new topology, a copy edited by hand, or a host without a copy is validated now.
    if content != previous:
        rc, out, err = run([*validate, staged])
        if rc != 0:
            return {"failed": True, "rc": rc,
                    "msg": f"this host's umlstate refuses the new topology (exit {rc}):\n{err or out}"}
    # What moves.py reads of each host.
    return {"changed": changed, "staged": staged, "seen": {"name": host, "previous": previous, "journal": journaled}}


def apply(*, path: str, command: list[str], promote: bool = False, content: str | None = None,
          journal: str | None = None, record: str | None = None) -> dict[str, Any]:
    """``record``: the move journal to write at ``journal`` first (a host that guests leave, before they stop),
    in the copy's folder, which the stage checked."""
    try:
        if journal is not None and record is not None:
            write_atomic(journal, record, 0o600)
        if content is not None:
            write_atomic(path, content)
        elif promote and os.path.lexists(path + ".next"):  # a retry finds it renamed already
            os.replace(path + ".next", path)
    except OSError as exc:
        return {"failed": True, "rc": 1, "msg": f"putting the topology in place at {path}: {exc.strerror or exc}"}
    rc, out, err = run([*command, "apply", path, "--yes"])
    result = {"rc": rc, "stdout": out, "stderr": err, "stdout_lines": out.splitlines(),
              "stderr_lines": err.splitlines(), "changed": "Apply complete" in out}
    if rc != 0:
        result.update(failed=True, msg=f"umlstate apply failed (exit {rc})")
    return result


# --- a moving guest's COW file ----------------------------------------------------------------------------------

MAGIC = b"umlstate-cow-1\n"
_HEAD = struct.Struct("!QQ")  # the file's size, its mtime in ns
_RECORD = struct.Struct("!QQ")  # offset, length; then the data
END = 2**64 - 1  # the offset of the last record, of length 0
PIECE = 1 << 16  # data is read, sent and written in pieces this large; an all-zero piece stays a hole
ARCHIVE = "cow.z"  # in the action's temporary folder on each side


def _mount_of(fd: int) -> str:
    """The mount an open file is on (/proc's fdinfo: a bind mount of a file on the same file system too)."""
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
        return next((line.split()[1] for line in info if line.startswith("mnt_id:")), "")


def _mount_of_folder(folder: str) -> str:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _mount_of(fd)
    finally:
        os.close(fd)


def _open_cow(path: str) -> int | None:
    """The COW file (``open_regular``), only where its folder is: a user may mount over a file they own, and
    what is mounted there is not the disk; None when it is missing."""
    try:
        fd = open_regular(path)
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror}: not carried") from None
    if fd is not None and _mount_of(fd) != _mount_of_folder(os.path.dirname(path)):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} has something mounted on it: not carried")
    return fd


def _identity(st: os.stat_result) -> dict[str, int]:
    """What tells one file from another on both hosts of a shared folder (NFS gives each client its own
    st_dev, so it is not part of it)."""
    return {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def look(path: str) -> dict[str, Any]:
    """Where a COW file goes: what is there now (hosts that share the folder see the file already there)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"changed": False, "stat": None}
    return {"changed": False, "stat": {**_identity(st), "regular": stat.S_ISREG(st.st_mode)}}


def _data(fd: int, opened: os.stat_result) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of every piece of the file's data below its size when opened that is not all zeros.

    A user who writes ahead of the reader and punches holes behind it would keep a sparse file's data coming
    without end: each time as much has been read as the file held when opened (st_blocks; some file systems
    count less, or report holes as data), the file is looked at again, and one that changed is refused."""
    size, grant = opened.st_size, opened.st_blocks * 512 + PIECE
    budget, pos = grant, 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left (or the file shrank meanwhile)
                return
            raise
        for offset in range(start, end, PIECE):
            piece = os.pread(fd, min(PIECE, end - offset), offset)
            if not piece:  # the file shrank meanwhile
                return
            budget -= len(piece)
            if budget < 0:
                _unchanged(fd, opened)
                budget = grant
            if piece.strip(b"\0"):
                yield offset, piece
        pos = max(end, start + 1)


def _unchanged(fd: int, opened: os.stat_result) -> None:
    now = os.fstat(fd)
    if (now.st_ctime_ns, now.st_size) != (opened.st_ctime_ns, opened.st_size):
        raise OSError(errno.EBUSY, "changed while it was packed")


def pack(path: str, into: str, same_as: dict[str, int] | None = None) -> dict[str, Any]:
    """The COW file's data, compressed, as ``into``/cow.z (the action's temporary folder on this host, made by
    the connection's user, who is given the archive to fetch it); or nothing, when the file is missing or is
    the very file ``same_as`` describes (both hosts see one file: a shared state_dir).

    Its guest is stopped: a file that changes while it is packed (its user, or a guest still running) is
    refused, and no more is read than the data it held when it was opened."""
    try:
        fd = _open_cow(path)
    except OSError as exc:
        return {"failed": True, "rc": 1, "msg": exc.strerror or str(exc)}
    if fd is None:
        return {"changed": False, "exists": False}
    archive = os.path.join(into, ARCHIVE)
    try:
        st = os.fstat(fd)
        if same_as is not None and {k: same_as.get(k) for k in _identity(st)} == _identity(st):
            return {"changed": False, "exists": True, "shared": True}
        folder = os.lstat(into)
        out_fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(out_fd, "wb") as out:
            os.fchown(out_fd, folder.st_uid, folder.st_gid)
            z = zlib.compressobj(1)
            out.write(z.compress(MAGIC + _HEAD.pack(st.st_size, st.st_mtime_ns)))
            for offset, piece in _data(fd, st):
                out.write(z.compress(_RECORD.pack(offset, len(piece)) + piece))
            out.write(z.compress(_RECORD.pack(END, 0)) + z.flush())
        _unchanged(fd, st)
    except OSError as exc:
        return {"failed": True, "rc": 1, "msg": f"{path} {exc.strerror or exc}: not carried (is its guest still "
                                                f"running?)" if exc.errno == errno.EBUSY else
                f"packing {path}: {exc.strerror or exc}"}
    finally:
        os.close(fd)
    return {"changed": False, "exists": True, "shared": False, "archive": archive, "size": st.st_size}


class _Inflate:
    """Exactly the bytes asked for, from a compressed file, never more than that in memory."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.z, self.buf = f, zlib.decompressobj(), b""

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            if self.z.unconsumed_tail:
                more = self.z.decompress(self.z.unconsumed_tail, n - len(self.buf))
            elif self.z.eof or not (raw := self.f.read(PIECE)):
                raise OSError(errno.EINVAL, "the carried archive ends early: not put in place")
            else:
                more = self.z.decompress(raw, n - len(self.buf))
            self.buf += more
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def end(self) -> None:
        """Nothing after the last record, and the stream's own checksum read and right."""
        while not self.z.eof:
            raw = self.z.unconsumed_tail or self.f.read(PIECE)
            if not raw or self.z.decompress(raw, 1):
                raise OSError(errno.EINVAL, "the carried archive does not end where its records do")
        if self.buf or self.z.unused_data or self.f.read(1):
            raise OSError(errno.EINVAL, "the carried archive has more after its end")


def _account(user: str) -> tuple[int, int]:
    """The user's uid and primary group, as umlstate resolves a guest's user: a name, or a number (a uid
    without a passwd entry keeps its own number as its group)."""
    if user.isdigit():
        uid = int(user)
        try:
            return uid, pwd.getpwuid(uid).pw_gid
        except KeyError:
            return uid, uid
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def unpack(path: str, archive: str, user: str) -> dict[str, Any]:
    """The COW file made from ``archive`` (``pack``'s, sent here), in a private folder next to ``path`` (same
    file system: the last step is a rename) inside a folder only root can write (made if missing, refused
    otherwise, as the copy's folder), holes kept, the guest's user's with mode 0600 as umlstate makes one.
    Replies with the new file's inode and ctime (``keep``): the old one is never removed if it is this very
    file."""
    try:
        uid, gid = _account(user)
    except KeyError:
        return {"failed": True, "rc": 1, "msg": f"unpacking {path}: no user {user} on this host"}
    where = os.path.dirname(path)
    try:
        root_folder(where)
        for name in os.listdir(where):  # what a killed unpack left: root's alone, in root's folder
            if name.startswith(".umlstate-move-"):
                shutil.rmtree(os.path.join(where, name), ignore_errors=True)
        folder = tempfile.mkdtemp(prefix=".umlstate-move-", dir=where)
    except OSError as exc:
        return {"failed": True, "rc": 1, "msg": f"the COW file's folder: {exc.strerror or exc}"}
    try:
        made = os.path.join(folder, "cow")
        in_fd = open_regular(archive)
        if in_fd is None:
            raise OSError(errno.ENOENT, f"the carried archive {archive} is missing")
        with os.fdopen(in_fd, "rb") as f:
            z = _Inflate(f)
            if z.read(len(MAGIC)) != MAGIC:
                raise OSError(errno.EINVAL, "the carried archive is not a COW file's")
            size, mtime_ns = _HEAD.unpack(z.read(_HEAD.size))
            fd = os.open(made, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                last = 0
                while True:
                    offset, length = _RECORD.unpack(z.read(_RECORD.size))
                    if offset == END:
                        break
                    if offset < last or length > PIECE or offset + length > size:
                        raise OSError(errno.EINVAL, "the carried archive is damaged")
                    os.pwrite(fd, z.read(length), offset)
                    last = offset + length
                z.end()
                os.ftruncate(fd, size)
                os.fchown(fd, uid, gid)
                os.fchmod(fd, 0o600)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(made, path)
        placed = os.lstat(path)
        folder_fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder_fd)  # the rename is on disk too
        finally:
            os.close(folder_fd)
    except (OSError, zlib.error) as exc:
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else "the carried archive is damaged"
        return {"failed": True, "rc": 1, "msg": f"unpacking {path}: {cause}: not put in place"}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"changed": True, "size": size, "keep": [placed.st_ino, placed.st_ctime_ns]}


def remove(path: str, keep: list[int] | None = None) -> dict[str, Any]:
    """A moved guest's old COW file once it runs on its new host, or the journal: the name, never what a link
    leads to; never the file ``keep`` names (unpack's inode and ctime: on hosts that share the folder, the old
    name is the new file). The file is opened first: on NFS, that looks the name up afresh rather than from
    a cache that may still hold the file renamed over."""
    try:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            st = os.lstat(path)  # a link: the name alone goes
        else:
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            return {"failed": True, "rc": 1, "msg": f"{path} is a folder: left as it is"}
        if keep is not None and [st.st_ino, st.st_ctime_ns] == list(keep):
            return {"changed": False, "msg": f"{path} is the carried file itself (a folder both hosts share): kept"}
        os.unlink(path)
    except FileNotFoundError:
        return {"changed": False}
    except OSError as exc:
        return {"failed": True, "rc": 1, "msg": f"removing {path}: {exc.strerror or exc}"}
    return {"changed": True}


def main() -> None:
    # What follows this program on stdin: the request's length on a line, then the request (the controller's).
    request = json.loads(sys.stdin.buffer.read(int(sys.stdin.buffer.readline(32))))
    steps: dict[str, Callable[..., dict[str, Any]]] = {"stage": stage, "apply": apply, "look": look, "pack": pack,
                                                       "unpack": unpack, "remove": remove}
    try:
        reply = steps[request["step"]](**request["args"])
    except Exception as exc:  # noqa: BLE001 - one answer in any case, with an exit code for the task's retries
        reply = {"failed": True, "rc": 1, "msg": f"umlstate_host: internal error (a bug): {type(exc).__name__}: {exc}"}
    # One line, the last: whatever a login shell printed before it (a banner, a become marker) is not the reply.
    sys.stdout.write("\n" + json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
