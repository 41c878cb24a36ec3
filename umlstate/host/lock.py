"""One lock per topology, held by every run that may change the host.

flock(2) on ``<state_dir>/lock``: released by the kernel when the holder dies,
so a killed run never leaves the topology locked. The holder writes its pid
into the file so that a waiting run can name it. It lives in state_dir, which
stays root's, not in run_dir, which may belong to the switch's user.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path
from types import TracebackType

from umlstate.errors import HostError, LockBusy


class TopologyLock:
    def __init__(self, state_dir: str, timeout: float) -> None:
        self.path = Path(state_dir) / "lock"
        self.timeout = timeout
        self.fd: int | None = None

    def __enter__(self) -> TopologyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        # state_dir is checked to be root's before any run takes the lock; O_NOFOLLOW and the
        # fstat still refuse a link or a FIFO that an older, laxer layout let someone plant.
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:  # ELOOP: a link; ENXIO: a FIFO without reader; and the like
            raise HostError(f"the lock {self.path} cannot be opened: {exc.strerror}",
                            f"remove it (rm {self.path}); umlstate makes a new one") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            os.close(fd)
            raise HostError(f"the lock {self.path} is not a regular file of this user's",
                            f"remove it (rm {self.path}); umlstate makes a new one")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise LockBusy(f"another umlstate run (pid {holder}) holds the lock {self.path}; "
                                   f"waited {self.timeout:g}s. Try again when it has finished.") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the last fd releases the flock
            self.fd = None
