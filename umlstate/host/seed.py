"""A seed disk written: a vfat file system labelled CIDATA (cloud-init's NoCloud), made by root in its own folder.

Host layer, called through apply's host port. Everything happens in state_dir/seeds, a folder only root may
change (vetted up to / first): the files are laid out in a fresh private folder there, ``mkfs.vfat`` makes
the image beside them and ``mcopy`` (mtools, which writes the image without mounting it) fills it; the
image is then given to root and the guest user's group, mode 0640, and renamed over the old one, so a guest
that boots meanwhile reads the old seed or the new one, whole.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from umlstate.errors import ActionError
from umlstate.host import trusted

LABEL = "CIDATA"  # cloud-init's NoCloud looks for a vfat or iso9660 file system labelled cidata or CIDATA
SLACK = 512 << 10  # bytes beyond the files: the FAT, its root folder and cluster rounding
PROGRAMS = ("mkfs.vfat", "mcopy")


CLUSTER = 4096  # what each file takes at least on the image, however small


def write(path: str, files: tuple[tuple[str, bytes], ...], uid: int) -> None:
    folder, name = os.path.split(path)
    with trusted.open_trusted(folder, create=True) as seeds:  # vetted: only root can change where it leads
        for left in seeds.names():  # a crashed write's work folder (root's, in root's folder)
            if left.startswith(f".{name}."):
                shutil.rmtree(os.path.join(folder, left), ignore_errors=True)
    work = tempfile.mkdtemp(prefix=f".{name}.", dir=folder)
    try:
        for inner, data in files:
            target = os.path.join(work, "tree", inner)
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            with open(target, "xb") as f:
                f.write(data)
        image = os.path.join(work, "seed.img")
        size_kb = max(1440, (sum(len(d) + CLUSTER for _, d in files) * 5 // 4 + SLACK) // 1024)
        _run("mkfs.vfat", "-C", "-n", LABEL, image, str(size_kb))
        tree = os.path.join(work, "tree")
        _run("mcopy", "-i", image, "-s", "-Q", *[os.path.join(tree, e) for e in sorted(os.listdir(tree))], "::/")
        os.chown(image, uid, 0)
        os.chmod(image, 0o400)
        with open(image, "rb") as f:
            os.fsync(f.fileno())
        os.replace(image, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def delete(path: str) -> None:
    folder, name = os.path.split(path)
    with trusted.open_trusted(folder) as d:
        d.unlink(name, kinds=("file",))


def _run(program: str, *args: str) -> None:
    try:
        done = subprocess.run([program, *args], check=False, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C"})
    except FileNotFoundError:
        raise ActionError(f"{program} is not installed (apt-get install dosfstools mtools)") from None
    if done.returncode != 0:
        raise ActionError(f"{program} failed: {(done.stderr or done.stdout).strip()[:500]}")
