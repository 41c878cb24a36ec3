"""One guest's trouble stays its own: the plan is a graph, and a failure stops only what needs it.

Issue 18's attacks on a live farm, by the guests' user: a COW header whose
base time the user rewrote, a umid folder nested past what root will walk.
Each time the user's guest goes down and so does a neighbour's (a crash);
the next apply brings the neighbour back in the same pass, names the broken
guest (exit 1), and once the operator mends it one apply converges.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest

from conftest import needs_root
from farm import Farm, alive, ttl

pytestmark = [needs_root, pytest.mark.kernel, pytest.mark.slow]


def as_user(*argv: str) -> None:
    subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *argv], check=True)


def crash(farm: Farm, *guests: str) -> None:
    """Every process of each guest, ended the way a crash ends them (its user may do the same)."""
    pids = [farm.guest_pid(g) for g in guests]
    for pid in pids:
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_guest_whose_user_broke_its_cow_header_does_not_keep_its_neighbour_down(farm: Farm) -> None:
    assert farm.cli("apply", "--yes").returncode == 0
    cow = farm.tmp / "state" / "web.cow"
    # The user rewrites the base image's time in the header of their own guest's COW file (it is theirs).
    as_user("/usr/bin/python3", "-c", f"f = open({str(cow)!r}, 'r+b'); f.seek(8); f.write({struct.pack('>I', 12345)!r})")
    crash(farm, "web", "db")

    applied = farm.cli("apply", "--yes")
    said = applied.stdout + applied.stderr
    assert applied.returncode == 1, said
    assert "failed: guest web: not started" in said and "COW file" in said, said
    assert "touch" not in said, "no hint changes what other guests share"
    assert ttl(farm.lan_ping("172.16.99.2")) == 63, "the neighbour is back in the same pass: " + said
    status = farm.cli("status")
    assert status.returncode == 2 and "guest web" in status.stdout.replace("  ", " ")

    cow.unlink()  # the operator's mend: web boots afresh from the base
    mended = farm.cli("apply", "--yes")
    assert mended.returncode == 0, mended.stdout + mended.stderr
    assert ttl(farm.lan_ping("172.16.99.1")) == 63
    assert farm.cli("plan", "--detailed-exitcode").returncode == 0


def test_a_umid_folder_root_cannot_clear_is_set_aside_and_handed_back(farm: Farm) -> None:
    assert farm.cli("apply", "--yes").returncode == 0
    umid = farm.user_dir() / "uml" / "web"
    crash(farm, "web", "db")
    # The user leaves a folder nested deeper than root's bounded removal walks, where web's umid folder is.
    as_user("/usr/bin/python3", "-c", f"import os; os.makedirs({str(umid / '/'.join(['d'] * 45))!r}, exist_ok=True)")

    applied = farm.cli("apply", "--yes")
    said = applied.stdout + applied.stderr
    assert applied.returncode == 0, said
    assert ttl(farm.lan_ping("172.16.99.2")) == 63, "db is started: " + said
    assert ttl(farm.lan_ping("172.16.99.1")) == 63, "web too, with a fresh umid folder: " + said
    uml = farm.user_dir() / "uml"
    aside = [p for p in uml.iterdir() if p.name.startswith(".web.stale-")]
    assert len(aside) == 1 and aside[0].stat().st_uid != 0, "the folder root could not clear is set aside"
    assert [p for p in uml.rglob("*") if p.lstat().st_uid == 0] == [], \
        "root leaves nothing in the user's folder that the user cannot remove"
    as_user("rm", "-rf", str(aside[0]))  # and the user can
    assert not aside[0].exists()


def test_a_guest_that_dies_at_every_start_backs_off_while_its_neighbour_is_repaired(farm: Farm) -> None:
    """CrashLoopBackOff: under watch, a guest that cannot boot (too little memory) is started a handful of
    times in its first 40 s (at once, then 10 s, 20 s ... after each death), while a killed neighbour comes
    back within seconds. Without the backoff, watch's own retries started it six times in 40 s."""
    farm.write(web_mem="16M")
    cmd = [sys.executable, "-m", "umlstate", "--netns", farm.host.name, "--log-format", "json", "watch",
           str(farm.path), "--resync", "600"]
    with open(farm.tmp / "watch.log", "w+") as log:
        watcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            began = time.monotonic()
            assert ttl(farm.lan_ping("172.16.99.2", seconds=60)) == 63, "db is up whatever web does"
            crash(farm, "db")
            killed = time.monotonic()
            assert ttl(farm.lan_ping("172.16.99.2", seconds=30)) == 63
            back = time.monotonic() - killed
            time.sleep(max(0.0, 40 - (time.monotonic() - began)))
        finally:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(10)
    events = [json.loads(line) for line in (farm.tmp / "watch.log").read_text().splitlines() if line.startswith("{")]
    starts = [e for e in events if e.get("event") == "action" and e.get("kind") == "guest" and e.get("target") == "web"
              and e.get("op") == "create"]
    story = "\n".join(f"{e.get('timestamp', '')[11:23]} {e.get('event')} {e.get('op') or ''} {e.get('target') or ''}: "
                      + str(e.get("reason") or e.get("error") or e.get("until") or "")[:200].replace("\n", " | ")
                      for e in events if e.get("target") == "web" or e.get("event", "").startswith("watch"))
    assert 2 <= len(starts) <= 4, "web's starts and watch's passes:\n" + story  # a string: pytest shows it whole
    assert back < 20, f"the neighbour came back in {back:.1f}s"
    now = farm.cli("status")
    row = next(line for line in now.stdout.splitlines() if line.startswith("guest") and " web " in line)
    assert "backing off until" in row and "crashes" in row, now.stdout
    assert farm.cli("start", "web").returncode == 1, "start lifts the backoff and tries at once (and web fails)"
