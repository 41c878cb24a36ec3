"""The demo: the seed's scenario on this machine, in namespaces made for it.

Run by scripts/demo (which installs what is needed first). It builds a tiny
guest image, makes a "umlstate-demo" host namespace whose eth0 is a veth to a
"umlstate-demo-lan" namespace (the LAN), adapts topology.example.yaml (or,
where the kernel has no uml_switch transport, topology.bridge.example.yaml) through
a small overlay (the guest's user, the image, folders under /tmp), and runs
umlstate plan, apply and status inside the host namespace; the LAN then pings
the guest through proxy ARP. `--down` takes it all away again. The root
network namespace is never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
HOST_NS, LAN_NS = "umlstate-demo", "umlstate-demo-lan"
WORK = Path("/tmp/umlstate-demo")
TOPOLOGY = WORK / "topology.yaml"
USER = "nobody"
GROUP = "umldemo"

BOLD, DIM, RESET = ("\x1b[1m", "\x1b[2m", "\x1b[0m") if sys.stdout.isatty() else ("", "", "")


def step(n: int, total: int, text: str) -> None:
    print(f"\n{BOLD}==> [{n}/{total}] {text}{RESET}", flush=True)


def run(*cmd: str, check: bool = True, show: bool = True) -> subprocess.CompletedProcess[str]:
    if show:
        print(f"{DIM}$ {' '.join(cmd)}{RESET}", flush=True)
    result = subprocess.run(list(cmd), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if show:
        sys.stdout.write(result.stdout)
    if check and result.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(cmd)}` failed with exit code {result.returncode}")
    return result


def umlstate(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(str(ROOT / ".venv" / "bin" / "umlstate"), "--netns", HOST_NS, *args, check=check)


def overlay(example: dict[str, Any], image: Path, kernel: str, mem: str = "96M") -> dict[str, Any]:
    """The example, adapted to this machine; every change is printed."""
    t = dict(example)
    host = dict(t.get("host", {}))
    host.update(run_dir=str(WORK / "run"), state_dir=str(WORK / "state"))
    host["tun"] = {**host.get("tun", {}), "path": str(WORK / "dev" / "tun"), "group": GROUP}
    host["groups"] = [{"name": GROUP, "members": [USER]}]
    t["host"] = host
    t["taps"] = [{**tap, "owner": USER, "group": GROUP} for tap in t.get("taps", [])]
    t["switches"] = [sw if sw.get("kind") == "bridge" else {**sw, "user": USER} for sw in t.get("switches", [])]
    t["guests"] = [{**g, "user": USER, "mem": mem, "kernel": kernel, "disk": {"base": str(image)}}
                   for g in t.get("guests", [])]
    return t


def choose_form(kernel: str, force_bridge: bool) -> tuple[str, Path]:
    """The seed's uml_switch where the kernel still has the daemon transport, else the bridge form."""
    from umlstate.host import kconfig

    path = shutil.which(kernel) or kernel
    info = kconfig.inspect(path)
    if force_bridge:
        return "the bridge form (--bridge)", ROOT / "topology.bridge.example.yaml"
    if info is not None and "daemon" not in info.transports:
        return (f"the bridge form: {path} (Linux {info.version}) has no daemon transport for uml_switch",
                ROOT / "topology.bridge.example.yaml")
    return f"the seed's uml_switch form: {path} still has the daemon transport", ROOT / "topology.example.yaml"


