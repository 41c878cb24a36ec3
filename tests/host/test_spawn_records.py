"""A run that exits before root can read its identity is still a run: recorded, so its death counts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from umlstate.host import identity, processes

from conftest import needs_root


@needs_root
@pytest.mark.root
def test_a_run_that_exits_before_its_identity_is_read_is_recorded_as_started_and_never_alive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The crash-loop flake of session 6: a guest at 16M died before identity.record read it, spawn gave no
    start time, apply did not record the run, and the next pass did not count that death."""
    monkeypatch.setattr(identity, "record", lambda *_a, **_k: None)  # it was gone before root could look
    fd = os.open(tmp_path / "run.log", os.O_WRONLY | os.O_CREAT, 0o600)
    before = time.time()
    try:
        proc = processes.spawn(("/bin/true",), 65534, fd, unit="guest-gone", cgroups=None)
    finally:
        os.close(fd)
    assert proc.start == 0 and before <= proc.started <= time.time(), "when it started: what backoff counts from"
    assert not identity.alive(proc), "and never taken for a live process, whatever later has its pid"
