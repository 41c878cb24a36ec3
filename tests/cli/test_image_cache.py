"""scripts/build-debian-guest --prune: the Debian image cache keeps only what this version would give out.

Images are found by a name that hashes this script, its guest pieces and the options, so every change to
the script leaves the earlier images behind (a gigabyte each, sparse). Each image has IMAGE.recipe beside
it, the version of the script and pieces that built it; --prune removes the images of any other version
(and those without one, from before), builds nothing, and needs no network.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from conftest import ROOT, needs_root

SCRIPT = ROOT / "scripts" / "build-debian-guest"
PIECES = ("umlstate-net", "umlstate-net.service", "umlstate-net-watch.service")


def recipe() -> str:
    """The script's own rule: sha256 of the script, then the guest pieces, first 16 hex digits."""
    data = SCRIPT.read_bytes() + b"".join((ROOT / "contrib" / "guest" / p).read_bytes() for p in PIECES)
    return hashlib.sha256(data).hexdigest()[:16]


def image(cache: Path, name: str, built_by: str | None) -> Path:
    path = cache / name
    with path.open("wb") as f:
        f.truncate(1 << 30)  # as big as a real one, and as sparse
    if built_by is not None:
        (cache / f"{name}.recipe").write_text(built_by + "\n")
    return path


@needs_root
def test_prune_removes_the_images_of_other_versions_and_keeps_this_versions(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    current = image(cache, "bookworm-umlstate-aaaaaaaaaaaaaaaa.img", recipe())
    other_options = image(cache, "bookworm-stock-bbbbbbbbbbbbbbbb.img", recipe())
    older = image(cache, "bookworm-umlstate-cccccccccccccccc.img", "0123456789abcdef")
    before_recipes = image(cache, "bookworm-stock-dddddddddddddddd.img", None)
    mtime = current.stat().st_mtime_ns
    done = subprocess.run([str(SCRIPT), "--prune"], capture_output=True, text=True, check=False, timeout=60,
                          env={**os.environ, "UMLSTATE_IMAGE_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", "prints no image: it built none"
    assert sorted(p.name for p in cache.glob("*.img")) == [other_options.name, current.name]
    assert not (cache / f"{older.name}.recipe").exists() and not before_recipes.exists()
    assert f"pruned: {older}" in done.stderr and "kept: 2 image(s)" in done.stderr, done.stderr
    assert current.stat().st_mtime_ns == mtime, "a kept image's mtime is what its guests' COW files recorded"
