"""Root's file access in places a user can write: never follow, never hang, never read without bound.

This is the bottom of the host layer. Records, logs, COW files, the run_dir and state_dir setup and
the tun node all reach the file system through it, because umlstate runs as root while the users it
serves (and their guests) may be hostile. In a folder a user can write, that user can plant a
symlink, a hard link, a FIFO, a socket or a huge sparse file, or swap one entry for another between
two of root's system calls. So here:

- folders are held as descriptors (`Dir`) reached one component at a time with O_NOFOLLOW, and every
  action is relative to such a descriptor, never a path that could be re-resolved;
- files are opened O_NOFOLLOW|O_NONBLOCK and checked with fstat on the descriptor itself, so what is
  checked is what is used; anything but a regular file is refused before a byte is read or written;
- reads stop at a byte bound the caller gives; owners and modes are set on descriptors (or through
  /proc/self/fd for entries that must not be opened), never by name.

host/trusted.py is the other half: it vets the paths (run_dir, state_dir) that only root may write, so
that they can be trusted before any per-user folder is made inside them.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import pwd
import secrets
import stat
from collections.abc import Callable
from types import TracebackType

from umlstate.errors import HostError

__all__ = ["Dir", "UnsafePath", "describe", "kind_of", "read_bounded", "read_tail"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO does not wait for a writer (it is then refused by fstat);
# O_NOCTTY: a terminal a user swapped in never becomes root's controlling tty.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK = 1 << 16

_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "folder",
    stat.S_IFLNK: "link",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char device",
    stat.S_IFBLK: "block device",
}


class UnsafePath(HostError):
    """A path root was asked to use could make it act on something a user planted or chose."""


def kind_of(st: os.stat_result) -> str:
    return _KINDS.get(stat.S_IFMT(st.st_mode), "special file")


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def describe(st: os.stat_result) -> str:
    return f"owned by {_owner(st.st_uid)} with mode {stat.S_IMODE(st.st_mode):04o}"


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsafePath(f"refusing the file name {name!r}: it must be one plain path component",
                         "use a name without '/' that is not '.' or '..'")
    return name


def _planted(shown: str, st: os.stat_result, wanted: str) -> UnsafePath:
    return UnsafePath(f"{shown} is a {kind_of(st)} ({describe(st)}) where umlstate expects {wanted}; "
                      "it refuses to use it", f"check who put it there (it may be an attack), then remove {shown}")


def _open_error(dir_fd: int, name: str, shown: str, err: OSError) -> Exception:
    """Turn the errors that O_NOFOLLOW, O_DIRECTORY and O_NONBLOCK give on a planted entry into UnsafePath."""
    if err.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
        return err
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return err  # gone again: report what open saw
    return _planted(shown, st, "a folder" if err.errno == errno.ENOTDIR else "a regular file")


# ---------------------------------------------------------------------------------------------
# Reading what a user controls: regular files only, bounded, never blocking.


def _open_regular(dir_fd: int, name: str, shown: str) -> tuple[int, os.stat_result]:
    """Open `name` for reading; refuse anything but a regular file. Missing: FileNotFoundError."""
    # Look before opening, so that a device node is never opened (an open can have side effects);
    # what a user can swap in afterwards (link, FIFO, socket, folder) is caught by the flags and fstat.
    try:
        st = os.stat(_check_name(name), dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), shown) from None
    if not stat.S_ISREG(st.st_mode):
        raise _planted(shown, st, "a regular file")
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        raise _open_error(dir_fd, name, shown, e) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _planted(shown, st, "a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _read_upto(fd: int, limit: int) -> bytes:
    parts: list[bytes] = []
    while limit > 0 and (chunk := os.read(fd, min(limit, _CHUNK))):
        parts.append(chunk)
        limit -= len(chunk)
    return b"".join(parts)


def _read(dir_fd: int, name: str, shown: str, max_bytes: int) -> bytes:
    fd, st = _open_regular(dir_fd, name, shown)
    try:
        # st_size is checked first to refuse at once, the read bound catches a file that grows
        # meanwhile, and files that report no size (/proc) are still read in full.
        data = b"" if st.st_size > max_bytes else _read_upto(fd, max_bytes + 1)
    finally:
        os.close(fd)
    if st.st_size > max_bytes or len(data) > max_bytes:
        size = f"{st.st_size} bytes" if st.st_size > max_bytes else f"over {max_bytes} bytes"
        raise UnsafePath(f"{shown} holds {size}, more than the {max_bytes} umlstate reads from it",
                         f"check what wrote it, then remove or truncate {shown}")
    return data


def _read_tail(dir_fd: int, name: str, shown: str, max_bytes: int) -> bytes:
    fd, st = _open_regular(dir_fd, name, shown)
    try:
        os.lseek(fd, max(0, st.st_size - max_bytes), os.SEEK_SET)  # a sparse hole before is never read
        return _read_upto(fd, max_bytes)
    finally:
        os.close(fd)


def _parent(path: str) -> tuple[Dir, str]:
    """The folder of an absolute path, opened following root's own links, and the final name."""
    if not os.path.isabs(path):
        raise UnsafePath(f"{path!r} is not an absolute path", "give the full path, starting with /")
    folder, name = os.path.split(path)
    _check_name(name)
    return Dir(os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), folder), name


