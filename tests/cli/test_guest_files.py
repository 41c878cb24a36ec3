"""files[].from: read below the topology's folder, never through a link, a FIFO or a hard link (cli/files.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from umlstate.cli.files import read_guest_file
from umlstate.errors import TopologyError
from umlstate.model.loader import load_file

TOPOLOGY = """\
name: lab
guests:
  - name: r1
    user: nobody
    disk: {{image: /srv/r1.img}}
    files: [{{path: /etc/r1.conf, from: {source}}}]
"""


def lab(tmp_path: Path, source: str) -> Path:
    folder = tmp_path / "lab"
    folder.mkdir(mode=0o755)
    (folder / "topology.yaml").write_text(TOPOLOGY.format(source=source))
    return folder


def test_a_file_below_the_topology_is_read_into_its_content(tmp_path: Path) -> None:
    folder = lab(tmp_path, "r1/r1.conf")
    (folder / "r1").mkdir()
    (folder / "r1" / "r1.conf").write_text("hostname r1\n")
    t = load_file(folder / "topology.yaml", read_guest_file)
    assert t.guests[0].files[0].content == "hostname r1\n"


@pytest.mark.parametrize("plant", ["folder-link", "file-link", "fifo", "hard-link"])
def test_what_a_labs_owner_planted_is_refused_where_the_topology_names_it(tmp_path: Path, plant: str) -> None:
    folder = lab(tmp_path, "r1/hostname")
    secret = tmp_path / "secret"
    secret.write_text("root's secret\n")
    if plant == "folder-link":  # the classic: a folder on the way swapped for a link to /etc
        (folder / "r1").symlink_to(tmp_path)
        (tmp_path / "hostname").write_text("root's secret\n")
    else:
        (folder / "r1").mkdir()
        target = folder / "r1" / "hostname"
        if plant == "file-link":
            target.symlink_to(secret)
        elif plant == "fifo":
            os.mkfifo(target)
        else:
            os.link(secret, target)
    with pytest.raises(TopologyError) as raised:
        load_file(folder / "topology.yaml", read_guest_file)
    said = str(raised.value)
    assert "topology.yaml:6:" in said and "cannot read" in said and "secret" not in said.split("cannot read", maxsplit=1)[0], said


@pytest.mark.parametrize("source", ["/etc/shadow", "../secret", "r1//x", "./r1.conf"])
def test_a_from_outside_the_topologys_folder_is_refused(tmp_path: Path, source: str) -> None:
    folder = lab(tmp_path, source)
    with pytest.raises(TopologyError, match="'from' must be a path below the topology file's folder"):
        load_file(folder / "topology.yaml", read_guest_file)