def up(kernel: str, force_bridge: bool, debian: bool) -> None:
    if HOST_NS in run("ip", "netns", "list", show=False).stdout.split():
        # A demo is a known starting point: an earlier one may have a guest
        # stopped, or a COW file made from the image this run rebuilds.
        print(f"{BOLD}An earlier demo is up: taking it down first.{RESET}")
        down()
    total = 7
    WORK.mkdir(parents=True, exist_ok=True)
    WORK.chmod(0o755)  # the guest's user must reach its image and folders
    image = WORK / "base.img"
    if debian:
        step(1, total, "Building a Debian guest (mmdebstrap, systemd, umlstate-net; cached after the first time)")
        built = run(str(ROOT / "scripts" / "build-debian-guest"), "--out", str(image), show=False)
        print(f"image: {built.stdout.strip().splitlines()[-1]}")
    else:
        step(1, total, "Building the demo guest image (busybox + an init that reads umlstate.eth0= from /proc/cmdline)")
        run(str(ROOT / ".venv" / "bin" / "python"), "-m", "umlstate.guestimage", str(image))

    step(2, total, f"Making the network: namespace {HOST_NS} (the host) with eth0 <-> lan0 in {LAN_NS} (the LAN)")
    if LAN_NS in run("ip", "netns", "list", show=False).stdout.split():
        run("ip", "netns", "del", LAN_NS)  # left by an interrupted demo
    run("ip", "netns", "add", HOST_NS)
    run("ip", "netns", "add", LAN_NS)
    run("ip", "-n", HOST_NS, "link", "add", "eth0", "type", "veth", "peer", "name", "lan0", "netns", LAN_NS)
    run("ip", "-n", HOST_NS, "addr", "add", "172.16.0.1/16", "dev", "eth0")
    run("ip", "-n", LAN_NS, "addr", "add", "172.16.0.2/16", "dev", "lan0")
    for ns, dev in ((HOST_NS, "eth0"), (HOST_NS, "lo"), (LAN_NS, "lan0"), (LAN_NS, "lo")):
        run("ip", "-n", ns, "link", "set", dev, "up")

    form, source = choose_form(kernel, force_bridge)
    step(3, total, f"Adapting {source.name} to this machine (an overlay; the example stays as it is)")
    print(f"Using {form}.")
    example = yaml.safe_load(source.read_text())
    TOPOLOGY.write_text(yaml.safe_dump(overlay(example, image, kernel, "256M" if debian else "96M"), sort_keys=False))
    print(f"user dupont -> {USER}; group umlusers -> {GROUP}; base image -> {image}; kernel -> {kernel};\n"
          f"run_dir, state_dir and the tun node under {WORK}; mem -> {'256M' if debian else '96M'}. "
          f"Written to {TOPOLOGY}")
    run(str(ROOT / ".venv" / "bin" / "umlstate"), "validate", str(TOPOLOGY))

    step(4, total, "umlstate plan: what apply would change (nothing has changed yet)")
    umlstate("plan", str(TOPOLOGY), check=False)

    step(5, total, "umlstate apply --yes: tun node, group, sysctl, tap or bridge, address, proxy ARP, switch, guest")
    umlstate("apply", str(TOPOLOGY), "--yes")

    step(6, total, "From the LAN, ping the guest 172.16.99.1 (proxy ARP on eth0, forwarding: ttl 63 = one hop)")
    deadline = time.monotonic() + 30
    while run("ip", "netns", "exec", LAN_NS, "ping", "-c1", "-W1", "172.16.99.1", show=False,
              check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit("demo: the guest did not answer within 30s; see "
                             f"{WORK}/state/logs/web.log")
        time.sleep(0.3)
    run("ip", "netns", "exec", LAN_NS, "ping", "-c3", "172.16.99.1")

    step(7, total, "umlstate status: every resource and its state")
    umlstate("status", str(TOPOLOGY), check=False)

    exe = ROOT / ".venv" / "bin" / "umlstate"
    print(f"""
{BOLD}The demo is up.{RESET} Try it by hand (paste the first two lines into a root shell):
  export UMLSTATE_TOPOLOGY={TOPOLOGY}
  alias umlstate='{exe} --netns {HOST_NS}'
  umlstate status                    # every resource and its state
  umlstate graph --format mermaid    # the topology as a picture
  umlstate console web               # the guest's shell on its tty1; Ctrl-] detaches
  umlstate stop web                  # mconsole cad; it stays down, even across applies
  umlstate start web
  ip netns exec {LAN_NS} ping 172.16.99.1
To take it all down (guest, switch, tap, group, namespaces, {WORK}):
  {BOLD}{ROOT}/scripts/demo --down{RESET}""")


def down() -> None:
    existing = run("ip", "netns", "list", show=False).stdout.split()
    if HOST_NS in existing and TOPOLOGY.exists():
        print("==> umlstate destroy: guest, switch, tap, proxy entries, group; sysctl and tun node restored")
        umlstate("destroy", str(TOPOLOGY), "--yes", check=False)
    for ns in (HOST_NS, LAN_NS):
        if ns in existing:
            # Anything still inside (destroy failed, or was never reached) is
            # the demo's own: the demo made these namespaces.
            for pid in run("ip", "netns", "pids", ns, show=False, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            run("ip", "netns", "del", ns)
    shutil.rmtree(WORK, ignore_errors=True)
    print("The demo is gone.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--down", action="store_true", help="tear the demo down")
    parser.add_argument("--bridge", action="store_true", help="use the bridge form even where uml_switch works")
    parser.add_argument("--debian", action="store_true", help="a stock Debian guest (scripts/build-debian-guest)")
    parser.add_argument("--kernel", default="linux.uml", metavar="PATH",
                        help="the UML kernel (e.g. the 7.2 one scripts/fetch-vector-kernel prints)")
    args = parser.parse_args()
    down() if args.down else up(args.kernel, args.bridge, args.debian)


if __name__ == "__main__":
    main()
