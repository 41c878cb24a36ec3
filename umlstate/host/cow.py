"""UML copy-on-write (COW v3) files, made and read natively.

Host layer: apply creates a guest's COW file with ``write_new`` (no
uml_mkcow run by root on a path a user may influence), observation reads the
header back with ``parse_header`` to see whether the base changed under it.
The layout is arch/um/drivers/cow_user.c's version 3, big-endian and packed:
magic, version, base mtime (32 bits), base size (64), sector size, alignment,
cow_format (0: a bitmap), then the base's path in 4096 bytes. The bitmap of
one bit per sector starts at the header rounded up to the alignment, and the
data at the end of the bitmap rounded up again (cow_sizes); uml_mkcow uses
512-byte sectors and 4096-byte alignment, and sets the size by writing the
file's last byte, so everything else reads as zeros, as after ftruncate.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

from umlstate.errors import ActionError

COW_MAGIC, COW_VERSION = 0x4F4F4F4D, 3
SECTOR_SIZE, ALIGNMENT = 512, 4096  # what uml_mkcow (and UML itself, for ubd0=cow,base) writes
PATH_LEN = 4096
_FIELDS = struct.Struct(">IIIQIII")  # magic, version, mtime, size, sectorsize, alignment, cow_format
HEADER_SIZE = _FIELDS.size + PATH_LEN  # 4128: sizeof(struct cow_header_v3)
HEADER_READ = HEADER_SIZE  # what parse_header needs; UML itself refuses a shorter header


@dataclass(frozen=True)
class CowHeader:
    base: str
    base_mtime: int  # seconds, modulo 2**32 as UML stores it
    base_size: int
    sector_size: int
    alignment: int


def _div_round(value: int, by: int) -> int:
    return -(-value // by)


def _round_up(value: int, align: int) -> int:
    return _div_round(value, align) * align


def header_bytes(base: str, base_mtime: int, base_size: int) -> bytes:
    """The v3 header uml_mkcow writes for ``base`` (an absolute path, as uml_mkcow makes it)."""
    raw = os.fsencode(base)
    if not raw.startswith(b"/") or b"\0" in raw or len(raw) > PATH_LEN - 1:
        raise ActionError(f"cannot record {base!r} as a COW base: it must be an absolute path "
                          f"of at most {PATH_LEN - 1} bytes")
    if not 0 <= base_size < 1 << 64:
        raise ActionError(f"cannot record a size of {base_size} bytes in a COW header")
    fields = _FIELDS.pack(COW_MAGIC, COW_VERSION, base_mtime & 0xFFFFFFFF, base_size, SECTOR_SIZE, ALIGNMENT, 0)
    return fields + raw.ljust(PATH_LEN, b"\0")


def file_size(base_size: int) -> int:
    """The size uml_mkcow gives a COW file over a base of ``base_size`` bytes (cow_sizes, version 3)."""
    bitmap_offset = _round_up(HEADER_SIZE, ALIGNMENT)
    bitmap_len = _div_round(_div_round(base_size, SECTOR_SIZE), 8)  # one bit per sector, in whole bytes
    return _round_up(bitmap_offset + bitmap_len, ALIGNMENT) + base_size


def write_new(fd: int, base: str, base_stat: os.stat_result) -> None:
    """Make a fresh COW file over ``base`` on ``fd``, which the caller just created (O_CREAT|O_EXCL|O_NOFOLLOW).

    The header, then the file extended (sparse) to its full size: the bitmap says no sector is
    copied yet. ``base_stat`` is the base as the caller checked it; only a regular file is accepted
    (a block device's size is not in its stat).
    """
    if not stat.S_ISREG(base_stat.st_mode):
        raise ActionError(f"cannot make a COW file over {base}: it is not a regular file")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
        raise ActionError("refusing to write a COW header on a file that is not new and empty")
    data = header_bytes(base, int(base_stat.st_mtime), base_stat.st_size)
    written = 0
    while written < len(data):
        written += os.pwrite(fd, data[written:], written)
    os.ftruncate(fd, file_size(base_stat.st_size))


def parse_header(data: bytes) -> CowHeader | None:
    """The header at the start of ``data`` (HEADER_READ bytes, read bounded by the caller), or None.

    None for anything but a well-formed v3 header: short input, another magic or version, the
    pre-2006 64-bit layout (the path then starts with four zero bytes; UML recovers those, umlstate
    leaves them to it), zero sector size or alignment, another cow_format, no NUL-terminated path.
    """
    if len(data) < HEADER_SIZE:
        return None
    magic, version, mtime, size, sector_size, alignment, cow_format = _FIELDS.unpack_from(data)
    path = data[_FIELDS.size:HEADER_SIZE]
    end = path.find(b"\0")
    if (magic, version, cow_format) != (COW_MAGIC, COW_VERSION, 0) or path[:4] == b"\0\0\0\0" or end < 1:
        return None
    if sector_size == 0 or alignment == 0:
        return None
    return CowHeader(os.fsdecode(path[:end]), mtime, size, sector_size, alignment)


def read_header(path: str) -> CowHeader | None:
    """The header of the COW file at ``path``, or None (missing, not a regular file, not v3).

    The file may be the guest user's to replace: a link is not followed, a FIFO
    or device is not waited on, and only HEADER_READ bytes are read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return parse_header(os.pread(fd, HEADER_READ, 0))
    except OSError:
        return None
    finally:
        os.close(fd)