def read_bounded(path: str, max_bytes: int) -> bytes:
    """Read a whole regular file, at most `max_bytes` (a larger one: UnsafePath naming its size).

    Only the final component is opened O_NOFOLLOW; a FIFO, device, socket or folder is refused at once.
    """
    d, name = _parent(path)
    with d:
        return d.read(name, max_bytes)


def read_tail(path: str, max_bytes: int) -> bytes:
    """The last `max_bytes` of a regular file, by the rules of `read_bounded`; a huge sparse file costs nothing.

    The end is found by the file's size, so a file that reports none (/proc) gives its first `max_bytes`.
    """
    d, name = _parent(path)
    with d:
        return d.read_tail(name, max_bytes)


# ---------------------------------------------------------------------------------------------
# Dir: all actions relative to a folder descriptor.


class Dir:
    """An open folder (read-only descriptor, O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC) that root acts in by name.

    Every method takes one plain name in this folder and never follows a link there. `path` is for
    messages only; nothing ever re-resolves it.
    """

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def open(cls, path: str, *, create: bool = False, mode: int = 0o755) -> Dir:
        """Walk from / one component at a time; a symlink anywhere is refused with UnsafePath.

        Callers that accept root's own links vet the path with check_trusted_folder and then pass its
        realpath. With `create`, missing folders are made by root with `mode`.
        """
        if not os.path.isabs(path):
            raise UnsafePath(f"{path!r} is not an absolute path", "give the full path, starting with /")
        d = cls(os.open("/", _DIR_FLAGS), "/")
        try:
            for name in path.split("/"):
                if name not in ("", "."):
                    below = d._sub(name, create=create, mode=mode, uid=None, gid=None, enforce=False)
                    d.close()
                    d = below
        except BaseException:
            d.close()
            raise
        return d

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Dir:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Dir({self.path!r}, fd={self.fd})"

    def show(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _open(self, name: str, flags: int, mode: int = 0o600) -> int:
        try:
            return os.open(_check_name(name), flags, mode, dir_fd=self.fd)
        except OSError as e:
            raise _open_error(self.fd, name, self.show(name), e) from e

    def sub(self, name: str, *, create: bool = False, mode: int | None = None, uid: int | None = None,
            gid: int | None = None) -> Dir:
        """The folder `name` in this one, made by root if `create` and missing.

        A folder made here gets `mode` (0755 if None). `uid`, `gid` and `mode`, when given, are also
        set on a folder that was already there: on the new descriptor, so on that very folder.
        """
        return self._sub(name, create=create, mode=mode, uid=uid, gid=gid, enforce=True)

    def _sub(self, name: str, *, create: bool, mode: int | None, uid: int | None, gid: int | None,
             enforce: bool) -> Dir:
        made = False
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(_check_name(name), 0o700, dir_fd=self.fd)  # private until its owner and mode are set
                made = True
        d = Dir(self._open(name, _DIR_FLAGS), self.show(name))
        try:
            if made or enforce:
                if uid is not None or gid is not None:
                    os.fchown(d.fd, -1 if uid is None else uid, -1 if gid is None else gid)
                if made or mode is not None:  # after fchown, which may clear set-id bits
                    os.fchmod(d.fd, 0o755 if mode is None else mode)
        except BaseException:
            d.close()
            raise
        return d

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry itself, not what a link points to; None if missing."""
        try:
            return os.stat(_check_name(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def scan(self, limit: int) -> list[str]:
        """Up to `limit` names in this folder, from the first."""
        os.lseek(self.fd, 0, os.SEEK_SET)  # scandir reads through a copy sharing this position: start at the first
        with os.scandir(self.fd) as entries:
            return [e.name for e in itertools.islice(entries, limit)]

    def names(self, limit: int = 10000) -> list[str]:
        """The names in this folder; more than `limit` of them is UnsafePath rather than a huge list."""
        found = self.scan(limit + 1)
        if len(found) > limit:
            raise UnsafePath(f"{self.path} holds more than {limit} entries",
                             f"remove what does not belong in {self.path}")
        return found

    def read(self, name: str, max_bytes: int) -> bytes:
        """A whole regular file; larger than `max_bytes`: UnsafePath; missing: FileNotFoundError."""
        return _read(self.fd, name, self.show(name), max_bytes)

    def read_tail(self, name: str, max_bytes: int) -> bytes:
        """The last `max_bytes` of a regular file, read from the end."""
        return _read_tail(self.fd, name, self.show(name), max_bytes)

    def create_file(self, name: str, mode: int, *, uid: int = 0, gid: int = 0, exclusive: bool = True) -> int:
        """A new regular file given to uid:gid with `mode` whatever the umask; returns its write descriptor.

        `exclusive` (O_EXCL) refuses any existing entry, link or not (FileExistsError). Without it, an
        existing regular file with no other hard link is emptied and reused.
        """
        fd = self._open(name, _WRITE_FLAGS | (os.O_EXCL if exclusive else 0))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # O_NONBLOCK made a FIFO with a reader open: refuse it here
                raise _planted(self.show(name), st, "a regular file")
            if st.st_nlink != 1:  # a hard link to a file elsewhere: truncating would reach that file
                raise UnsafePath(f"{self.show(name)} has {st.st_nlink} hard links, so it is also a file elsewhere",
                                 f"remove {self.show(name)}")
            if not exclusive:
                os.ftruncate(fd, 0)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_append(self, name: str, mode: int) -> int:
        """A root-owned log file opened for appending, made with `mode` if missing; returns its descriptor.

        An existing entry must be a regular file owned by root with no other hard link; anything else
        is UnsafePath.
        """
        fd = self._open(name, _WRITE_FLAGS | os.O_APPEND)
        try:
            st = os.fstat(fd)
            shown = self.show(name)
            if not stat.S_ISREG(st.st_mode):
                raise _planted(shown, st, "a regular file")
            if st.st_uid != 0:
                raise UnsafePath(f"{shown} is {describe(st)}, not a log file of root's", f"remove {shown}")
            if st.st_nlink != 1:
                raise UnsafePath(f"{shown} has {st.st_nlink} hard links, so it is also a file elsewhere",
                                 f"remove {shown}")
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fd, mode)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def write_atomic(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Replace `name` with a root-owned file holding `data`: readers see the old or the new, whole."""
        st = self.lstat(name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise _planted(self.show(name), st, "a regular file")
        tmp = f".{name[:200]}.{secrets.token_hex(6)}.tmp"
        fd = self.create_file(tmp, mode, uid=os.geteuid(), gid=os.getegid())  # root's, when root writes it
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            # rename replaces the entry itself: a link at `name` goes, its target is never written
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)
            raise
        os.fsync(self.fd)  # make the rename itself durable

    def unlink(self, name: str, *, kinds: tuple[str, ...] = ("file", "socket", "fifo", "link")) -> bool:
        """Remove `name` if it is one of `kinds` (a link goes, its target stays); False if missing.

        Any other kind is UnsafePath. A folder is never removed: should one be swapped in after the
        check, unlink(2) fails on it.
        """
        st = self.lstat(name)
        if st is None:
            return False
        if kind_of(st) not in kinds or stat.S_ISDIR(st.st_mode):
            raise _planted(self.show(name), st, " or ".join(f"a {k}" for k in kinds))
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def mknod_char(self, name: str, mode: int, major: int, minor: int) -> None:
        """Make a character device node with exactly `mode` (the umask cannot widen or narrow it)."""
        dev = os.makedev(major, minor)
        os.mknod(_check_name(name), stat.S_IFCHR | 0o600, dev, dir_fd=self.fd)
        self.chmod_entry(name, mode, expect=lambda st: stat.S_ISCHR(st.st_mode) and st.st_rdev == dev)

    def chmod_entry(self, name: str, mode: int, *, expect: Callable[[os.stat_result], bool]) -> os.stat_result:
        """chmod the entry if `expect` accepts its lstat (a link never is); returns the new stat."""
        return self._act_on_entry(name, expect, lambda p: os.chmod(p, mode))

    def chown_entry(self, name: str, uid: int, gid: int, *,
                    expect: Callable[[os.stat_result], bool]) -> os.stat_result:
        """chown the entry if `expect` accepts its lstat (a link never is); returns the new stat."""
        return self._act_on_entry(name, expect, lambda p: os.chown(p, uid, gid))

    def _act_on_entry(self, name: str, expect: Callable[[os.stat_result], bool],
                      act: Callable[[str], None]) -> os.stat_result:
        # O_PATH pins the inode without opening it (no device open, no FIFO wait); with O_NOFOLLOW a
        # link yields the link itself, refused below.
        fd = self._open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode) or not expect(st):
                raise _planted(self.show(name), st, "another kind of entry")
            act(f"/proc/self/fd/{fd}")  # the very inode checked above, whatever `name` has become since
            return os.fstat(fd)
        finally:
            os.close(fd)
