"""The executor's port to the host's kernel and system: what it asks of them, in its own words.

Apply layer. The executor carries the plan's network and system actions out
through a ``Host``: taps and the tun node (ioctls), rtnetlink batches, announcements on the uplinks, sysctls,
passwd's programs, the nftables policy, guests' seed disks and the records. ``System`` is the host
itself; the golden "plan -> host calls" tests give the executor a recording
host instead, and read what a plan makes it do without root
(tests/plan/test_host_calls.py). Switch and guest processes have a port of
their own beside it, apply/processes.py.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from umlstate.apply import ruleset
from umlstate.errors import ActionError, HostError
from umlstate.host import netlink, records, seed, sysctl, tun
from umlstate.host.announce import Address
from umlstate.host.announce import announce as send_announcements
from umlstate.host.users import gid_of, uid_of
from umlstate.model.snapshot import Records, RulesetRecord
from umlstate.plan import actions as A
from umlstate.plan.cmdline import PROGRAM_PACKAGES


class Host(Protocol):
    def uid(self, user: str) -> int: ...

    def gid(self, group: str) -> int: ...

    def create_tap(self, tun_path: str, name: str, uid: int, gid: int | None) -> None: ...

    def fix_tap(self, tun_path: str, name: str, uid: int, gid: int | None) -> None: ...

    def make_node(self, path: str, mode: int | None, gid: int | None) -> None: ...

    def fix_node(self, path: str, mode: int | None, gid: int | None) -> None: ...

    def delete_node(self, path: str) -> None: ...

    def quiet_ipv6(self, link: str) -> None: ...

    def write_sysctl(self, key: str, value: str) -> None: ...

    def batch(self) -> netlink.Batch: ...

    def send(self, requests: netlink.Batch, limit: int | None = None) -> list[tuple[object, int]]: ...

    def delete_group(self, group: int) -> None: ...

    def announce(self, uplink: str, addresses: tuple[Address, ...]) -> dict[Address, str]: ...

    def run(self, program: str, *args: str, already: int | None = None) -> None: ...

    def load_ruleset(self, action: A.LoadRuleset) -> Callable[[], RulesetRecord]:
        """Start loading the policy; the call returned waits for the load, and gives its record or raises."""
        ...

    def delete_ruleset(self, action: A.DeleteRuleset) -> None: ...

    def save_records(self, state_dir: str, recs: Records) -> None: ...

    def write_seed(self, path: str, files: tuple[tuple[str, bytes], ...], user: str) -> None: ...

    def delete_seed(self, path: str) -> None: ...


class System:
    """The host itself: each call is the host module's."""

    def __init__(self, nl: netlink.Netlink) -> None:
        self.nl = nl

    def uid(self, user: str) -> int:
        return uid_of(user)

    def gid(self, group: str) -> int:
        return gid_of(group)

    def create_tap(self, tun_path: str, name: str, uid: int, gid: int | None) -> None:
        tun.create_tap(tun_path, name, uid, gid)

    def fix_tap(self, tun_path: str, name: str, uid: int, gid: int | None) -> None:
        tun.fix_tap(tun_path, name, uid, gid)

    def make_node(self, path: str, mode: int | None, gid: int | None) -> None:
        tun.make_node(path, mode, gid)

    def fix_node(self, path: str, mode: int | None, gid: int | None) -> None:
        tun.fix_node(path, mode, gid)

    def delete_node(self, path: str) -> None:
        tun.delete_node(path)

    def quiet_ipv6(self, link: str) -> None:
        sysctl.quiet_ipv6(link)

    def write_sysctl(self, key: str, value: str) -> None:
        sysctl.write(key, value)

    def batch(self) -> netlink.Batch:
        return netlink.Batch()

    def send(self, requests: netlink.Batch, limit: int | None = None) -> list[tuple[object, int]]:
        return requests.send(limit)

    def delete_group(self, group: int) -> None:
        self.nl.delete_group(group)

    def announce(self, uplink: str, addresses: tuple[Address, ...]) -> dict[Address, str]:
        """The addresses not announced, and why."""
        return send_announcements(uplink, addresses)

    def run(self, program: str, *args: str, already: int | None = None) -> None:
        """One of passwd's programs; ``already``: the exit status that means the change was made already."""
        path = shutil.which(program)
        if path is None:
            raise HostError(f"program {program} is not installed", f"apt-get install {PROGRAM_PACKAGES[program]}")
        proc = subprocess.run([path, *args], capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode not in (0, already):
            raise ActionError(f"{program} {' '.join(args)}: {proc.stderr.strip()[:500] or f'exit {proc.returncode}'}")

    def load_ruleset(self, action: A.LoadRuleset) -> Callable[[], RulesetRecord]:
        """In a thread of its own: libnftables works in C, without the GIL, so the transaction (half of it in
        the kernel) takes the second CPU while the executor sends its rtnetlink requests. The thread is in
        this process's network namespace: it starts from the thread that entered it."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nftables")
        loading = pool.submit(ruleset.load, action)

        def wait() -> RulesetRecord:  # and the thread ended: none outlives its pass (or runs when guests start)
            try:
                return loading.result()
            finally:
                pool.shutdown(wait=True)
        return wait

    def delete_ruleset(self, action: A.DeleteRuleset) -> None:
        ruleset.delete(action)

    def save_records(self, state_dir: str, recs: Records) -> None:
        records.save(state_dir, recs)

    def write_seed(self, path: str, files: tuple[tuple[str, bytes], ...], user: str) -> None:
        """Readable by the guest's user alone: the guest opens it as that user."""
        seed.write(path, files, uid_of(user))

    def delete_seed(self, path: str) -> None:
        seed.delete(path)
