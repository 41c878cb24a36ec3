"""umlstate.host.records: ``<state_dir>/state.json``, what umlstate owns besides marked links.

Round trip of every Records field through save and load in a temporary state_dir; atomic
writes (no temporary file left, the old file intact when a write fails); and load's refusals,
each a HostError naming the file, none hanging: a file not owned by root, a symlink, a FIFO, a
directory, an oversized or malformed file. Unknown keys (from a newer umlstate) are ignored.

load() trusts only a root-owned file, whoever reads it: as root, a file another user owns is
refused; as any other user, every file such a user can make is refused too (the real file is
root's). The tests that are about parsing rather than ownership therefore run as any user
through ``root_owned``: as root it does nothing; as another user it gives records.py an ``os``
whose fstat reports uid 0 for the file, so the rest of load() runs for real.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from umlstate.errors import HostError
from umlstate.host import records, safefs
from umlstate.model.snapshot import Proc, Records, RulesetRecord, SeedRecord

from conftest import IS_ROOT, needs_root

NOBODY = 65534

FULL = Records(
    sysctl_originals={"net.ipv4.ip_forward": "0", "net.ipv4.conf.eth0.proxy_arp": "0"},
    proxies=frozenset({("eth0", "172.16.99.1"), ("eth0", "172.16.99.2")}),
    groups_created=frozenset({"umlusers"}),
    members_added=frozenset({("umlusers", "dupont"), ("kvm", "dupont")}),
    tun_created=True,
    tun_original=(0o600, 0),
    tun_path="/dev/net/tun",
    pending_taps=frozenset({"uml2"}),
    held=frozenset({"db"}),
    boot_id="5f0c0a5e-3f8e-4d47-9a4e-0c1b2d3e4f50",
    processes={
        "guest-web": Proc(pid=5000, uid=1000, argv=("/usr/bin/linux.uml", "umid=web", "mem=128M"), started=1700000000.5,
                          start=123456, cgroup="/umlstate.slice/lab-guest-web", sid=5000, console="/dev/pts/7"),
        "switch-sw0": Proc(pid=4000, uid=1000, argv=("/usr/bin/uml_switch", "-tap", "uml0"), started=1700000000.25),
    },
    crashes={"web": 2},
    ruleset=RulesetRecord(frozenset({"inet umlstate-lab", "netdev umlstate-lab"}), "0123456789abcdef", "fedcba9876543210"),
    seeds={"r1": SeedRecord("/var/lib/umlstate/lab/seeds/r1.img", "ab" * 32)},
    routes=frozenset({("10.0.34.0/24", "10.0.1.1")}),
)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def root_owned(monkeypatch: pytest.MonkeyPatch) -> None:
    """As root: nothing to do. As another user: load() sees its files as root's (fstat says uid 0)."""
    if IS_ROOT:
        return
    real = os.fstat

    def fstat(fd: int) -> os.stat_result:
        st = real(fd)
        return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, 0, st.st_gid, st.st_size,
                               int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))

    view = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    view.fstat = fstat
    monkeypatch.setattr(records, "os", view)


def write(state_dir: Path, data: bytes) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = records.path_of(str(state_dir))
    path.write_bytes(data)
    return path


def refused(state_dir: Path) -> HostError:
    """load() must refuse, quickly; the HostError, which names the file."""
    began = time.monotonic()
    with pytest.raises(HostError) as caught:
        records.load(str(state_dir))
    assert time.monotonic() - began < 1.0
    assert str(records.path_of(str(state_dir))) in caught.value.problem
    assert caught.value.fix
    return caught.value


