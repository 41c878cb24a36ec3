"""What a UML kernel supports, read from the binary without ever running it.

Host layer, used by observation: a guest's ``kernel`` is named by the topology
for a user and may be writable by that user, so root must not execute it, not
even ``linux.uml --showconfig``. The text that option prints is in the binary:
arch/um/kernel/Makefile turns every line of .config into one C string literal
(``"LINE\\n",``) of the array ``config[]`` in config.c, which --showconfig
prints in order. The compiler and linker put those literals one after the
other in .rodata, each ending in ``\\n\\0`` (Debian's bookworm 6.1 kernel:
about 3,500 lines at 7.8 MB into the 10 MB file), starting with kconfig's
header ``# Automatically generated file; DO NOT EDIT.``. The linker merges
identical strings, so repeated lines (``#``, empty) may be missing from the
run, which costs nothing: the options are unique lines. Very old kernels
(2.6) embed the whole file as one string; the same walk reads both.

The file is read with pread in bounded chunks, not mmap: a user who owns the
file can truncate it during the scan, and a read past the end of a mapping
is a SIGBUS that would kill umlstate. It is opened without side effects
(O_PATH, then reopened through /proc only when it is a regular file), so a
FIFO, a device or a huge sparse file is refused at once. In an ELF file only
the loaded data sections are scanned (no code, no debug info): about 7 ms for
Debian's kernel. The answer is only as true as the file: a user who writes
their kernel can make it claim any option, which only changes the command
line of their own guest.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_SIZE = 512 << 20
CHUNK = 4 << 20
CONFIG_WINDOW = 4 << 20  # the config text after its header: ~150 KB for a distribution kernel
_OVERLAP = 256  # longer than every needle, so none is missed across two chunks
_MAX_PADDING = 64  # NULs tolerated between two lines (alignment of the literals)
_SHT_PROGBITS, _SHF_ALLOC, _SHF_EXECINSTR = 1, 0x2, 0x4

HEADERS = (b"# Automatically generated file; DO NOT EDIT.\n", b"# Automatically generated make config: don't edit")
BANNER = b"Linux version "
_BANNER_RE = re.compile(rb"Linux version (\d+\.\d+[0-9A-Za-z.+~_-]*) \(")
_KCONFIG_VERSION_RE = re.compile(rb"# Linux/\S+ (\d+\.\d+\S*) Kernel Configuration\n")
_LINE_RE = re.compile(rb"(?:(CONFIG_[A-Za-z0-9_]+)=([^\n\0]*)|#[^\n\0]*|)\n")

LEGACY = {"daemon": "CONFIG_UML_NET_DAEMON", "vde": "CONFIG_UML_NET_VDE", "tuntap": "CONFIG_UML_NET_TUNTAP"}
VECTOR = "CONFIG_UML_NET_VECTOR"
# What every vector driver has (its Kconfig help: "provides tap, raw, gre and l2tpv3 network transports").
VECTOR_BASE = frozenset({"tap", "raw", "gre", "l2tpv3"})
# The others came later and no option tells them apart; the code of each is recognised by a message of
# its init function in arch/um/drivers/vector_user.c. vde (transport=vde,vnl=...) needs no option
# either: the guest's UML process runs the host's vdeplug4 ``vde_plug`` over a seqpacket socketpair.
# Debian's 6.1 has seqpacket:// and vde_plug strings too, but from its legacy vde driver, not this one.
VECTOR_MARKERS = {
    "hybrid": b"user_init_hybrid: init failed",
    "bess": b"bess open:cannot connect to",
    "fd": b"fd open: bad or missing fd argument",
    "vde": b"vde: seqpacket socketpair err",
}


@dataclass(frozen=True)
class KernelInfo:
    version: str | None  # the release in the "Linux version ..." banner (else the kconfig header's)
    options: frozenset[str]  # CONFIG_* names set to y
    seen: frozenset[str] = field(default=frozenset())  # VECTOR_MARKERS keys whose code is in the binary

    @property
    def transports(self) -> frozenset[str]:
        """daemon, vde, tuntap (legacy, ethN=) and vector (vecN:) as built in."""
        found = {name for name, option in LEGACY.items() if option in self.options}
        if VECTOR in self.options:
            found.add("vector")
        return frozenset(found)

    @property
    def vector_only(self) -> bool:
        """A kernel like Linux >= 6.16: the vector driver and none of the legacy transports umlstate uses."""
        return self.transports == {"vector"}

    @property
    def vector_transports(self) -> frozenset[str]:
        """The vecN:transport= values: VECTOR_BASE from the option, the others from their code (see above)."""
        return VECTOR_BASE | self.seen if VECTOR in self.options else frozenset()


_cache: OrderedDict[tuple[int, ...], KernelInfo | None] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 32


def inspect(path: str) -> KernelInfo | None:
    """The configuration built into the UML kernel at ``path``, read as data, never executed.

    None when it is not a readable regular file of at most MAX_SIZE bytes, or when no embedded
    configuration is found: the caller then treats the kernel's transports as unknown. Cached per
    (st_dev, st_ino, st_mtime_ns, st_size, st_ctime_ns): ctime too, since a file's owner can put back
    its mtime but not its ctime.
    """
    fd = _open_regular(path)
    if fd is None:
        return None
    try:
        before = os.fstat(fd)
        key = _key(before)
        with _cache_lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
        info = _scan(fd, min(before.st_size, MAX_SIZE))  # it may have grown since it was checked
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_mtime_ns, after.st_size, after.st_ctime_ns) == key[2:]:  # not changed while read: keep it
        with _cache_lock:
            _cache[key] = info
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return info


def stamp(path: str) -> tuple[int, ...] | None:
    """What ``inspect`` keys its result by, for the file at ``path`` now (links followed, as it does); None when
    there is none. An equal stamp means an equal answer."""
    try:
        return _key(os.stat(path))
    except (OSError, ValueError):
        return None


def _key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns)


def _open_regular(path: str) -> int | None:
    """A read-only fd on ``path`` if it is a regular file no larger than MAX_SIZE, else None.

    O_PATH opens nothing (no driver open, no FIFO wait); only a regular file is then opened for
    reading, through /proc/self/fd so that it is the very inode just checked, whatever the path
    points to by then. Links are followed: reading through one is harmless.
    """
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SIZE:
            return None
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(f"/proc/self/fd/{pfd}", flags)
        except FileNotFoundError:  # no /proc: the path again, checked below to be the same inode
            fd = os.open(path, flags)
    except OSError:
        return None
    finally:
        os.close(pfd)
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or now.st_size > MAX_SIZE:
        os.close(fd)
        return None
    return fd


def _regions(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, end) of the parts of the file worth scanning: an ELF file's loaded, non-code sections.

    The strings are in .rodata; skipping code and debug sections cuts the scan by 5 to 20 times.
    Anything that does not read as a sane ELF section table means the whole file.
    """
    whole = [(0, size)]
    ident = os.pread(fd, 64, 0)
    if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        return whole
    wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
    # e_shoff, then e_shentsize and e_shnum (ELF64 and ELF32 place them differently)
    (shoff,) = struct.unpack_from(order + ("Q" if wide else "I"), ident, 0x28 if wide else 0x20)
    entsize, count = struct.unpack_from(order + "HH", ident, 0x3A if wide else 0x2E)
    # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size
    shape = struct.Struct(order + ("IIQQQQ" if wide else "IIIIII"))
    if not 0 < count <= 4096 or entsize < shape.size or shoff + count * entsize > size:
        return whole
    table = os.pread(fd, count * entsize, shoff)
    if len(table) < count * entsize:
        return whole
    found = []
    for i in range(count):
        _, kind, flags, _, offset, length = shape.unpack_from(table, i * entsize)
        if kind == _SHT_PROGBITS and flags & _SHF_ALLOC and not flags & _SHF_EXECINSTR and length:
            if offset + length > size:
                return whole
            found.append((offset, offset + length))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged or whole


