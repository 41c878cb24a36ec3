"""kconfig: a UML kernel's configuration read from the file, never by running it; cow: COW v3 files made natively.

The reference for both is the real thing: ``linux.uml --showconfig`` run as
nobody (never as root) and ``uml_mkcow``. The slow test boots Debian's kernel
as nobody on a COW file made here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from umlstate import guestimage
from umlstate.errors import ActionError
from umlstate.host import cow, kconfig

IS_ROOT = os.geteuid() == 0
NOBODY = 65534
KERNEL = shutil.which("linux.uml", path=os.environ.get("PATH", "") + ":/usr/bin:/bin")
UML_MKCOW = shutil.which("uml_mkcow", path=os.environ.get("PATH", "") + ":/usr/bin:/bin")
needs_kernel = pytest.mark.skipif(KERNEL is None, reason="linux.uml is not installed (apt-get install user-mode-linux)")
needs_mkcow = pytest.mark.skipif(
    UML_MKCOW is None,
    reason="!!! uml_mkcow is not installed (apt-get install uml-utilities): COW files NOT compared with the reference !!!")


def as_nobody(*argv: str) -> list[str]:
    """The argv that runs ``argv`` as nobody when the tests run as root (a kernel is never run as root)."""
    if not IS_ROOT:
        return list(argv)
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    kconfig._cache.clear()
    yield
    kconfig._cache.clear()


@pytest.fixture(scope="module")
def showconfig() -> list[str]:
    """The kernel's own account of its configuration, printed by the kernel run as nobody."""
    if KERNEL is None:
        pytest.skip("linux.uml is not installed")
    out = subprocess.run(as_nobody(KERNEL, "--showconfig"), capture_output=True, text=True, timeout=30,
                         check=True, stdin=subprocess.DEVNULL, cwd="/")
    return out.stdout.splitlines()


def enabled(lines: list[str]) -> frozenset[str]:
    return frozenset(line.split("=", 1)[0] for line in lines if line.startswith("CONFIG_") and line.endswith("=y"))


def embedded(lines: list[str]) -> bytes:
    """Config lines embedded as UML's build does: one C string each, ``LINE\\n`` then NUL, after other strings."""
    return b"\0".join(line.encode() + b"\n" for line in lines) + b"\0"


def synthetic_kernel(config: list[str], *extra: bytes) -> bytes:
    banner = b"Linux version 6.16.0-test (builder@example) (gcc 14) #1 SMP\n\0"
    return (b"\x7fELF\x02\x01\x01" + b"\0" * 57 + os.urandom(4096) + b"\0%s: unrelated string\n\0" + banner
            + b"\0".join(extra) + b"\0" + embedded(config) + b"console=%s\0" + os.urandom(4096))


VECTOR_ONLY = ["#", "# Automatically generated file; DO NOT EDIT.", "# Linux/um 6.16.0 Kernel Configuration", "#",
               'CONFIG_CC_VERSION_TEXT="gcc (Debian 14.2.0-19) 14.2.0"', "CONFIG_UML=y", "CONFIG_HZ=100", "",
               "# UML Network Devices", "#", "CONFIG_UML_NET_VECTOR=y", "# end of UML Network Devices",
               "# CONFIG_VIRTIO_UML is not set", "CONFIG_NET=y"]


# ---------------------------------------------------------------- kconfig: the real kernel


@needs_kernel
def test_options_are_what_showconfig_prints(showconfig: list[str]) -> None:
    assert KERNEL is not None
    info = kconfig.inspect(KERNEL)
    assert info is not None, "no configuration found in the installed linux.uml"
    assert info.options == enabled(showconfig)
    # The banner's release starts with the kconfig header's version ("# Linux/um 6.1.176 Kernel Configuration").
    header = next(line for line in showconfig if line.startswith("# Linux/"))
    assert info.version is not None and info.version.startswith(header.split()[2])


@needs_kernel
def test_transports_are_what_showconfig_says(showconfig: list[str]) -> None:
    assert KERNEL is not None
    info = kconfig.inspect(KERNEL)
    assert info is not None
    options = enabled(showconfig)
    expected = {name for name, option in kconfig.LEGACY.items() if option in options}
    expected |= {"vector"} if "CONFIG_UML_NET_VECTOR" in options else set()
    assert info.transports == expected
    assert info.vector_only == (expected == {"vector"})
    if info.version is not None and info.version.startswith("6.1."):
        # Debian bookworm's kernel: every legacy transport umlstate uses, and the vector driver with the
        # transports of 6.1 (fd and bess and hybrid included), but not yet its vde one (that has a "vnl").
        assert info.transports == {"daemon", "tuntap", "vde", "vector"}
        assert not info.vector_only
        assert info.vector_transports == {"tap", "raw", "hybrid", "gre", "l2tpv3", "bess", "fd"}