def within(seconds: float, call: Callable[[], object], fifo: Path) -> tuple[object, float]:
    """Run ``call`` in a thread; (what it returned or raised, how long it took). Should it block
    opening ``fifo``, a writer opens it to let the thread go, and the test fails."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - whatever load() raised is the outcome the test checks
            outcome.append(exc)

    began = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(seconds)
        pytest.fail(f"load() blocked on the FIFO for {seconds} s")
    return outcome[0], time.monotonic() - began


# --- round trip ----------------------------------------------------------------------------------


def test_the_example_sets_every_field_away_from_its_default() -> None:
    """So that the round trip covers every field, also the ones added later."""
    blank = Records()
    same = [f.name for f in dataclasses.fields(Records) if getattr(FULL, f.name) == getattr(blank, f.name)]
    assert same == [], f"give these fields a non-default value in FULL: {same}"
    proc = FULL.processes["guest-web"]
    assert all(getattr(proc, f.name) != f.default for f in dataclasses.fields(Proc)
               if f.default is not dataclasses.MISSING)


def test_no_file_means_nothing_recorded(state_dir: Path) -> None:
    assert records.load(str(state_dir)) == Records()
    state_dir.mkdir()
    assert records.load(str(state_dir)) == Records()


def test_every_field_survives_save_and_load(state_dir: Path, root_owned: None) -> None:
    records.save(str(state_dir), FULL)
    loaded = records.load(str(state_dir))
    assert loaded == FULL
    assert isinstance(loaded.processes["guest-web"], Proc)
    assert loaded.processes["guest-web"].argv == FULL.processes["guest-web"].argv  # a tuple again


def test_the_file_is_json_readable_by_all_with_its_format_version(state_dir: Path) -> None:
    records.save(str(state_dir / "deeper"), FULL)  # state_dir is made, parents included
    path = records.path_of(str(state_dir / "deeper"))
    data = json.loads(path.read_text())
    assert data["format_version"] == records.FORMAT_VERSION == 1
    assert data["held"] == ["db"]
    assert data["processes"]["guest-web"]["pid"] == 5000
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # monitoring users may read it
    assert stat.S_IMODE((state_dir / "deeper").stat().st_mode) & 0o022 == 0


# --- atomic writes -------------------------------------------------------------------------------


def test_saving_replaces_the_file_whole_and_leaves_no_temporary_file(state_dir: Path) -> None:
    records.save(str(state_dir), Records(held=frozenset({"web"})))
    first = records.path_of(str(state_dir)).stat().st_ino
    records.save(str(state_dir), FULL)
    assert sorted(os.listdir(state_dir)) == ["state.json"]
    assert records.path_of(str(state_dir)).stat().st_ino != first  # a new file renamed over the old one
    assert json.loads(records.path_of(str(state_dir)).read_text())["held"] == ["db"]


@pytest.mark.parametrize("failure", [OSError(5, "Input/output error"), KeyboardInterrupt()],
                         ids=["EIO", "interrupted"])
def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_file(
        state_dir: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException) -> None:
    records.save(str(state_dir), Records(held=frozenset({"web"})))
    before = records.path_of(str(state_dir)).read_bytes()

    def fsync(_fd: int) -> None:
        raise failure

    view = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    view.fsync = fsync
    monkeypatch.setattr(safefs, "os", view)  # records write through safefs's atomic write
    with pytest.raises(type(failure)):
        records.save(str(state_dir), FULL)
    assert sorted(os.listdir(state_dir)) == ["state.json"]
    assert records.path_of(str(state_dir)).read_bytes() == before


# --- what load refuses ---------------------------------------------------------------------------


def test_a_file_not_owned_by_root_is_refused_whoever_reads_it(state_dir: Path) -> None:
    """As root: a file nobody owns is refused. As nobody: its own file is refused just the same."""
    path = write(state_dir, json.dumps({"held": ["web"]}).encode())
    if IS_ROOT:
        os.chown(path, NOBODY, NOBODY)
    assert path.stat().st_uid != 0
    error = refused(state_dir)
    assert "not a root-owned regular file" in error.problem


@needs_root
def test_as_root_the_same_file_is_read_once_root_owns_it(state_dir: Path) -> None:
    path = write(state_dir, json.dumps({"held": ["web"]}).encode())
    os.chown(path, NOBODY, NOBODY)
    refused(state_dir)
    os.chown(path, 0, 0)
    assert records.load(str(state_dir)).held == frozenset({"web"})


@pytest.mark.skipif(IS_ROOT, reason="root reads any file")
def test_a_file_the_reader_may_not_open_says_that_root_is_needed(state_dir: Path) -> None:
    path = write(state_dir, b"{}")
    path.chmod(0)
    error = refused(state_dir)
    assert "needs root" in error.problem and "mode 0000" in error.problem


def test_a_symlink_at_state_json_is_not_followed(state_dir: Path, tmp_path: Path, root_owned: None) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"held": ["web"]}))
    state_dir.mkdir()
    records.path_of(str(state_dir)).symlink_to(elsewhere)
    error = refused(state_dir)
    assert "symbolic links" in error.problem  # ELOOP from O_NOFOLLOW


def test_a_fifo_at_state_json_is_refused_without_waiting_for_a_writer(state_dir: Path, root_owned: None) -> None:
    state_dir.mkdir()
    path = records.path_of(str(state_dir))
    os.mkfifo(path)
    outcome, took = within(2.0, lambda: records.load(str(state_dir)), path)
    assert took < 1.0
    assert isinstance(outcome, HostError), outcome
    assert str(path) in outcome.problem and "regular file" in outcome.problem


def test_a_symlink_to_a_fifo_is_refused_without_waiting(state_dir: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    state_dir.mkdir()
    records.path_of(str(state_dir)).symlink_to(fifo)
    outcome, took = within(2.0, lambda: records.load(str(state_dir)), fifo)
    assert took < 1.0 and isinstance(outcome, HostError), outcome
    assert "symbolic links" in outcome.problem


def test_a_directory_at_state_json_is_refused(state_dir: Path, root_owned: None) -> None:
    records.path_of(str(state_dir)).mkdir(parents=True)
    assert "regular file" in refused(state_dir).problem


def test_an_oversized_file_is_refused_unread(state_dir: Path, root_owned: None) -> None:
    path = write(state_dir, b"")
    with path.open("r+b") as f:
        f.truncate(records.MAX_BYTES + 1)  # sparse: costs no disk
    assert f"at most {records.MAX_BYTES} bytes" in refused(state_dir).problem


def test_a_file_of_exactly_the_limit_is_parsed(state_dir: Path, root_owned: None) -> None:
    body = json.dumps({"held": ["web"]}).encode()
    write(state_dir, body + b" " * (records.MAX_BYTES - len(body)))
    assert records.load(str(state_dir)).held == frozenset({"web"})


@pytest.mark.parametrize("data", [
    b"{", b"not json", b"\xff\xfe{}", b"", b"null", b"[]", b'{"held": 5}', b'{"tun_original": [1, 2, 3]}',
    b'{"processes": {"guest-web": {"pid": "five"}}}', b'{"sysctl_originals": {"a": null}}',
], ids=["truncated", "text", "not-utf8", "empty", "null", "list", "wrong-type", "wrong-arity", "bad-proc",
        "null-value"])
def test_a_malformed_file_is_a_host_error_naming_it(state_dir: Path, root_owned: None, data: bytes) -> None:
    write(state_dir, data)
    error = refused(state_dir)
    assert error.problem.startswith(f"cannot read umlstate's records {records.path_of(str(state_dir))}: ")
    assert "restore the file from a backup" in error.fix


def test_deeply_nested_json_is_a_host_error_too(state_dir: Path, root_owned: None) -> None:
    write(state_dir, b"[" * 100_000)
    refused(state_dir)


def test_unknown_keys_from_a_newer_umlstate_are_ignored(state_dir: Path, root_owned: None) -> None:
    data: dict[str, Any] = {
        "format_version": 1,
        "held": ["web"],
        "some_future_record": {"anything": [1, 2, 3]},
        "processes": {"guest-web": {"pid": 5000, "uid": 1000, "argv": ["linux.uml"], "started": 1.5,
                                    "a_future_process_field": "x"}},
    }
    write(state_dir, json.dumps(data).encode())
    assert records.load(str(state_dir)) == Records(
        held=frozenset({"web"}), processes={"guest-web": Proc(pid=5000, uid=1000, argv=("linux.uml",), started=1.5)})
