"""Actions on guests' seed disks: written by root in state_dir/seeds, read by the guest at its next boot.

Their kind is ``guest``: a seed is part of what its guest is (plan/seed.py renders it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import ClassVar

from umlstate.model.snapshot import SeedRecord, Snapshot
from umlstate.plan.actions.base import Action, Kind, Op


@dataclass(frozen=True)
class Seed:
    """A seed disk's files: (path inside the disk, content), sorted."""

    files: tuple[tuple[str, bytes], ...]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for name, data in self.files:
            h.update(f"{name}\0{len(data)}\0".encode())
            h.update(data)
        return h.hexdigest()

    @property
    def size(self) -> int:
        return sum(len(data) for _, data in self.files)


@dataclass(frozen=True)
class WriteSeed(Action):
    op: ClassVar[Op] = "create"
    kind: ClassVar[Kind] = "guest"
    name: str
    path: str
    user: str  # the guest's user, whose group may read it (the guest opens it as that user)
    seed: Seed

    @property
    def target(self) -> str:
        return self.name

    @property
    def detail(self) -> str:
        return f"write its seed disk {self.path} ({len(self.seed.files)} files, {self.seed.size} bytes), readable " \
               f"by {self.user} alone, read-only to the guest"

    def simulate(self, s: Snapshot) -> Snapshot:
        record = SeedRecord(self.path, self.seed.digest, self.user)
        return replace(s, seeds={**s.seeds, self.name: record},
                       records=replace(s.records, seeds={**s.records.seeds, self.name: record}))


@dataclass(frozen=True)
class RewriteSeed(WriteSeed):
    op: ClassVar[Op] = "update"


@dataclass(frozen=True)
class DeleteSeed(Action):
    op: ClassVar[Op] = "delete"
    kind: ClassVar[Kind] = "guest"
    name: str
    path: str

    @property
    def target(self) -> str:
        return self.name

    @property
    def detail(self) -> str:
        return f"remove its seed disk {self.path}"

    def simulate(self, s: Snapshot) -> Snapshot:
        return replace(s, seeds={k: v for k, v in s.seeds.items() if k != self.name},
                       records=replace(s.records, seeds={k: v for k, v in s.records.seeds.items() if k != self.name}))
