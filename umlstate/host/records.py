"""What umlstate owns besides marked links: ``<state_dir>/state.json``.

Read by observation into ``snapshot.Records``; written by the executor before
each change that creates something (write-ahead), so that a run killed at any
moment leaves records the next run trusts. Writes are atomic (rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from umlstate.errors import HostError
from umlstate.model.snapshot import Records

FORMAT_VERSION = 1


def path_of(state_dir: str) -> Path:
    return Path(state_dir) / "state.json"


def load(state_dir: str) -> Records:
    path = path_of(state_dir)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return Records()
    except PermissionError:
        raise HostError(f"reading umlstate's records {path} needs root (it is {_mode(path)})",
                        f"run umlstate as root, or, for monitoring as another user, chmod 0644 {path}") from None
    except (OSError, ValueError) as exc:
        raise HostError(f"cannot read umlstate's records {path}: {exc}",
                        "restore the file from a backup, or move it away to forget what umlstate owns "
                        "(owned taps stay recognisable by their ifalias)") from None
    return Records(
        sysctl_originals=dict(data.get("sysctl_originals", {})),
        proxies=frozenset((d, a) for d, a in data.get("proxies", ())),
        groups_created=frozenset(data.get("groups_created", ())),
        members_added=frozenset((g, u) for g, u in data.get("members_added", ())),
        tun_created=bool(data.get("tun_created", False)),
        tun_path=data.get("tun_path"),
        tun_original=(data["tun_original"][0], data["tun_original"][1]) if data.get("tun_original") else None,
        pending_taps=frozenset(data.get("pending_taps", ())),
        held=frozenset(data.get("held", ())),
        boot_id=data.get("boot_id"),
    )


def save(state_dir: str, records: Records) -> None:
    data = {
        "format_version": FORMAT_VERSION,
        "sysctl_originals": dict(sorted(records.sysctl_originals.items())),
        "proxies": sorted(records.proxies),
        "groups_created": sorted(records.groups_created),
        "members_added": sorted(records.members_added),
        "tun_created": records.tun_created,
        "tun_path": records.tun_path,
        "tun_original": list(records.tun_original) if records.tun_original else None,
        "pending_taps": sorted(records.pending_taps),
        "held": sorted(records.held),
        "boot_id": records.boot_id,
    }
    folder = Path(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".state.", suffix=".tmp")
    try:
        # World-readable, so `status` and `plan` work for a monitoring user;
        # nothing in it is secret, and only root may change it.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path_of(state_dir))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "unreadable"
    return f"mode {st.st_mode & 0o777:04o}, owner uid {st.st_uid}"
