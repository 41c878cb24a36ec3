"""The files a command reads or writes: the topology (found, vetted, loaded) and saved plans.

CLI layer. As root, a topology decides what root runs, so it is refused unless
only root can write it (and its folders, up to /); a saved plan carries a
topology, so the same holds for it, and its topology goes through the same
model and rules as a file. The saved-plan format is one typed model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from umlstate.cli.quick import digest
from umlstate.cli.where import resolve_topology
from umlstate.errors import HostError, StalePlanError
from umlstate.host.safefs import UnsafePath, read_bounded
from umlstate.host.trusted import check_root_file, read_below
from umlstate.model.guest import GUEST_FILE_MAX
from umlstate.model.loader import load_document, load_file
from umlstate.model.topology import Topology

MAX_PLAN_BYTES = 16 << 20


class SavedPlan(BaseModel):
    """What `plan --out FILE` writes and `apply FILE` carries out while the host is unchanged."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["umlstate-plan"] = "umlstate-plan"
    format_version: Literal[1] = 1
    source: str  # the topology file it was planned from
    netns: str | None
    adopt: bool
    fingerprint: str  # of the observed host: apply refuses a host that changed since
    topology_document: dict[str, Any]
    plan: dict[str, Any]  # as `plan --json` prints it, for people and scripts


def read_guest_file(folder: str, below: str) -> bytes:
    """A guest file's ``from``, read as host.trusted.read_below reads anyone's file."""
    return read_below(folder, below, GUEST_FILE_MAX)


@dataclass
class Read:
    """What loading a topology read, as digests of the very bytes parsed: the quick pass (cli.quick) compares
    them with the files as they are then."""

    path: str = ""
    topology: str = ""
    guest_files: dict[str, str] = field(default_factory=dict)  # each `from` -> its digest

    def load(self, path: str) -> Topology:
        def noting(folder: str, below: str) -> bytes:
            data = read_guest_file(folder, below)
            self.guest_files[below] = digest(data)
            return data

        self.path = path
        return load_file(path, noting, noted=lambda raw: setattr(self, "topology", digest(raw)))


def load_topology(given: str | None, read: Read | None = None) -> tuple[str, Topology]:
    """The topology file a command names (or the default one), vetted as root, loaded and validated (``read``:
    noting the digests of what was read)."""
    path = resolve_topology(given)
    check_root_file(path)
    return path, load_file(path, read_guest_file) if read is None else read.load(path)


def load_target(given: str | None, netns: str | None, read: Read | None = None
                ) -> tuple[Topology, SavedPlan | None]:
    """What `apply` was given: a topology file, or a plan file saved by `plan --out`."""
    path = resolve_topology(given)
    check_root_file(path)
    if not path.endswith(".json"):
        return load_file(path, read_guest_file) if read is None else read.load(path), None
    try:
        saved = SavedPlan.model_validate(json.loads(read_bounded(path, MAX_PLAN_BYTES)))
    except (OSError, UnsafePath, ValueError, ValidationError) as exc:
        why = str(exc).splitlines()[0]
        raise HostError(f"cannot read plan file {path}: {why}", "save it again with `umlstate plan --out`") from None
    if saved.netns != netns:
        raise StalePlanError(f"{path} was planned for network namespace {saved.netns}, "
                             f"not {netns}; pass --netns {saved.netns}")
    # The same model and rules as a topology file: a saved plan is one, with a plan attached.
    return load_document(saved.topology_document, path), saved


def save_plan(out: str, saved: SavedPlan) -> None:
    """Its owner's alone (0600): it carries the topology, guests' files among it."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(saved.model_dump_json(indent=1) + "\n")