@needs_kernel
def test_the_scan_is_fast_and_then_cached() -> None:
    assert KERNEL is not None
    start = time.perf_counter()
    first = kconfig.inspect(KERNEL)
    took = time.perf_counter() - start
    start = time.perf_counter()
    again = kconfig.inspect(KERNEL)
    cached = time.perf_counter() - start
    assert first is not None and again is first
    assert took < 0.5, f"scanning {KERNEL} took {took * 1000:.0f} ms"
    assert cached < 0.01


@needs_kernel
def test_a_link_to_the_kernel_is_read_through(tmp_path: Path, showconfig: list[str]) -> None:
    assert KERNEL is not None
    link = tmp_path / "linux"
    link.symlink_to(KERNEL)
    info = kconfig.inspect(str(link))
    assert info is not None and info.options == enabled(showconfig)


@needs_kernel
def test_a_copy_that_cannot_be_executed_reads_the_same(tmp_path: Path, showconfig: list[str]) -> None:
    assert KERNEL is not None
    copy = tmp_path / "linux.uml"
    shutil.copyfile(KERNEL, copy)
    copy.chmod(0o444)
    info = kconfig.inspect(str(copy))
    assert info is not None and info.options == enabled(showconfig)


# ---------------------------------------------------------------- kconfig: what is refused or not found


def test_a_fifo_returns_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "kernel"
    os.mkfifo(fifo)
    results: list[kconfig.KernelInfo | None] = []
    worker = threading.Thread(target=lambda: results.append(kconfig.inspect(str(fifo))), daemon=True)
    start = time.perf_counter()
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "inspect blocked on a FIFO"
    assert results == [None]
    assert time.perf_counter() - start < 1


def test_other_non_regular_files_are_refused(tmp_path: Path) -> None:
    assert kconfig.inspect(str(tmp_path)) is None
    assert kconfig.inspect("/dev/null") is None
    assert kconfig.inspect(str(tmp_path / "missing")) is None
    assert kconfig.inspect("bad\0path") is None


def test_a_huge_sparse_file_is_refused_quickly(tmp_path: Path) -> None:
    huge = tmp_path / "kernel"
    with open(huge, "wb") as f:
        f.write(synthetic_kernel(VECTOR_ONLY))
        f.truncate(kconfig.MAX_SIZE + 1)
    start = time.perf_counter()
    assert kconfig.inspect(str(huge)) is None
    assert time.perf_counter() - start < 0.1


