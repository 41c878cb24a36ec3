"""The console entry point, and its quick in-sync pass: a host found in sync as the last full pass left it.

The command line's front door. A full ``plan`` or ``apply`` that finds the
host in sync (no change, error, conflict or backoff) keeps, in a root-only
folder under /run, what it printed and a probe of everything its observation
read (``observe.witness``), keyed by the command line, the environment it
read and the code that ran. The next identical run, as root, reads the same
again through the same functions and, when every reading is equal, prints the
same and exits the same, without importing the topology's model, the planner
or click: cron's pass on a host in sync costs its reads.

Any difference (the topology file or a guest file, the host, the records,
the code, the environment), any doubt or error: the full pass runs, as it
would have without this. An ``apply`` reads under the topology's lock, as a
full one does; when another run holds it, the full pass waits its turn.
``UMLSTATE_QUICK=0`` turns the quick pass off; ``UMLSTATE_QUICK=report`` says
on stderr when it answered.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from umlstate.cli.where import resolve_topology
from umlstate.host import trusted

if TYPE_CHECKING:
    from umlstate.observe import reads, witness

QUICK_DIR = "/run/umlstate/.quick"  # root's; gone at reboot like what it speaks of; a dot: no topology's run_dir
FORMAT = 3  # 2: the links as read, beside the witness; 3: addresses and proxy entries undecoded in it
MAX_RECORD = 4 << 20  # a record holds what a plan printed: a thousand taps' is ~100 KB
MAX_TOPOLOGY = 8 << 20
GUEST_FILE_LIMIT = 1 << 20  # as model.guest.GUEST_FILE_MAX; a larger file fails the full load, never this read
KEEP = 256  # records kept (one per command line and topology); the oldest go first
ENVIRONMENT = ("PATH", "NO_COLOR", "TERM", "HOME", "LANG", "LC_ALL")  # besides every UMLSTATE_*
COMMANDS = frozenset({"plan", "apply"})  # what a full pass keeps a record for (cli.main)


def main() -> None:
    """``umlstate``: the quick pass when it applies, else the full command line (cli.main), which keeps what
    the next quick pass needs under the key of this command line as it was when it started."""
    # Only a command line that may name plan or apply has a record to look for: the others (validate on every
    # host of a rollout) go straight to the full command line, without this module's reads of the host.
    name = key(sys.argv[1:]) if enabled() and not COMMANDS.isdisjoint(sys.argv[1:]) else None
    if name is not None:
        try:
            hit = _quick(name)
        except KeyboardInterrupt:
            sys.stderr.write("umlstate: interrupted\n")
            os._exit(130)
        except Exception:  # noqa: BLE001 - any doubt at all is a full pass, which says what is wrong
            hit = None
        if hit is not None:
            stdout, code = hit
            if os.environ.get("UMLSTATE_QUICK") == "report":
                sys.stderr.write("umlstate: in sync as the last full pass found it (quick pass)\n")
            with contextlib.suppress(BrokenPipeError, ValueError):  # `umlstate plan | head`, a closed stream
                sys.stdout.write(stdout)
                sys.stdout.flush()
            os._exit(code)
    from umlstate.cli.main import main as full

    full(name)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def enabled() -> bool:
    return os.geteuid() == 0 and os.environ.get("UMLSTATE_QUICK", "1") != "0"


def key(argv: Sequence[str]) -> str:
    """The name of the record for this command line, as run here, now: what the pass read besides the host."""
    here: dict[str, Any] = {
        "argv": list(argv),
        "cwd": os.getcwd(),
        "host": socket.gethostname(),  # which host's slice of a farm
        "environment": {k: v for k, v in os.environ.items() if k.startswith("UMLSTATE_") or k in ENVIRONMENT},
        "terminal": [os.isatty(fd) for fd in (0, 1, 2)],  # colours, progress, what apply prints
        "code": _code(),
    }
    return hashlib.sha256(json.dumps(here, sort_keys=True).encode()).hexdigest()[:32]


def _code() -> list[Any]:
    """The code that would run: this Python, umlstate's files, and the folders its libraries are installed in
    (an install or upgrade changes theirs)."""
    files: list[Any] = []
    folders = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.name.endswith(".py"):
                    st = entry.stat()
                    files.append([entry.path, st.st_size, st.st_mtime_ns])
                elif entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                    folders.append(entry.path)
    files.sort()
    paths = []
    for folder in sys.path:
        try:
            paths.append([folder, os.stat(folder or ".").st_mtime_ns])
        except OSError:
            paths.append([folder, None])
    return [sys.version, sys.executable, files, paths]


def _quick(name: str) -> tuple[str, int] | None:
    """What the last full pass printed and exited with, when everything it read reads the same now."""
    from umlstate.host import netns
    from umlstate.host.lock import TopologyLock
    from umlstate.host.netlink import Netlink
    from umlstate.observe import reads, witness

    try:
        with trusted.open_trusted(QUICK_DIR) as records:
            data = records.read(f"{name}.json", MAX_RECORD)
    except FileNotFoundError:
        return None
    record = json.loads(data)
    if record.get("format") != FORMAT:
        return None
    probe = witness.Probe.from_json(record["probe"])
    if record["default_path"] and os.path.abspath(resolve_topology(None)) != probe.topology:
        return None  # ./topology.yaml came or went since
    trusted.check_root_file(probe.topology)  # as the full pass vets it: only root may write what root runs
    with open(probe.topology, "rb") as f:
        if digest(f.read(MAX_TOPOLOGY + 1)) != record["topology"]:
            return None
    below_topology = os.path.dirname(probe.topology)
    if any(digest(trusted.read_below(below_topology, below, GUEST_FILE_LIMIT)) != seen
           for below, seen in record["guest_files"].items()):
        return None
    for path, what in ((probe.run_dir, "run_dir"), (probe.state_dir, "state_dir")):
        trusted.check_trusted_folder(path, what)  # before the lock is taken in state_dir, as the full pass does
    if probe.netns is not None:
        netns.enter(probe.netns)
    with TopologyLock(probe.state_dir, 0.0) if record["locked"] else contextlib.nullcontext():
        known = reads.LinksRead.from_json(record["links"])
        found, links = witness.read(probe, Netlink(), known)
        if found != record["witness"]:
            return None
    if links.answers != known.answers:  # the same links in other bytes (the kernel re-randomizes reachable times)
        with contextlib.suppress(OSError):
            _keep({**record, "links": links.to_json()}, name)
    return str(record["stdout"]), int(record["code"])


@dataclass(frozen=True)
class Kept:
    """What a full in-sync pass leaves for the quick one."""

    probe: witness.Probe
    witness: str  # witness.read(probe), the same before and after a second observation that agreed
    links: reads.LinksRead  # the links as that read found them
    topology: str  # the digest of the topology's bytes as loaded
    guest_files: Mapping[str, str]  # and of each guest file's, by its `from`
    default_path: bool  # no topology was named: found by where.resolve_topology
    stdout: str
    code: int
    locked: bool  # the pass reads under the topology's lock, as apply does


def remember(name: str, kept: Kept) -> None:
    """Keep a full in-sync pass's output and evidence for the next identical run."""
    record = {"format": FORMAT, "probe": kept.probe.to_json(), "witness": kept.witness,
              "links": kept.links.to_json(), "topology": kept.topology, "guest_files": dict(kept.guest_files),
              "default_path": kept.default_path, "stdout": kept.stdout, "code": kept.code, "locked": kept.locked}
    _keep(record, name)


def _keep(record: Mapping[str, Any], name: str) -> None:
    with trusted.open_trusted(QUICK_DIR, create=True, mode=0o700) as folder:
        folder.write_atomic(f"{name}.json", json.dumps(record, sort_keys=True).encode(), 0o600)
        names = [n for n in folder.scan(KEEP * 4) if n.endswith(".json")]
        if len(names) > KEEP:
            stats = {n: st.st_mtime_ns for n in names if (st := folder.lstat(n)) is not None}
            for old in sorted(stats, key=stats.__getitem__)[:len(names) - KEEP]:
                folder.unlink(old, kinds=("file",))


def forget(name: str) -> None:
    """The record for this command line no longer holds (its pass was not in sync)."""
    try:
        with trusted.open_trusted(QUICK_DIR) as folder:
            folder.unlink(f"{name}.json", kinds=("file",))
    except FileNotFoundError:
        pass
