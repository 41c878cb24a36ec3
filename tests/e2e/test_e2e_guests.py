"""The seed's scenario end to end: real kernels, real uml_switch, real guests.

The LAN reaches the guests through proxy ARP and forwarding; the switch and
the guests run as nobody (the farm fixture, tests/farm.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from conftest import needs_root, umlstate
from farm import Farm, alive, ttl

pytestmark = [needs_root, pytest.mark.slow]


def test_the_lan_reaches_every_guest_and_guests_reach_each_other(farm: Farm) -> None:
    applied = farm.cli("apply", "--yes")
    assert applied.returncode == 0, applied.stderr
    # Through proxy ARP on eth0 and forwarding: the host is one hop, so 64 - 1.
    assert ttl(farm.lan_ping("172.16.99.1")) == 63
    assert ttl(farm.lan_ping("172.16.99.2")) == 63
    deadline = time.monotonic() + 30
    while "umlstate-guest: ping 172.16.99.2 ok" not in farm.log("web") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "umlstate-guest: ping 172.16.99.2 ok" in farm.log("web"), farm.log("web")[-500:]

    plan = farm.cli("plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout
    ps = psutil.Process(farm.guest_pid("web"))
    assert ps.uids().real == 65534, "guests run as nobody"
    assert psutil.Process(farm.switch_pid()).uids().real == 65534
    cow = farm.tmp / "state" / "web.cow"
    assert oct(cow.stat().st_mode & 0o777) == "0o600" and cow.stat().st_uid == 65534

    # A foreign process in the host namespace must survive everything below.
    foreign = subprocess.Popen(["ip", "netns", "exec", farm.host.name, "sleep", "600"])
    try:
        destroyed = farm.cli("destroy", "--yes")
        assert destroyed.returncode == 0, destroyed.stderr
        assert foreign.poll() is None, "destroy must not touch a process it did not start"
        assert not farm.processes(), "destroy leaves no switch or guest running"
        assert "uml0" not in farm.host.ip("link", "show").stdout
        assert farm.host.ip("neigh", "show", "proxy").stdout.strip() == ""
        assert not any((farm.user_dir() / "uml").iterdir())
    finally:
        foreign.kill()
        foreign.wait()


def test_a_killed_switch_and_guest_are_named_and_restored(farm: Farm) -> None:
    assert farm.cli("apply", "--yes").returncode == 0
    os.kill(farm.switch_pid(), signal.SIGKILL)
    os.killpg(farm.guest_pid("web"), signal.SIGKILL)
    time.sleep(0.3)

    plan = farm.cli("plan", "--detailed-exitcode")
    shown = plan.stdout + plan.stderr
    assert plan.returncode == 2, shown
    assert "+ switch sw0" in plan.stdout and "not running" in plan.stdout, shown
    assert "+ guest web" in plan.stdout, shown
    assert "-/+ guest db" in plan.stdout and "switch sw0 restarted" in plan.stdout, shown

    applied = farm.cli("apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert ttl(farm.lan_ping("172.16.99.1")) == 63, farm.log("web")[-800:]
    assert ttl(farm.lan_ping("172.16.99.2")) == 63, farm.log("db")[-800:]
    again = farm.cli("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    destroyed = farm.cli("destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr


def test_stop_leaves_no_umid_folder_and_start_brings_the_guest_back(farm: Farm) -> None:
    assert farm.cli("apply", "--yes").returncode == 0
    pid = farm.guest_pid("web")
    stopped = farm.run("stop", str(farm.path), "web")
    assert stopped.returncode == 0, stopped.stderr
    assert "guest web stopped by cad" in stopped.stderr, "a clean stop goes through mconsole cad"
    assert "warning" not in stopped.stderr
    assert stopped.stdout == "Guest web stays down until `umlstate start web`; apply, cron and watch leave it so.\n"
    assert not alive(pid)
    assert not (farm.user_dir() / "uml" / "web").exists()
    # Held down: a cron apply must not undo the operator's stop.
    assert farm.cli("plan", "--detailed-exitcode").returncode == 0

    started = farm.run("start", str(farm.path), "web")
    assert started.returncode == 0, started.stderr
    assert ttl(farm.lan_ping("172.16.99.1")) == 63
    assert farm.cli("destroy", "--yes").returncode == 0


def test_a_guest_whose_init_reboots_on_ctrl_alt_del_is_ended_at_its_restart(farm: Farm) -> None:
    """The seed's pitfall: cad reboots such a guest; stop ends it at the restart, before a second boot."""
    farm.path.write_text(farm.path.read_text().replace("args: [umlstate.ping=172.16.99.2]",
                                                       "args: [umlstate.ping=172.16.99.2, umlstate.cad=reboot]"))
    assert farm.cli("apply", "--yes").returncode == 0
    pid = farm.guest_pid("web")
    stopped = farm.run("stop", str(farm.path), "web")
    assert stopped.returncode == 0, stopped.stderr
    assert "guest web stopped by cad, then its reboot in" in stopped.stderr
    assert "note: guest web answers ctrl-alt-del with a reboot" in stopped.stderr
    assert not alive(pid)
    run = farm.log("web")[farm.log("web").rfind("--- umlstate: "):]
    assert run.count("Run /sbin/init") == 1, "no second boot"
    assert farm.cli("destroy", "--yes").returncode == 0