def test_text_without_a_config_is_none(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("CONFIG_UML_NET_VECTOR=y is what a vector-only kernel has.\n" * 100)
    assert kconfig.inspect(str(text)) is None
    empty = tmp_path / "empty"
    empty.touch()
    assert kconfig.inspect(str(empty)) is None
    header_only = tmp_path / "header"
    header_only.write_bytes(embedded(VECTOR_ONLY[:3]) + b"not a config line")
    assert kconfig.inspect(str(header_only)) is None


# ---------------------------------------------------------------- kconfig: synthetic kernels


def test_a_vector_only_kernel(tmp_path: Path) -> None:
    kernel = tmp_path / "linux-6.16"
    kernel.write_bytes(synthetic_kernel(VECTOR_ONLY))
    info = kconfig.inspect(str(kernel))
    assert info is not None
    assert info.version == "6.16.0-test"
    assert info.options == {"CONFIG_UML", "CONFIG_UML_NET_VECTOR", "CONFIG_NET"}
    assert info.transports == {"vector"}
    assert info.vector_only
    assert info.vector_transports == kconfig.VECTOR_BASE


def test_vector_transports_seen_in_the_code(tmp_path: Path) -> None:
    kernel = tmp_path / "linux"
    markers = [b"\x013" + kconfig.VECTOR_MARKERS[name] + b" %d" for name in ("vde", "fd")]
    kernel.write_bytes(synthetic_kernel(VECTOR_ONLY, *markers))
    info = kconfig.inspect(str(kernel))
    assert info is not None
    assert info.vector_transports == kconfig.VECTOR_BASE | {"vde", "fd"}
    # Code without the driver's option counts for nothing.
    kernel.write_bytes(synthetic_kernel([line for line in VECTOR_ONLY if "VECTOR" not in line], *markers))
    info = kconfig.inspect(str(kernel))
    assert info is not None and info.vector_transports == frozenset() and info.transports == frozenset()


def test_legacy_transports_and_the_version_from_the_kconfig_header(tmp_path: Path) -> None:
    config = [*VECTOR_ONLY, "CONFIG_UML_NET_DAEMON=y", "CONFIG_UML_NET_TUNTAP=y", "# CONFIG_UML_NET_VDE is not set",
              "CONFIG_UML_NET_MCAST=y"]
    kernel = tmp_path / "linux"
    kernel.write_bytes(b"junk\0" + embedded(config) + b"after\0")  # no banner, not ELF
    info = kconfig.inspect(str(kernel))
    assert info is not None
    assert info.version == "6.16.0"
    assert info.transports == {"daemon", "tuntap", "vector"}
    assert not info.vector_only


def test_one_string_for_the_whole_config_as_old_kernels(tmp_path: Path) -> None:
    kernel = tmp_path / "linux"
    kernel.write_bytes(b"junk\0" + "\n".join(VECTOR_ONLY).encode() + b"\n\0after\0")
    info = kconfig.inspect(str(kernel))
    assert info is not None and info.options == {"CONFIG_UML", "CONFIG_UML_NET_VECTOR", "CONFIG_NET"}


def test_a_bogus_elf_section_table_means_the_whole_file(tmp_path: Path) -> None:
    table = struct.pack("<QHH", 1 << 40, 64, 3)  # e_shoff far past the end of the file
    data = synthetic_kernel(VECTOR_ONLY)
    kernel = tmp_path / "linux"
    kernel.write_bytes(data[:0x28] + table[:8] + data[0x30:0x3A] + table[8:] + data[0x3E:])
    info = kconfig.inspect(str(kernel))
    assert info is not None and info.vector_only


def test_the_cache_follows_the_file(tmp_path: Path) -> None:
    kernel = tmp_path / "linux"
    kernel.write_bytes(synthetic_kernel(VECTOR_ONLY))
    first = kconfig.inspect(str(kernel))
    assert first is not None and kconfig.inspect(str(kernel)) is first
    kernel.write_bytes(synthetic_kernel([*VECTOR_ONLY, "CONFIG_UML_NET_TUNTAP=y"]))
    again = kconfig.inspect(str(kernel))
    assert again is not None and again.transports == {"tuntap", "vector"}


def test_inspecting_never_runs_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = tmp_path / "linux.uml"
    script.write_bytes(f"#!/bin/sh\ntouch {marker}\nexit 0\n".encode() + b"\0" + embedded(VECTOR_ONLY))
    script.chmod(0o755)
    info = kconfig.inspect(str(script))
    assert info is not None and info.vector_only
    time.sleep(0.1)
    assert not marker.exists(), "inspect executed the kernel"
    subprocess.run([str(script)], check=True)  # the marker would appear if it were run: the test is sound
    assert marker.exists()


# ---------------------------------------------------------------- cow


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A small ext2 image (a sparse file where mkfs.ext2 is missing); its path as uml_mkcow records it."""
    folder = tmp_path.resolve()  # uml_mkcow records the base's folder as getcwd() gives it: no links
    image = folder / "base.img"
    mkfs = shutil.which("mkfs.ext2", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if mkfs:
        subprocess.run([mkfs, "-q", "-F", str(image), "8M"], check=True, capture_output=True)
    else:
        with open(image, "wb") as f:
            f.truncate(8 << 20)
    return image


def native_cow(path: Path, base: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        cow.write_new(fd, str(base), os.stat(base))
    finally:
        os.close(fd)


@needs_mkcow
@pytest.mark.parametrize("size", [None, 0, 1, 511, 513, 1234567, 4096 * 8 * 512 + 1])
def test_write_new_is_what_uml_mkcow_writes(tmp_path: Path, base: Path, size: int | None) -> None:
    assert UML_MKCOW is not None
    if size is not None:
        os.truncate(base, size)
    ours, theirs = base.parent / "ours.cow", base.parent / "theirs.cow"
    native_cow(ours, base)
    subprocess.run([UML_MKCOW, str(theirs), str(base)], check=True, capture_output=True)
    assert ours.stat().st_size == theirs.stat().st_size == cow.file_size(base.stat().st_size)
    assert ours.read_bytes() == theirs.read_bytes()  # header, zero bitmap, zero data: byte for byte
    # Sparse: nothing but the header is written.
    assert ours.stat().st_blocks * 512 <= 64 * 1024


def test_file_size_as_cow_sizes_computes_it() -> None:
    assert cow.file_size(0) == 8192
    assert cow.file_size(5 << 20) == 5255168  # uml_mkcow over a 5 MiB file
    assert cow.file_size(1) == 8192 + 4096 + 1


def test_parse_header_round_trips(base: Path) -> None:
    st = os.stat(base)
    data = cow.header_bytes(str(base), int(st.st_mtime), st.st_size)
    assert len(data) == cow.HEADER_READ == 4128
    assert cow.parse_header(data) == cow.CowHeader(str(base), int(st.st_mtime), st.st_size, 512, 4096)
    made = base.parent / "guest.cow"
    native_cow(made, base)
    with open(made, "rb") as f:
        assert cow.parse_header(f.read(cow.HEADER_READ)) == cow.parse_header(data)


def test_mtime_is_kept_in_32_bits_as_uml_does() -> None:
    header = cow.parse_header(cow.header_bytes("/srv/base.img", (1 << 32) + 5, 1 << 40))
    assert header is not None and header.base_mtime == 5 and header.base_size == 1 << 40


def test_parse_header_rejects_other_layouts() -> None:
    good = cow.header_bytes("/srv/base.img", 1700000000, 8 << 20)
    assert cow.parse_header(good) is not None
    assert cow.parse_header(good[:-1]) is None  # short
    assert cow.parse_header(b"") is None
    for version in (1, 2, 4):
        assert cow.parse_header(good[:4] + struct.pack(">I", version) + good[8:]) is None
    little = struct.pack("<II", cow.COW_MAGIC, cow.COW_VERSION) + good[8:]
    assert cow.parse_header(little) is None
    # Before 2006, 64-bit builds padded mtime to 8 bytes; cow_user.c spots it by a path starting with 4 zeros.
    broken = struct.pack(">IIqQIII", cow.COW_MAGIC, 3, 1700000000, 8 << 20, 512, 4096, 0) + b"/srv/base.img"
    assert cow.parse_header(broken.ljust(4200, b"\0")) is None
    assert cow.parse_header(good[:20] + b"\0\0\0\0" + good[24:]) is None  # sector size 0
    assert cow.parse_header(good[:28] + b"\0\0\0\1" + good[32:]) is None  # not a bitmap COW
    assert cow.parse_header(good[:32] + b"x" * 4096) is None  # path without its NUL


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000))
def test_parse_header_never_raises(data: bytes) -> None:
    cow.parse_header(data)
    cow.parse_header(cow.header_bytes("/b", 1, 2)[:32] + data)


def test_bad_bases_and_targets_are_refused(tmp_path: Path, base: Path) -> None:
    for path in ("relative.img", "/with\0nul", "/" + "x" * 4095):
        with pytest.raises(ActionError):
            cow.header_bytes(path, 0, 0)
    assert len(cow.header_bytes("/" + "x" * 4094, 0, 0)) == cow.HEADER_SIZE  # 4095 bytes and the NUL
    target = tmp_path / "guest.cow"
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with pytest.raises(ActionError):
            cow.write_new(fd, str(tmp_path), os.stat(tmp_path))  # a folder is no base
        os.write(fd, b"data")
        with pytest.raises(ActionError):
            cow.write_new(fd, str(base), os.stat(base))  # not a new file
    finally:
        os.close(fd)


# ---------------------------------------------------------------- a real guest boots on a native COW


@pytest.mark.slow
@pytest.mark.skipif(not IS_ROOT, reason="boots linux.uml as nobody: needs root to switch user")
@pytest.mark.skipif(KERNEL is None or shutil.which("busybox") is None, reason="needs linux.uml and busybox")
def test_debian_kernel_boots_on_a_native_cow(tmp_path: Path) -> None:
    assert KERNEL is not None
    folder = tmp_path.resolve()
    image = guestimage.build(folder / "base.img")
    made = folder / "guest.cow"
    native_cow(made, image)
    os.chown(made, NOBODY, NOBODY)
    for sub in ("uml", "tmp"):  # the guest's uml_dir and its memory file's folder, the guest user's own
        (folder / sub).mkdir(mode=0o700)
        os.chown(folder / sub, NOBODY, NOBODY)
    log = folder / "console.log"
    umid = f"cowtest-{os.getpid()}"
    argv = as_nobody(KERNEL, f"ubd0={made},{image}", "mem=96M", f"umid={umid}", f"uml_dir={folder / 'uml'}",
                     "con0=null,fd:1", "con=null", "root=/dev/ubda")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": str(folder / "tmp"), "HOME": str(folder / "tmp")}
    with open(log, "wb") as out:
        guest = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                 cwd=folder / "tmp", start_new_session=True)
    pgid = guest.pid  # start_new_session: the guest leads its own session and process group
    try:
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline and guest.poll() is None:
            text = log.read_text(errors="replace")
            if "Run /sbin/init" in text or "as init process" in text:
                break
            time.sleep(0.2)
        assert "Run /sbin/init" in text or "as init process" in text, f"the guest did not reach init:\n{text[-3000:]}"
        assert "mismatch" not in text.lower()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        guest.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.1)
    assert not _group_alive(pgid)
    header = cow.parse_header(made.read_bytes()[:cow.HEADER_READ])
    assert header is not None and header.base == str(image)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
