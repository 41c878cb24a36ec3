"""A client for UML's management console (mconsole), usable across namespaces.

Used by observation (is the guest alive and answering?) and by the stop
sequence (cad, halt). The protocol is one datagram each way on a unix socket:
request {magic 0xcafebabe, version 2, length, 512 bytes of text}, reply
{error, more, length, 512 bytes of text}, native byte order. uml_mconsole
binds its reply socket in the abstract namespace, which is per network
namespace, and so hangs when the guest lives in another one; this client binds
a path, which works from anywhere, and gives it to the guest's user so that a
guest running as nobody may answer.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile

from umlstate.errors import ActionError

MAGIC = 0xCAFEBABE
VERSION = 2
MAX_TEXT = 512
_REQUEST = struct.Struct("=III512s")
_REPLY_HEAD = struct.Struct("=III")


class MconsoleError(ActionError):
    pass


def command(sock_path: str, text: str, timeout: float = 2.0) -> str:
    """Send one command; return the reply text, or raise MconsoleError."""
    data = text.encode()
    if len(data) > MAX_TEXT:
        raise MconsoleError(f"mconsole command too long: {text[:40]}...")
    try:
        owner = os.stat(sock_path).st_uid
    except OSError as exc:
        raise MconsoleError(f"no mconsole socket at {sock_path}: {exc.strerror}") from None
    folder = tempfile.mkdtemp(prefix="umlstate-mc-")
    reply_path = os.path.join(folder, "reply")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        os.chmod(folder, 0o711)  # noqa: S103 - search only, so the guest's user reaches the socket
        sock.bind(reply_path)
        if os.geteuid() == 0:
            os.chown(reply_path, owner, -1)
        os.chmod(reply_path, 0o600)
        sock.settimeout(timeout)
        sock.sendto(_REQUEST.pack(MAGIC, VERSION, len(data), data), sock_path)
        parts = []
        while True:
            reply = sock.recv(_REPLY_HEAD.size + MAX_TEXT)
            err, more, length = _REPLY_HEAD.unpack_from(reply)
            parts.append(reply[_REPLY_HEAD.size:_REPLY_HEAD.size + length].decode(errors="replace"))
            if not more:
                break
        text_out = "".join(parts).rstrip("\0")
        if err:
            raise MconsoleError(f"mconsole {text}: {text_out}")
        return text_out
    except TimeoutError:
        raise MconsoleError(f"mconsole {text}: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise MconsoleError(f"mconsole {text}: {exc.strerror or exc}") from None
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


def answers(sock_path: str, timeout: float = 0.5) -> bool:
    try:
        command(sock_path, "version", timeout)
    except MconsoleError:
        return False
    return True
