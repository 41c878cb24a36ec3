"""A bounded client for UML's management console (mconsole) (host layer).

Used by observation (is the guest alive and answering?) and by the stop sequence
(cad, halt). The protocol (arch/um/drivers/mconsole.h) is one datagram each way on
a unix socket: request {magic 0xcafebabe, version 2, length, 512 bytes of text},
reply {err, more, length, 512 bytes of text}, native byte order, the answer split
into parts while ``more`` is set.

The socket and every reply byte are the guest's: it runs as its user, who may be
hostile. So the socket is opened O_PATH|O_NOFOLLOW and checked (a socket, of the
guest's uid) before anything is sent, and the send goes through /proc/self/fd/N,
that very inode: a link swapped in afterwards is never followed, so root never
writes to, say, /dev/log on a user's behalf. Replies are bounded in time (one
deadline for the whole exchange), parts and bytes, and any lie is an MconsoleError.

uml_mconsole binds its reply socket in the abstract namespace, which is per network
namespace, and so hangs when the guest lives in another one; this client binds a
path in a fresh root-owned folder, and gives that socket to the guest's uid so that
a guest running as nobody may answer.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import struct
import time

from umlstate.errors import ActionError
from umlstate.host.logs import sanitize

MAGIC = 0xCAFEBABE
VERSION = 2
MAX_TEXT = 512  # MCONSOLE_MAX_DATA
_REQUEST = struct.Struct("=III512s")
_REPLY_HEAD = struct.Struct("=III")
_SHOWN = 200  # of a guest's error text, in our message


class MconsoleError(ActionError):
    """The guest's mconsole did not answer, refused the command, or answered nonsense."""


def command(sock_path: str, text: str, *, owner: int | None, timeout: float = 2.0, max_parts: int = 64,
            max_bytes: int = 65536) -> str:
    """Send one command; return the reply (NULs dropped, otherwise as the guest wrote it: sanitize to print).

    The socket is opened O_PATH|O_NOFOLLOW (its folder too, so a linked umid folder is
    refused) and fstat'ed: it must be a socket, owned by ``owner`` when given (the guest's
    declared uid); the send then goes through /proc/self/fd/N. One deadline covers the whole
    exchange; at most ``max_parts`` parts and ``max_bytes`` of text. A short or malformed
    reply, or err != 0, is MconsoleError; so is everything else that goes wrong.
    """
    deadline = time.monotonic() + timeout
    try:
        return _exchange(sock_path, text, owner=owner, deadline=deadline, max_parts=max_parts, max_bytes=max_bytes)
    except MconsoleError:
        raise
    except TimeoutError:
        raise MconsoleError(f"mconsole {_cmd(text)}: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise MconsoleError(f"mconsole {_cmd(text)} at {sock_path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeError, struct.error) as exc:  # a NUL in the path, an unencodable command
        raise MconsoleError(f"mconsole {_cmd(text)}: {exc}") from None


def answers(sock_path: str, *, owner: int | None, timeout: float = 0.5) -> bool:
    """Whether the guest's mconsole answers ``version`` in time."""
    try:
        command(sock_path, "version", owner=owner, timeout=timeout, max_parts=4)
    except MconsoleError:
        return False
    return True


def _cmd(text: str) -> str:
    return repr(text[:40])


def _open_socket(sock_path: str, owner: int | None) -> tuple[int, os.stat_result]:
    """An O_PATH fd of the socket itself, checked; never through a link."""
    folder, name = os.path.split(sock_path)
    # The umid folder is the guest user's too: refuse it as a link, as the socket itself.
    dir_fd = os.open(folder or ".", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    problem = ""
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISSOCK(st.st_mode):
        problem = "is not a socket"
    elif owner is not None and st.st_uid != owner:
        problem = f"belongs to uid {st.st_uid}, not to the guest's uid {owner}"
    if problem:
        os.close(fd)
        raise MconsoleError(f"mconsole socket {sock_path} {problem}; refused")
    return fd, st


def _exchange(sock_path: str, text: str, *, owner: int | None, deadline: float, max_parts: int,
              max_bytes: int) -> str:
    data = text.encode()
    if len(data) >= MAX_TEXT or b"\0" in data:  # UML NUL-terminates the request at data[len]
        raise MconsoleError(f"mconsole command too long or with a NUL: {_cmd(text)}")
    fd, st = _open_socket(sock_path, owner)
    folder = ""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        import tempfile  # here: most passes ask no guest anything (and tempfile imports random)

        folder = tempfile.mkdtemp(prefix="umlstate-mc-")  # root's, 0700: no one can plant anything in it
        os.chmod(folder, 0o711)  # noqa: S103 - search only, so that the guest's user reaches the socket
        reply_path = os.path.join(folder, "reply")
        sock.bind(reply_path)
        if os.geteuid() == 0:
            os.chown(reply_path, st.st_uid if owner is None else owner, -1)
        os.chmod(reply_path, 0o600)
        # Verified on Linux 6.x: connect() on /proc/self/fd/N of an O_PATH fd reaches that socket's inode
        # (the magic link is not resolved by name), so what was checked is what is sent to. Connecting
        # also makes the kernel drop datagrams from any other sender than that socket.
        sock.connect(f"/proc/self/fd/{fd}")
        os.close(fd)
        fd = -1
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.send(_REQUEST.pack(MAGIC, VERSION, len(data), data))
        parts: list[bytes] = []
        total = 0
        for _ in range(max_parts):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            reply = sock.recv(_REPLY_HEAD.size + MAX_TEXT)
            if len(reply) < _REPLY_HEAD.size:
                raise MconsoleError(f"mconsole {_cmd(text)}: a reply of {len(reply)} bytes is too short")
            err, more, length = _REPLY_HEAD.unpack_from(reply)
            if length > MAX_TEXT or length > len(reply) - _REPLY_HEAD.size:
                raise MconsoleError(f"mconsole {_cmd(text)}: a reply claims {length} bytes and holds "
                                    f"{len(reply) - _REPLY_HEAD.size}")
            total += length
            if total > max_bytes:
                raise MconsoleError(f"mconsole {_cmd(text)}: the reply exceeds {max_bytes} bytes")
            parts.append(reply[_REPLY_HEAD.size:_REPLY_HEAD.size + length].replace(b"\0", b""))
            if err:  # UML sets it on the first part only; on a later one it is a lie, and as fatal
                message = sanitize(b"".join(parts).decode(errors="replace"))[:_SHOWN]
                raise MconsoleError(f"mconsole {_cmd(text)}: the guest refused it: {message or f'error {err}'}")
            if not more:
                return b"".join(parts).decode(errors="replace")
        raise MconsoleError(f"mconsole {_cmd(text)}: the reply has more than {max_parts} parts")
    finally:
        if fd >= 0:
            os.close(fd)
        sock.close()
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