def test_a_guest_that_ignores_ctrl_alt_del_is_synced_remounted_and_halted(farm: Farm) -> None:
    farm.path.write_text(farm.path.read_text().replace("args: [umlstate.ping=172.16.99.2]",
                                                       "args: [umlstate.ping=172.16.99.2, umlstate.cad=ignore]"))
    assert farm.cli("apply", "--yes").returncode == 0
    pid = farm.guest_pid("web")
    stopped = umlstate("stop", str(farm.path), "web", netns=farm.host.name, env={"UMLSTATE_STOP_TIMEOUT": "3"})
    assert stopped.returncode == 0, stopped.stderr
    assert "guest web stopped by sync and read-only, then halt" in stopped.stderr
    assert "warning: guest web ignored mconsole cad" in stopped.stderr
    assert "Emergency Remount complete" in farm.log("web") or "Emergency Sync complete" in farm.log("web")
    assert not alive(pid)
    assert farm.cli("destroy", "--yes").returncode == 0


def test_a_changed_mem_replaces_the_guest(farm: Farm) -> None:
    assert farm.cli("apply", "--yes").returncode == 0
    old = farm.guest_pid("web")
    farm.write(web_mem="128M")
    plan = farm.cli("plan")
    assert "-/+ guest web" in plan.stdout and "-mem=96M +mem=128M" in plan.stdout, plan.stdout
    assert "guest db" not in plan.stdout
    assert farm.cli("apply", "--yes").returncode == 0
    assert farm.guest_pid("web") != old
    assert "mem=128M" in psutil.Process(farm.guest_pid("web")).cmdline()
    assert ttl(farm.lan_ping("172.16.99.1")) == 63
    assert farm.cli("destroy", "--yes").returncode == 0


def test_a_guest_that_dies_at_boot_shows_its_log(farm: Farm) -> None:
    farm.path.write_text(farm.path.read_text().replace(f"base: {farm.image}", f"image: {farm.tmp}/empty.img", 1))
    (farm.tmp / "empty.img").write_bytes(b"\0" * 1024 * 1024)
    result = farm.cli("apply", "--yes")
    assert result.returncode == 1
    assert "guest web exited right after it started" in result.stderr
    assert "    | " in result.stderr, "the end of the guest's log is shown"
    assert "hint: the disk image is not a file system the kernel can mount as root" in result.stderr
    assert "Traceback" not in result.stderr
    farm.cli("destroy", "--yes")


def test_a_guest_with_too_little_memory_shows_the_panic_and_what_it_means(farm: Farm) -> None:
    # At 16M, UML either refuses at once ("Too few physical memory!") or
    # panics allocating its memory map, by the luck of address layout. At
    # 32M it boots and panics "deadlocked on memory" later: too late for a test.
    farm.write(web_mem="16M")
    result = farm.cli("apply", "--yes")
    assert result.returncode == 1
    assert "guest web exited right after it started" in result.stderr, result.stderr
    assert ("    | Too few physical memory! Needed=" in result.stderr
            or "Kernel panic - not syncing: Failed to allocate" in result.stderr), result.stderr
    assert "[<" not in result.stderr, "kernel stack frames are left out of the report"
    assert "hint: the guest ran out of memory: raise mem (a UML 6.1 guest needs 64M at the very least)" in result.stderr
    # db was still booting when web failed; before its init runs, a guest ignores cad
    # and destroy waits out cad's bound. Let it finish booting first.
    farm.lan_ping("172.16.99.2")
    farm.cli("destroy", "--yes")


def test_a_vde_switch_farm_works_the_same_way(farm: Farm) -> None:
    farm.write(kind="vde_switch")
    applied = farm.cli("apply", "--yes")
    assert applied.returncode == 0, applied.stderr
    assert ttl(farm.lan_ping("172.16.99.1")) == 63
    assert ttl(farm.lan_ping("172.16.99.2")) == 63
    assert farm.cli("plan", "--detailed-exitcode").returncode == 0
    assert farm.cli("destroy", "--yes").returncode == 0
    assert not farm.processes()


def test_apply_returns_when_guests_answer_and_names_one_that_never_does(farm: Farm) -> None:
    """Ready means answering: a guest whose init leaves its network alone is a failed apply, with the way out."""
    applied = farm.cli("apply", "--yes")
    assert applied.returncode == 0
    assert "guest web ready in" in applied.stderr and "answering at 172.16.99.1" in applied.stderr
    assert farm.lan.run("ping", "-c1", "-W1", "172.16.99.1").returncode == 0, "answering when apply returns"
    assert farm.cli("destroy", "--yes").returncode == 0

    farm.path.write_text(farm.path.read_text().replace("args: [umlstate.ping=172.16.99.2]",
                                                       "args: [umlstate.net=off]"))
    stuck = farm.cli("apply", "--yes", "--wait-timeout", "8")
    assert stuck.returncode == 1
    assert "guest web not ready within 8s (apply --wait-timeout): it did not answer at 172.16.99.1" in stuck.stderr
    assert "failed: create guest web" in stuck.stderr and "guest db" not in stuck.stderr.split("failed:")[1]
    assert "umlstate.<if>= on /proc/cmdline" in stuck.stderr
    assert farm.cli("apply", "--yes", "--no-wait").returncode == 0, "--no-wait: booted is enough"