def _chunks(fd: int, regions: list[tuple[int, int]]) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) over the regions, each chunk overlapping the previous one by _OVERLAP bytes."""
    for start, end in regions:
        for offset in range(start, end, CHUNK):
            data = os.pread(fd, min(CHUNK + _OVERLAP, end - offset), offset)
            if not data:
                return  # truncated meanwhile
            yield offset, data


def _scan(fd: int, size: int) -> KernelInfo | None:
    headers: list[int] = []
    version: str | None = None
    seen: set[str] = set()
    try:
        for offset, data in _chunks(fd, _regions(fd, size)):
            for header in HEADERS:
                at = data.find(header)
                while at >= 0 and len(headers) < 8:
                    if offset + at not in headers:
                        headers.append(offset + at)
                    at = data.find(header, at + 1)
            at = data.find(BANNER) if version is None else -1
            while at >= 0 and version is None:
                match = _BANNER_RE.match(data, at, at + 128)
                version = match.group(1).decode("ascii") if match else None
                at = data.find(BANNER, at + 1)
            seen.update(name for name, marker in VECTOR_MARKERS.items() if name not in seen and marker in data)
        for at in sorted(headers):
            window = os.pread(fd, CONFIG_WINDOW, at)
            options = _options(window)
            if options:
                if version is None:
                    match = _KCONFIG_VERSION_RE.search(window, 0, 512)
                    version = match.group(1).decode("ascii", "replace") if match else None
                return KernelInfo(version, options, frozenset(seen))
    except OSError:
        return None
    return None


def _options(text: bytes) -> frozenset[str]:
    """The CONFIG_*=y names of the run of config lines at the start of ``text``.

    Each line ends in a newline; lines are separated by nothing (one string) or by NULs (one string
    each, maybe padded). The run ends at the first string that is not a config line.
    """
    options: set[str] = set()
    pos, padding = 0, 0
    while pos < len(text):
        if text[pos] == 0:
            padding += 1
            if padding > _MAX_PADDING:
                break
            pos += 1
            continue
        match = _LINE_RE.match(text, pos)
        if match is None:
            break
        padding = 0
        if match.group(2) == b"y":
            options.add(match.group(1).decode("ascii"))
        pos = match.end()
    return frozenset(options)
