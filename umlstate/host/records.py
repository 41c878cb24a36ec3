"""What umlstate owns besides marked links: ``<state_dir>/state.json``.

Read by observation into ``snapshot.Records``; written by the executor before
each change that creates something (write-ahead), so that a run killed at any
moment leaves records the next run trusts. Writes are atomic (rename), through
the descriptor of state_dir once it is vetted as root's alone (host/trusted.py).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from umlstate.errors import HostError
from umlstate.host import safefs, trusted
from umlstate.model.snapshot import Records, records_from_json, to_json

FORMAT_VERSION = 1
MAX_BYTES = 16 << 20  # far above a 1000-guest farm's records; a bound on what is parsed


def path_of(state_dir: str) -> Path:
    return Path(state_dir) / "state.json"


def read(state_dir: str) -> bytes | None:
    """The records' bytes as they are (None: no records yet), bounded, never through a link, root's alone."""
    path = path_of(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise HostError(f"reading umlstate's records {path} needs root (it is {_mode(path)})",
                        f"run umlstate as root, or, for monitoring as another user, chmod 0644 {path}") from None
    except OSError as exc:
        raise _unreadable(path, exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_size > MAX_BYTES:
            raise _unreadable(path, f"not a root-owned regular file of at most {MAX_BYTES} bytes")
        return os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)


def load(state_dir: str) -> Records:
    from pydantic import ValidationError  # imported when records are parsed: the quick pass only reads bytes

    path = path_of(state_dir)
    data = read(state_dir)
    if data is None:
        return Records()
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _unreadable(path, f"not JSON: {str(exc)[:200]}") from None
    version = parsed.get("format_version", 1) if isinstance(parsed, dict) else None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _unreadable(path, f"format_version {version} is not one this umlstate reads (at most "
                                f"{FORMAT_VERSION}); a newer umlstate wrote it, or it is not umlstate's")
    try:
        return records_from_json(parsed)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise _unreadable(path, f"{where}: {first['msg']}") from None


def _unreadable(path: Path, why: str) -> HostError:
    return HostError(f"cannot read umlstate's records {path}: {why}",
                     "restore the file from a backup, or move it away to forget what umlstate owns "
                     "(owned taps stay recognisable by their ifalias)")


def save(state_dir: str, records: Records) -> None:
    """Through the trusted folder's descriptor, atomically and durably (the file, then the rename)."""
    data = json.dumps({"format_version": FORMAT_VERSION, **to_json(records)}, indent=1, sort_keys=True) + "\n"
    # World-readable, so `status` and `plan` work for a monitoring user; nothing in it is secret, and only
    # root may change it.
    # As root, state_dir must be root's alone up to /; anyone else writes with only their own rights.
    opened = trusted.open_trusted(state_dir, create=True) if os.geteuid() == 0 else \
        safefs.Dir.open(os.path.abspath(state_dir), create=True)
    with opened as folder:
        folder.write_atomic(path_of(state_dir).name, data.encode(), 0o644)


def _mode(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "unreadable"
    return f"mode {st.st_mode & 0o777:04o}, owner uid {st.st_uid}"
