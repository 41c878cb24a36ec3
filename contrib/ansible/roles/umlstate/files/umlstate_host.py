"""The host's side of the rollout's steps: run by the host's Python, one JSON request in, one JSON reply out.

The role's action plugin (``action_plugins/umlstate_host.py``) sends this file
to ``python -I`` on its stdin, the request after it (its length on a line,
then the JSON): one round trip, like a pipelined module, without a module's
wrapping. Standard library only; it runs as root, so the topology copies root
keeps are read and written without following links, in folders only root can
write, and every read is bounded.

- ``stage``: check the copy's folder (made if missing, refused unless only root
  could have written it: ``root_folder``), read the copy the host kept from its
  last run and the move journal (each may be missing), write the new topology
  next to the copy (``<path>.next``) and, unless it is the copy itself,
  validate it with the host's own umlstate.
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

MAX_READ = 4 << 20  # a topology or a journal: text, never this large (umlstate reads no larger topology)


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
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise OSError(errno.EINVAL, f"{path} is not UTF-8 text") from None
    finally:
        os.close(fd)


def root_folder(folder: str) -> bool:
    """Make ``folder`` (and its parents) if missing, root's, 0755; True when it made it.

    What the folder holds decides root's next steps (the kept copy is what the host's timer applies; the
    journal says which COW files to carry), so only root may ever have written there: every folder from /
    to it must be root's and not a link, none writable by others (a sticky one on the way, like /tmp, may
    be crossed: others cannot replace root's entry in it), and none missing below one that others can
    write. A folder that fails is refused, never repaired: a user may have planted files in it already.
    The rule is umlstate's own for the folders it trusts (umlstate.host.trusted), without its links.
    """
    if not os.path.isabs(folder):
        raise OSError(errno.EINVAL, f"{folder} is not an absolute path")
    cur = "/"
    for name in [c for c in folder.split("/") if c]:
        above = os.lstat(cur)
        child = os.path.join(cur, name)
        try:
            st = os.lstat(child)
        except FileNotFoundError:
            if above.st_mode & 0o022:
                raise OSError(errno.EPERM, f"others can write {cur}, so they could make {child} before root "
                                           f"does: make it as root first (mkdir -m 755 {child})") from None
            os.makedirs(folder, mode=0o755)
            return True
        if above.st_mode & 0o022 and not above.st_mode & stat.S_ISVTX:
            raise OSError(errno.EPERM, f"others can write {cur} and so replace {child}: chmod go-w {cur}")
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, f"{child} is not a folder (a link?): give the path without links")
        if st.st_uid != 0:
            raise OSError(errno.EPERM, f"{child} is not root's (uid {st.st_uid}): check what it holds, "
                                       f"then chown root {child}")
        cur = child
    if os.lstat(cur).st_mode & 0o022:
        raise OSError(errno.EPERM, f"others can write {cur}: check what it holds, then chmod go-w {cur}")
    return False


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
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False,
                              env={**os.environ, "NO_COLOR": "1"})
    except OSError as exc:  # as a shell says it: 127 not found, 126 not runnable
        return 127 if isinstance(exc, FileNotFoundError) else 126, "", f"{argv[0]}: {exc.strerror or exc}"
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


def stage(host: str, path: str, journal: str, content: str, validate: list[str]) -> dict[str, Any]:
    staged = path + ".next"
    try:
        changed = root_folder(os.path.dirname(path))  # first: what is read below is root's only then
        previous, journaled = read(path), read(journal)
        if read(staged) != content:
            write_atomic(staged, content)
        changed |= content != previous  # staging itself is bookkeeping: a new topology is news
    except OSError as exc:
        return {"failed": True, "rc": 1, "msg": f"staging the topology: {exc.strerror or exc}"}
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
        return {"failed": True, "rc": 1, "msg": f"putting the topology in place at {path}: {exc.strerror or exc}"}
    rc, out, err = run([*command, "apply", path, "--yes"])
    result = {"rc": rc, "stdout": out, "stderr": err, "stdout_lines": out.splitlines(),
              "stderr_lines": err.splitlines(), "changed": "Apply complete" in out}
    if rc != 0:
        result.update(failed=True, msg=f"umlstate apply failed (exit {rc})")
    return result


def main() -> None:
    # What follows this program on stdin: the request's length on a line, then the request (the controller's).
    request = json.loads(sys.stdin.buffer.read(int(sys.stdin.buffer.readline(32))))
    steps = {"stage": stage, "apply": apply}
    try:
        reply = steps[request["step"]](**request["args"])
    except Exception as exc:  # noqa: BLE001 - one answer in any case, with an exit code for the task's retries
        reply = {"failed": True, "rc": 1, "msg": f"umlstate_host: internal error (a bug): {type(exc).__name__}: {exc}"}
    # One line, the last: whatever a login shell printed before it (a banner, a become marker) is not the reply.
    sys.stdout.write("\n" + json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
