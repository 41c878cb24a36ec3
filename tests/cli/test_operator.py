"""What an operator meets at a prompt: running without root, no topology, a failed boot's log."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT, Netns, needs_root, umlstate

TAPS = """\
name: nr
host: {{run_dir: {tmp}/run, state_dir: {tmp}/state, sysctl: {{net.ipv4.ip_forward: 1}}}}
subnets: [{{name: a, cidr: 172.16.99.0/24, gateway: 172.16.99.254, proxy_arp: {{uplink: eth0}}}}]
taps: [{{name: uml0, owner: nobody, subnet: a}}, {{name: uml1, owner: nobody}}, {{name: uml2, owner: nobody}}]
"""


# The venv's interpreter may live under /root (pyenv), which nobody cannot
# enter; Debian's python3 of the same minor version runs the venv's packages.
SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
USER_PATH = os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])


def as_nobody(ns: Netns, *args: str) -> tuple[int, str, str]:
    """The CLI as user nobody, already inside ``ns`` (so without --netns: no root namespace is at stake)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is missing: no interpreter that user nobody can run")
    result = ns.run("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                    "env", "NO_COLOR=1", "PYTHONDONTWRITEBYTECODE=1", f"PYTHONPATH={USER_PATH}",
                    SYSTEM_PYTHON, "-m", "umlstate", *args, check=False)
    if "No module named" in result.stderr:
        pytest.fail(f"user nobody cannot import umlstate from {USER_PATH}: {result.stderr}")
    return result.returncode, result.stdout, result.stderr


@needs_root
def test_apply_as_a_user_names_what_needs_root_and_changes_nothing(host_with_uplink: Netns, tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TAPS.format(tmp=tmp_path))
    path.chmod(0o644)
    code, _out, err = as_nobody(host_with_uplink, "apply", str(path), "--yes")
    assert code == 1, err
    assert "apply must run as root, and this is nobody (uid 65534); nothing was changed." in err
    assert "tap uml0 and 2 more: persistent taps need CAP_NET_ADMIN" in err
    assert "sysctl net.ipv4.ip_forward: writing /proc/sys/net needs root" in err
    assert "proxy-neigh eth0 172.16.99.1" not in err  # the subnet has no guests: no proxy entry is planned
    assert f"to fix: sudo umlstate apply {path} --yes" in err
    assert "Traceback" not in err and "Errno" not in err
    assert host_with_uplink.json("link", "show", "type", "tun") == []
    assert not (tmp_path / "state").exists(), "not even the lock was taken"


@needs_root
def test_status_works_for_a_monitoring_user_after_a_root_apply(host_with_uplink: Netns, tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TAPS.format(tmp=tmp_path))
    path.chmod(0o644)
    ns = host_with_uplink.name
    assert umlstate("apply", str(path), "--yes", netns=ns).returncode == 0
    code, out, err = as_nobody(host_with_uplink, "status", str(path), "--json")
    assert code == 0, err
    assert {r["state"] for r in json.loads(out)["resources"]} == {"ok"}
    # An in-sync host needs nothing: apply as a user then is a no-op, not a refusal.
    code, out, err = as_nobody(host_with_uplink, "apply", str(path), "--yes")
    assert (code, out, err) == (0, "", "")
    assert umlstate("destroy", str(path), "--yes", netns=ns).returncode == 0


@needs_root
def test_entering_a_namespace_as_a_user_says_it_needs_root(netns: Netns, tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TAPS.format(tmp=tmp_path))
    code, _out, err = as_nobody(netns, "--netns", netns.name, "plan", str(path))
    assert code == 1
    assert err == (f"umlstate: entering network namespace {netns.name} needs root (CAP_SYS_ADMIN), and this is "
                   "uid 65534\n  to fix: run umlstate as root (sudo)\n")


def test_no_topology_anywhere_is_a_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "UMLSTATE_TOPOLOGY"}
    result = subprocess.run([sys.executable, "-m", "umlstate", "status"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=False)
    if Path("/etc/umlstate/topology.yaml").exists():
        return  # this machine has a default topology; the error cannot happen here
    assert result.returncode == 64
    assert result.stderr.startswith("umlstate: no topology given, and none of ./topology.yaml, "
                                    "/etc/umlstate/topology.yaml exists\n  to fix: pass a path")


def test_a_cow_file_is_checked_against_its_base_as_uml_would(tmp_path: Path) -> None:
    """uml_mkcow's header (and ours) records the base's mtime and size; a newer base strands the COW file."""
    from umlstate.guestimage import build
    from umlstate.model.loader import load_file
    from umlstate.observe.observe import cows

    base = build(tmp_path / "base.img")
    cow = tmp_path / "web.cow"
    subprocess.run(["uml_mkcow", str(cow), str(base)], check=True, capture_output=True)
    path = tmp_path / "t.yaml"
    path.write_text(f"""\
name: cow
host: {{state_dir: {tmp_path}}}
guests: [{{name: web, user: nobody, mem: 64M, disk: {{base: {base}}}}}]
""")
    topology = load_file(path)
    made = int(base.stat().st_mtime)
    assert cows(topology)[str(cow)].matches
    os.utime(base, (made + 60, made + 60))
    header = cows(topology)[str(cow)]
    assert not header.matches
    assert (header.base_mtime, header.base_size, header.now_mtime) == (made, base.stat().st_size, made + 60)


@needs_root
def test_a_tun_node_without_its_driver_says_modprobe_tun(tmp_path: Path) -> None:
    """What a kernel without tun looks like: a char node whose misc minor has no driver (ENODEV)."""
    from umlstate.errors import ActionError
    from umlstate.host.tun import create_tap

    if "251" in (line.split()[0] for line in Path("/proc/misc").read_text().splitlines()):
        pytest.skip("misc minor 251 has a driver on this machine")
    node = tmp_path / "tun"
    os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(10, 251))  # no driver registers misc minor 251
    with pytest.raises(ActionError) as failed:
        create_tap(str(node), "uml0", 0, None)  # fails at open(), before any tap is made
    assert str(failed.value) == (f"cannot open the tun device {node}: No such device; "
                                 "the kernel has no tun driver: modprobe tun (CONFIG_TUN)")


def one_guest(tmp_path: Path) -> Path:
    """A topology with one guest of nobody's, that nobody may read."""
    path = tmp_path / "t.yaml"
    path.write_text(f"""\
name: nr
host: {{run_dir: {tmp_path}/run, state_dir: {tmp_path}/state}}
guests: [{{name: web, user: nobody, mem: 64M, disk: {{image: {tmp_path}/disk.img}}}}]
""")
    path.chmod(0o644)
    return path


@needs_root
def test_stop_and_start_as_a_user_say_they_need_root(netns: Netns, tmp_path: Path) -> None:
    path = one_guest(tmp_path)
    for command in ("stop", "start"):
        code, _out, err = as_nobody(netns, command, str(path), "web")
        assert code == 1, err
        assert err.startswith(f"umlstate: {command} must run as root, and this is nobody (uid 65534); "
                              "nothing was changed.\n"
                              f"  guest web: whether it stays down is recorded in {tmp_path}/state, which is root's")
        assert f"to fix: sudo umlstate {command} {path} web" in err
    assert not (tmp_path / "state").exists()


@needs_root
def test_console_as_a_user_says_how_that_user_attaches(netns: Netns, tmp_path: Path) -> None:
    code, _out, err = as_nobody(netns, "console", str(one_guest(tmp_path)), "web")
    assert code == 1, err
    assert "`umlstate console` runs as root" in err
    assert f'to fix: screen PATH, where PATH is the "console" of guest-web in {tmp_path}/state/state.json' in err
