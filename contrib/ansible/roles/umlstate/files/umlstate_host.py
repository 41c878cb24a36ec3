"""The host's side of the rollout's steps: run by the host's Python, one JSON request in, one JSON reply out.

The role's action plugin (``action_plugins/umlstate_host.py``) sends this file
to ``python -I`` on its stdin, the request after it: one round trip, like a
pipelined module, without a module's wrapping. Standard library only; it runs
as root, so the topology copies root keeps are read and written without
following links, in folders that are root's, and every read is bounded.

- ``stage``: read the copy the host kept from its last run and the move journal
  (each may be missing), make the copy's folder root's and not writable by
  others, write the new topology next to the copy (``<path>.next``) and, unless
  it is the copy itself, validate it with the host's own umlstate.
- ``apply``: put the copy in place (rename ``<path>.next`` to it, or write the
  departure topology), then run ``umlstate apply`` on it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import subprocess
import sys
import tempfile
from typing import Any

MAX_READ = 4 << 20  # a topology or a journal: text, never this large


def read(path: str) -> str | None:
    """The file's text, or None when it is missing; never through a link, never more than MAX_READ."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        data = os.read(fd, MAX_READ + 1)
        if len(data) > MAX_READ:
            raise OSError(errno.EFBIG, f"{path} is larger than {MAX_READ} bytes")
        return data.decode()
    finally:
        os.close(fd)


def root_folder(folder: str) -> bool:
    """Make ``folder`` (and its parents) if missing; make it root's and not writable by group or others,
    as `file: state=directory owner=root mode=go-w` would. True when something changed."""
    changed = False
    if not os.path.lexists(folder):
        os.makedirs(folder, mode=0o755)
        changed = True
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ENOTDIR, f"{folder} is not a folder (a link?)")
    if st.st_uid != 0:
        os.lchown(folder, 0, -1)
        changed = True
    if st.st_mode & 0o022:
        os.chmod(folder, stat.S_IMODE(st.st_mode) & ~0o022)
        changed = True
    return changed


def write_atomic(path: str, text: str) -> None:
    """``text`` at ``path``, root's, 0644, whole or not at all (a temporary file in the same folder, renamed)."""
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".umlstate-stage-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            os.fchown(f.fileno(), 0, 0)
            os.fchmod(f.fileno(), 0o644)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def run(argv: list[str]) -> tuple[int, str, str]:
    """umlstate's exit code and output; it gets no stdin (ours is the request) and no colours."""
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False,
                          env={**os.environ, "NO_COLOR": "1"})
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


def stage(host: str, path: str, journal: str, content: str, validate: list[str]) -> dict[str, Any]:
    staged = path + ".next"
    try:
        previous, journaled = read(path), read(journal)
        changed = root_folder(os.path.dirname(path))
        if read(staged) != content:
            write_atomic(staged, content)
        changed |= content != previous  # staging itself is bookkeeping: a new topology is news
    except OSError as exc:
        return {"failed": True, "msg": f"staging the topology: {exc.strerror or exc}"}
    # The kept copy was put in place by a run whose stage had this host's umlstate validate it: the same
    # topology again (a re-run) moves nothing, and the apply that follows validates it before it changes
    # anything. A new topology, a copy edited by hand, or a host without a copy is validated now.
    if content != previous:
        rc, out, err = run([*validate, staged])
        if rc != 0:
            return {"failed": True, "rc": rc,
                    "msg": f"this host's umlstate refuses the new topology (exit {rc}):\n{err or out}"}
    # What moves.py reads of each host.
    return {"changed": changed, "staged": staged, "seen": {"name": host, "previous": previous, "journal": journaled}}


def apply(path: str, promote: bool, content: str | None, command: list[str]) -> dict[str, Any]:
    try:
        if content is not None:
            write_atomic(path, content)
        elif promote and os.path.lexists(path + ".next"):  # a retry finds it renamed already
            os.replace(path + ".next", path)
    except OSError as exc:
        return {"failed": True, "msg": f"putting the topology in place at {path}: {exc.strerror or exc}"}
    rc, out, err = run([*command, "apply", path, "--yes"])
    result = {"rc": rc, "stdout": out, "stderr": err, "stdout_lines": out.splitlines(),
              "stderr_lines": err.splitlines(), "changed": "Apply complete" in out}
    if rc != 0:
        result.update(failed=True, msg=f"umlstate apply failed (exit {rc})")
    return result


def main() -> None:
    request = json.loads(sys.stdin.buffer.read(2 * MAX_READ))  # what follows this program: a topology, some paths
    steps = {"stage": stage, "apply": apply}
    json.dump(steps[request["step"]](**request["args"]), sys.stdout)


if __name__ == "__main__":
    main()
