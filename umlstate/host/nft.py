"""nftables through its own interface: libnftables, speaking the JSON that `nft -j` reads and writes.

Host layer, used by observation (list umlstate's tables) and apply (replace
them in one transaction). libnftables is loaded in-process (no `nft` program
is run): a command is a JSON document, and the kernel applies a document's
commands as one transaction, all or nothing. A listing is read back as
nftables' own text, only to be digested (never parsed). The
context is made after the process entered its network namespace (the CLI
does that first), so every table read or written is that namespace's.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import re
import socket
import struct
from collections.abc import Iterable
from typing import Any

from umlstate.errors import HostError
from umlstate.model.snapshot import LISTING_FORM

PACKAGE = "nftables"  # Debian's package that brings libnftables and the nft program
# What changes while the rules stay the same: the elements that traffic puts in a dynamic set, listed after its
# flags line (whatever order the flags come in) and the lines that follow it within the set (none holds a brace,
# so the match never leaves the set; nor does an element). Handles are not printed in the text listing.
_CHANGING = re.compile(rb"(\n\t*flags [^\n]*\bdynamic\b[^\n]*(?:\n\t*(?!elements = )[^\n{}]*)*?)"
                       rb"\n\t*elements = \{[^}]*\}")
_OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON
_OUTPUT_STATELESS = 1 << 2  # NFT_CTX_OUTPUT_STATELESS: no counter values, so a listing is the same every time


class NftError(HostError):
    """nftables refused a command (the text is libnftables' own message)."""


@functools.cache
def _library() -> ctypes.CDLL | None:
    try:  # by its soname first: find_library runs ldconfig, which costs more than the rest of a quiet pass
        lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
    except OSError:
        from ctypes.util import find_library  # here: it imports subprocess and shutil, a quiet pass needs neither

        try:
            lib = ctypes.CDLL(find_library("nftables") or "libnftables.so.1", use_errno=True)
        except OSError:
            return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    return lib


# nfnetlink: the one message umlstate sends there itself (libnftables has no call for it).
_NETLINK_NETFILTER, _NFT_GETGEN, _NFT_NEWGEN, _NFTA_GEN_ID = 12, (10 << 8) | 16, (10 << 8) | 15, 1


def generation() -> str | None:
    """This namespace's nftables ruleset generation, as "boot:namespace:number"; None when it cannot be read.

    The kernel counts every committed nftables transaction of a namespace (NFT_MSG_GETGEN), so an equal
    generation means that no table changed since; the boot and the namespace's inode make the number
    meaningful only in this namespace's life (a new one counts from the start again)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read(64).strip()
        namespace = os.stat("/proc/self/ns/net").st_ino
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_NETFILTER) as sock:
            sock.settimeout(2.0)
            sock.send(struct.pack("=IHHII", 20, _NFT_GETGEN, 1, 1, 0) + struct.pack("=BBH", socket.AF_UNSPEC, 0, 0))
            reply = sock.recv(4096)
    except OSError:
        return None
    length, kind = struct.unpack_from("=IH", reply)
    offset = 16 + 4  # the header, then struct nfgenmsg
    while kind == _NFT_NEWGEN and offset + 4 <= min(length, len(reply)):
        size, attr = struct.unpack_from("=HH", reply, offset)
        if size < 4:
            break
        if attr & 0x3FFF == _NFTA_GEN_ID and size >= 8:
            return f"{boot}:{namespace}:{struct.unpack_from('!I', reply, offset + 4)[0]}"
        offset += (size + 3) & ~3
    return None


def available() -> bool:
    """Whether libnftables can be loaded here (Debian: the nftables package)."""
    return _library() is not None


class Nft:
    """One libnftables context, in the namespace this process is in."""

    def __init__(self) -> None:
        lib = _library()
        if lib is None:
            raise HostError("nftables is not installed: umlstate's traffic policy needs libnftables",
                            f"apt-get install {PACKAGE}")
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        if not self._ctx:
            raise HostError("libnftables could not make a context (out of memory?)")
        lib.nft_ctx_output_set_flags(self._ctx, _OUTPUT_JSON | _OUTPUT_STATELESS)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def close(self) -> None:
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def __enter__(self) -> Nft:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, text: str) -> None:
        code = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
        if code != 0:
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
            raise NftError(f"nftables refused the command: {_first_lines(err) or f'error {code}'}")

    def run(self, command: str | dict[str, Any]) -> list[dict[str, Any]]:
        """A command (text, or a JSON document {"nftables": [...]}); its JSON output's objects."""
        self._call(command if isinstance(command, str) else json.dumps(command))
        out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
        if not out.strip():
            return []
        objects: list[dict[str, Any]] = json.loads(out).get("nftables", [])
        return [o for o in objects if "metainfo" not in o]

    def tables(self) -> list[tuple[str, str]]:
        """(family, name) of every table in this namespace."""
        return [(o["table"]["family"], o["table"]["name"]) for o in self.run("list tables") if "table" in o]

    def digest(self, tables: Iterable[str]) -> str:
        """A digest of how nftables lists these tables ("family name"), the same for the same rules.

        The listing in nftables' own text, without the elements of dynamic sets (traffic fills them): not
        parsed, since a thousand ports' listing takes longer to walk in Python than to make, and text, not
        JSON, which takes libnftables three times as long to write (a second for a thousand ports)."""
        digest = hashlib.sha256()
        self._lib.nft_ctx_output_set_flags(self._ctx, _OUTPUT_STATELESS)
        try:
            for table in sorted(tables):
                family, name = table.split(" ", 1)
                self._call(f"list table {family} {name}")
                digest.update(steady(self._lib.nft_ctx_get_output_buffer(self._ctx) or b""))
        finally:
            self._lib.nft_ctx_output_set_flags(self._ctx, _OUTPUT_JSON | _OUTPUT_STATELESS)
        return LISTING_FORM + digest.hexdigest()[:16]


def steady(listing: bytes) -> bytes:
    """A table's text listing without what traffic changes (the elements of its dynamic sets)."""
    return _CHANGING.sub(rb"\1", listing)


def _first_lines(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[:lines])
