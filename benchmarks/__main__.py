"""umlstate's benchmark: side by side with ip -batch and a one-process-per-step script.

    python -m benchmarks [--sizes 10,100,1000] [--repeat 3] [--guests 1,2,4] [--out FILE] [--readme]

With --readme, the run is kept as benchmarks/figures.json and README.md's
Benchmark block is written from it (tests check that the two agree).

Everything happens in namespaces it makes (umlstate-test-bench-*) and removes,
also on failure; the root namespace is never touched. Contenders alternate
(A B A B ...) and medians are reported, since a shared machine is noisy.

Measured, for N taps each with an owner, an address, link up, and one proxy
entry per tap on a veth uplink:
  - `umlstate apply --yes` from an empty namespace (the whole process, as a user runs it), and
    `umlstate validate` of the same topology (what apply pays before any kernel work: Python's start, the
    imports, the YAML and its validation);
  - `ip -batch` doing the same operations (the practical limit), and `ip -batch` followed by `nft -j -f`
    of the policy umlstate renders for them (the kernel's own speed for the same end state);
  - a shell script with one `ip` process per step (what people write by hand);
  - in-sync `umlstate plan` on the converged namespace (the first, a full pass; the next, the quick
    pass cron gets) and in-sync apply, and `umlstate destroy`;
  - one `ip link del group` of N taps (what destroy is compared with);
  - peak memory (max RSS) of plan and apply;
and for a farm of k real guests: apply until every guest answers ping from a
LAN namespace, against booting the same guests one after the other; the same
from an empty host for the uml_switch form against the bridge form (on 6.1,
and on sid's vector-only 7.2 where scripts/fetch-vector-kernel can get it);
a farm of 12 guests on one bridge stretched over three hosts (namespaces on a
LAN bridge, each host applying its own slice) against the same on one host,
with the rollout's busiest host's own apply and the rollout of the farm once
it is in sync (the playbook's own cost, with nothing to change), one that
moves a guest with its disk to another host (until it answers again), and
the rollout again with the uplinks' proxy_delay at 0 (README: Troubleshooting);
watch mode's repair time for a deleted tap, a killed switch and a panicked
guest; the traffic policy's share of a 1000-tap apply, and TCP from the LAN
into a guest with the policy and with its tables deleted; and `umlstate stop`
of one guest and `destroy` of three, busybox guests and (--debian) Debian
ones, one whose init powers off on ctrl-alt-del and a stock one that reboots;
and Kathara's static-routing lab (two guest routers, a PC behind them, checks)
from empty until the apply returns, and until every check has passed.
"""

from __future__ import annotations

import argparse
import compileall
import functools
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from umlstate.guestimage import build
from umlstate.host import mconsole

PY = sys.executable
README = Path(__file__).resolve().parent.parent / "README.md"
FIGURES = Path(__file__).resolve().parent / "figures.json"  # the run README's block shows, kept in git
BEGIN = ("<!-- benchmark: begin. Written by `scripts/bench --readme` from benchmarks/figures.json "
         "(`python -m benchmarks --readme-only` writes it again): edit neither by hand. -->")
END = "<!-- benchmark: end -->"
DEBIAN_SETTLE = 15.0  # seconds a Debian guest is left to finish booting after it first answers
OWNER = 65534


def sh(*cmd: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, input=stdin)


@contextmanager
def namespace(prefix: str = "umlstate-test-bench-") -> Iterator[str]:
    name = prefix + secrets.token_hex(3)
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        for _ in range(2):
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.2)
        sh("ip", "netns", "del", name, check=False)


def timed(cmd: list[str]) -> tuple[float, int, int]:
    """Run a command; return (seconds, exit code, peak RSS in KiB of that process)."""
    # stderr to a file, not a pipe: nothing reads a pipe while wait4() waits, and
    # a 1000-tap apply logs more than a pipe holds.
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in (0, 2):
            err.seek(0)
            tail = err.read().decode(errors="replace")[-800:]
            raise SystemExit(f"benchmark: {' '.join(cmd[:6])}... exited {proc.returncode}:\n{tail}")
    return seconds, proc.returncode, usage.ru_maxrss


def taps_topology(n: int, folder: Path) -> Path:
    subnets = "\n".join(
        f"  - {{name: s{i}, cidr: 10.{i // 250}.{i % 250}.0/24, gateway: 10.{i // 250}.{i % 250}.1, "
        f"proxy_arp: {{uplink: eth0}}}}" for i in range(n))
    taps = "\n".join(f"  - {{name: t{i}, owner: nobody, subnet: s{i}}}" for i in range(n))
    guests = "\n".join(
        f"  - {{name: g{i}, user: nobody, mem: 64M, disk: {{image: /nonexistent}}, "
        f"nics: [{{tap: t{i}, address: 10.{i // 250}.{i % 250}.2}}]}}" for i in range(n))
    path = folder / f"taps-{n}.yaml"
    path.write_text(f"name: bench\nhost: {{run_dir: {folder}/run-{n}, state_dir: {folder}/state-{n}}}\n"
                    f"subnets:\n{subnets}\ntaps:\n{taps}\nguests:\n{guests}\n")
    return path


def hold_guests(topology: Path, ns: str, n: int) -> None:
    """The guests only give the proxy entries their addresses: hold them down, as `umlstate stop` does."""
    state = Path(str(topology).replace(f"taps-{n}.yaml", f"state-{n}"))
    state.mkdir(parents=True, exist_ok=True)
    (state / "state.json").write_text(json.dumps({"held": [f"g{i}" for i in range(n)]}))


def ip_batch_script(n: int) -> str:
    lines = []
    for i in range(n):
        net = f"10.{i // 250}.{i % 250}"
        lines += [f"tuntap add dev t{i} mode tap user {OWNER}", f"addr add {net}.1/24 dev t{i}",
                  f"link set t{i} up", f"neigh add proxy {net}.2 dev eth0"]
    return "\n".join(lines) + "\n"


def uplink(ns: str) -> None:
    sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")


def policy_document(topology: Path, folder: Path) -> Path:
    """The traffic policy umlstate loads for this topology, as a file for `nft -j -f`."""
    from umlstate.model.loader import load_file  # here: the rest of the bench runs umlstate as a program
    from umlstate.plan.ruleset import render

    rendered = render(load_file(str(topology)), {})
    assert rendered is not None, "bug: the taps topology has ports"
    path = folder / f"{topology.stem}.nft.json"
    path.write_text(rendered.document)
    return path


def bench_taps(n: int, repeat: int, folder: Path) -> dict[str, Any]:
    topology = taps_topology(n, folder)
    batch = folder / f"batch-{n}.txt"
    batch.write_text(ip_batch_script(n))
    policy = policy_document(topology, folder)
    script = folder / f"script-{n}.sh"
    script.write_text("set -e\n" + "".join(f"ip {line}\n" for line in ip_batch_script(n).splitlines()))
    raw: dict[str, list[float]] = {k: [] for k in ("umlstate_apply", "read", "ip_batch", "ip_batch_nft",
                                                  "shell_script", "full_plan",
                                                  "noop_plan", "noop_apply", "umlstate_destroy", "group_delete",
                                                  "apply_rss_kib", "plan_rss_kib")}
    umlstate = [PY, "-m", "umlstate"]
    for _ in range(repeat):
        # A: umlstate apply, no-op plan, destroy
        with namespace() as ns:
            uplink(ns)
            hold_guests(topology, ns, n)
            # What apply pays before any kernel work: Python's start, the imports, the YAML and its validation.
            raw["read"].append(timed([*umlstate, "validate", str(topology)])[0])
            seconds, _, rss = timed([*umlstate, "--netns", ns, "apply", str(topology), "--yes"])
            raw["umlstate_apply"].append(seconds)
            raw["apply_rss_kib"].append(rss)
            # The first in-sync plan is a full pass (it keeps what the next needs); cron's next ones are quick.
            seconds, code, rss = timed([*umlstate, "--netns", ns, "plan", str(topology), "--detailed-exitcode"])
            assert code == 0, "the no-op plan must be empty"
            raw["full_plan"].append(seconds)
            raw["plan_rss_kib"].append(rss)
            # Cron's next pass comes a minute later, when the kernel has settled the new links' operational state
            # (a second after they were made): the first quick pass here takes those bytes, untimed.
            assert timed([*umlstate, "--netns", ns, "plan", str(topology), "--detailed-exitcode"])[1] == 0
            seconds, code, _ = timed([*umlstate, "--netns", ns, "plan", str(topology), "--detailed-exitcode"])
            assert code == 0, "the no-op plan must be empty"
            raw["noop_plan"].append(seconds)
            assert timed([*umlstate, "--netns", ns, "apply", str(topology), "--yes"])[1] == 0
            seconds, code, _ = timed([*umlstate, "--netns", ns, "apply", str(topology), "--yes"])
            assert code == 0, "the in-sync apply must succeed"
            raw["noop_apply"].append(seconds)
            raw["umlstate_destroy"].append(timed([*umlstate, "--netns", ns, "destroy", str(topology), "--yes"])[0])
            shutil.rmtree(folder / f"state-{n}", ignore_errors=True)
        # B: ip -batch, then one delete by link group
        with namespace() as ns:
            uplink(ns)
            raw["ip_batch"].append(timed(["ip", "-n", ns, "-batch", str(batch)])[0])
            # Into one link group, untimed, to time the one delete that destroy is compared with.
            sh("ip", "-n", ns, "-batch", "-", stdin="".join(f"link set t{i} group 4242\n" for i in range(n)))
            raw["group_delete"].append(timed(["ip", "-n", ns, "link", "del", "group", "4242"])[0])
        # B': ip -batch, then the same policy umlstate loads, by nft
        with namespace() as ns:
            uplink(ns)
            raw["ip_batch_nft"].append(timed(["sh", "-c", f"ip -n {ns} -batch {batch} && "
                                                          f"ip netns exec {ns} nft -j -f {policy}"])[0])
        # C: the hand-written script
        with namespace() as ns:
            uplink(ns)
            raw["shell_script"].append(timed(["ip", "netns", "exec", ns, "sh", str(script)])[0])
    return {"n": n, "raw": raw, "median": {k: statistics.median(v) for k, v in raw.items()}}


FARM = """\
name: farm
host:
  run_dir: {folder}/run
  state_dir: {folder}/state
  tun: {{path: {folder}/dev/tun, mode: "0660", group: {group}}}
  groups: [{{name: {group}, members: [nobody]}}]
  sysctl: {{net.ipv4.ip_forward: 1}}
subnets:
  - {{name: guests, cidr: 172.16.99.0/24, gateway: 172.16.99.254, proxy_arp: {{uplink: eth0}}}}
{network}guests:
{guests}
"""
NETWORKS = {  # the seed's switch process on a tap, and the Linux bridge every kernel reaches
    "uml_switch": "taps: [{{name: uml0, owner: nobody, group: {group}, subnet: guests}}]\n"
                  "switches: [{{name: sw0, tap: uml0, user: nobody}}]\n",
    "bridge": "switches: [{{name: sw0, kind: bridge, subnet: guests}}]\n",
}


def farm_topology(k: int, folder: Path, image: Path, group: str, *, form: str = "uml_switch",
                  kernel: str = "linux.uml") -> Path:
    guests = "\n".join(f"  - {{name: g{i}, user: nobody, mem: 96M, kernel: {kernel}, disk: {{base: {image}}}, "
                       f"nics: [{{switch: sw0, address: 172.16.99.{i + 1}}}]}}" for i in range(k))
    path = folder / f"farm-{k}.yaml"
    path.write_text(FARM.format(folder=folder, group=group, guests=guests,
                                network=NETWORKS[form].format(group=group)))
    return path


def bench_forms(ks: list[int], repeat: int, folder: Path, image: Path, group: str) -> list[dict[str, Any]]:
    """From an empty host to every guest answering the LAN: uml_switch against bridge (6.1), bridge on 7.2."""
    kernels = {"debian-6.1": "linux.uml"}
    fetched = sh(str(Path(__file__).resolve().parent.parent / "scripts" / "fetch-vector-kernel"), check=False)
    if fetched.returncode == 0:
        kernels["sid-7.2"] = fetched.stdout.strip()
    contenders = [("uml_switch", "debian-6.1"), ("bridge", "debian-6.1")]
    contenders += [("bridge", "sid-7.2")] if "sid-7.2" in kernels else []
    found = []
    for k in ks:
        raw: dict[str, list[float]] = {f"{form} {kernel}": [] for form, kernel in contenders}
        addresses = [f"172.16.99.{i + 1}" for i in range(k)]
        for r in range(repeat):
            for form, kernel in contenders:
                run = folder / f"forms-{k}-{form}-{kernel}-{r}"
                run.mkdir()
                run.chmod(0o755)
                topology = farm_topology(k, run, image, group, form=form, kernel=kernels[kernel])
                with lan_pair() as (host, lan):
                    start = time.perf_counter()
                    timed([PY, "-m", "umlstate", "--netns", host, "apply", str(topology), "--yes"])
                    until_pings(lan, addresses)
                    raw[f"{form} {kernel}"].append(time.perf_counter() - start)
                    timed([PY, "-m", "umlstate", "--netns", host, "destroy", str(topology), "--yes"])
        found.append({"k": k, "raw": raw, "median": {m: statistics.median(v) for m, v in raw.items()}})
    return found


@contextmanager
def lan_pair() -> Iterator[tuple[str, str]]:
    with namespace() as host, namespace("umlstate-test-bench-lan-") as lan:
        sh("ip", "-n", host, "link", "add", "eth0", "type", "veth", "peer", "name", "lan0", "netns", lan)
        sh("ip", "-n", host, "addr", "add", "172.16.0.1/16", "dev", "eth0")
        sh("ip", "-n", host, "link", "set", "eth0", "up")
        sh("ip", "-n", lan, "addr", "add", "172.16.0.2/16", "dev", "lan0")
        sh("ip", "-n", lan, "link", "set", "lan0", "up")
        yield host, lan


def until_pings(lan: str, addresses: list[str], timeout: float = 60) -> None:
    """Until every address has answered a ping from the LAN, all asked at once: the host answers the LAN's
    first ARP request for a guest after a random delay of up to proxy_delay (0.8 s), so asking one address
    after another would add up those delays (about 5 s for 12 guests) and time the asking, not the farm."""
    deadline = time.monotonic() + timeout
    ip = shutil.which("ip") or "/usr/sbin/ip"
    waiting = list(addresses)
    while waiting:
        pings = {a: subprocess.Popen([ip, "netns", "exec", lan, "ping", "-c1", "-W0.2", a],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for a in waiting}
        waiting = [a for a, ping in pings.items() if ping.wait()]
        if waiting and time.monotonic() > deadline:
            raise SystemExit(f"benchmark: {', '.join(waiting)} did not answer within {timeout}s")


def bench_farm(k: int, repeat: int, folder: Path, image: Path, group: str) -> dict[str, Any]:
    raw: dict[str, list[float]] = {"parallel_apply": [], "one_after_another": []}
    addresses = [f"172.16.99.{i + 1}" for i in range(k)]
    for r in range(repeat):
        for mode in ("parallel_apply", "one_after_another"):
            run = folder / f"farm-{k}-{mode}-{r}"
            run.mkdir()
            run.chmod(0o755)
            with lan_pair() as (host, lan):
                start = time.perf_counter()
                if mode == "parallel_apply":
                    timed([PY, "-m", "umlstate", "--netns", host, "apply", str(farm_topology(k, run, image, group)),
                           "--yes"])
                    until_pings(lan, addresses)
                else:
                    for j in range(1, k + 1):  # one more guest per run, each waited for before the next
                        timed([PY, "-m", "umlstate", "--netns", host, "apply",
                               str(farm_topology(j, run, image, group)), "--yes"])
                        until_pings(lan, addresses[:j])
                raw[mode].append(time.perf_counter() - start)
                timed([PY, "-m", "umlstate", "--netns", host, "destroy", str(farm_topology(k, run, image, group)),
                       "--yes"])
    return {"k": k, "raw": raw, "median": {m: statistics.median(v) for m, v in raw.items()}}


LAB = """\
name: benchlab
host:
  run_dir: {folder}/run
  state_dir: {folder}/state
  tun: {{path: {folder}/dev/tun, mode: "0660", group: {group}}}
  groups: [{{name: {group}, members: [nobody]}}]
  sysctl: {{net.ipv4.ip_forward: 1}}
  routes: [{{to: 10.0.34.0/24, via: 10.0.1.1}}]
subnets:
  - {{name: a, cidr: 10.0.1.0/24, gateway: 10.0.1.254}}
  - {{name: core, cidr: 10.0.12.0/30}}
  - {{name: b, cidr: 10.0.34.0/24}}
switches:
  - {{name: bra, kind: bridge, subnet: a}}
  - {{name: brc, kind: bridge, subnet: core}}
  - {{name: brb, kind: bridge, subnet: b}}
guests:
  - name: r1
    user: nobody
    mem: 96M
    disk: {{base: {image}}}
    sysctl: {{net.ipv4.ip_forward: 1}}
    routes: [{{to: 10.0.34.0/24, via: 10.0.12.2}}]
    nics:
      - {{switch: bra, address: 10.0.1.1, allow_sources: [10.0.12.0/30, 10.0.34.0/24]}}
      - {{switch: brc, address: 10.0.12.1, allow_sources: [172.16.0.0/16, 10.0.1.0/24]}}
  - name: r2
    user: nobody
    mem: 96M
    disk: {{base: {image}}}
    sysctl: {{net.ipv4.ip_forward: 1}}
    routes: [{{to: default, via: 10.0.12.1}}]
    nics:
      - {{switch: brc, address: 10.0.12.2, allow_sources: [10.0.34.0/24]}}
      - {{switch: brb, address: 10.0.34.1, allow_sources: [172.16.0.0/16, 10.0.1.0/24, 10.0.12.0/30]}}
  - name: pc
    user: nobody
    mem: 96M
    disk: {{base: {image}}}
    routes: [{{to: default, via: 10.0.34.1}}]
    nics: [{{switch: brb, address: 10.0.34.2}}]
checks:
  - {{from: pc, ping: r1}}
  - {{from: pc, ping: 10.0.1.254}}
  - {{from: r1, ping: pc}}
"""


def bench_lab(repeat: int, folder: Path, image: Path, group: str) -> dict[str, Any]:
    """The static-routing lab from empty: until apply returns, and until status shows every check passed."""
    raw: dict[str, list[float]] = {"apply": [], "checks_passed": []}
    for r in range(repeat):
        run = folder / f"lab-{r}"
        run.mkdir()
        run.chmod(0o755)
        topology = run / "lab.yaml"
        topology.write_text(LAB.format(folder=run, group=group, image=image))
        with lan_pair() as (host, _lan):
            cli = [PY, "-m", "umlstate", "--netns", host]
            start = time.perf_counter()
            timed([*cli, "apply", str(topology), "--yes"])
            raw["apply"].append(time.perf_counter() - start)
            deadline = time.monotonic() + 120
            while True:
                rows = json.loads(sh(*cli, "status", "--json", str(topology), check=False).stdout)["resources"]
                states = [row["state"] for row in rows if row["kind"] == "check"]
                if len(states) == 3 and all(state == "ok" for state in states):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"benchmark: the lab's checks did not all pass within 120 s: {states}")
                time.sleep(0.1)
            raw["checks_passed"].append(time.perf_counter() - start)
            timed([*cli, "destroy", str(topology), "--yes"])
    return {"raw": raw, "median": {m: statistics.median(v) for m, v in raw.items()}}


def policy_seconds(json_log: str) -> float:
    """How long the policy's load took in an apply logged as JSON: from the action event before it to its own."""
    stamps = [(e.get("kind"), datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp())
              for line in json_log.splitlines() if line.startswith("{")
              for e in [json.loads(line)] if e.get("event") == "action"]
    at = next(i for i, (kind, _) in enumerate(stamps) if kind == "ruleset")
    return stamps[at][1] - stamps[at - 1][1]


def policy_share(n: int, folder: Path) -> dict[str, float]:
    """One apply of n taps with JSON logs: the whole command, and the traffic policy's own load (from the
    timestamps of its action event and the one before it): the apply without it is the difference."""
    topology = taps_topology(n, folder)
    with namespace() as ns:
        uplink(ns)
        hold_guests(topology, ns, n)
        start = time.perf_counter()
        done = sh(PY, "-m", "umlstate", "--netns", ns, "--log-format", "json", "apply", str(topology), "--yes")
        seconds = time.perf_counter() - start
        policy = policy_seconds(done.stderr)
        sh(PY, "-m", "umlstate", "--netns", ns, "destroy", str(topology), "--yes")
    shutil.rmtree(folder / f"state-{n}", ignore_errors=True)
    return {"apply": seconds, "policy": policy, "without_policy": seconds - policy}


SENDER = """
import socket, sys, time
data = bytes(1 << 16)
total = int(sys.argv[2])
deadline = time.monotonic() + 20
while True:  # the guest's busybox nc listens again a moment after each connection ends
    try:
        s = socket.create_connection((sys.argv[1], 5001), timeout=30)
        break
    except ConnectionRefusedError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
start = time.perf_counter()
with s:
    for _ in range(total // len(data)):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)  # the guest's nc closes once it has read everything
print(total / (time.perf_counter() - start) / 1e6)
"""


def bench_policy(repeat: int, folder: Path, image: Path, group: str) -> dict[str, Any]:
    """The traffic policy's cost: its share of a 1000-tap apply; TCP from the LAN into a guest behind uml_switch,
    through the policy and with its tables deleted (the same guest, alternating)."""
    raw: dict[str, list[float]] = {"apply_1000": [], "policy_1000": [], "without_policy_1000": [],
                                   "answering_4": [], "answering_4_policy": [], "answering_4_without_policy": [],
                                   "tcp_with_policy_mbs": [], "tcp_without_policy_mbs": []}
    for r in range(repeat):
        share = policy_share(1000, folder)
        for key in ("apply", "policy", "without_policy"):
            raw[f"{key}_1000"].append(share[key])
        run = folder / f"policy-farm-{r}"  # 4 guests on a bridge (each its own port), empty to all answering
        run.mkdir()
        run.chmod(0o755)
        path = farm_topology(4, run, image, group, form="bridge")
        with lan_pair() as (host, lan):
            start = time.perf_counter()
            done = sh(PY, "-m", "umlstate", "--netns", host, "--log-format", "json", "apply", str(path), "--yes")
            until_pings(lan, [f"172.16.99.{i + 1}" for i in range(4)])
            seconds = time.perf_counter() - start
            policy = policy_seconds(done.stderr)
            raw["answering_4"].append(seconds)
            raw["answering_4_policy"].append(policy)
            raw["answering_4_without_policy"].append(seconds - policy)
            sh(PY, "-m", "umlstate", "--netns", host, "destroy", str(path), "--yes")
    run = folder / "policy-tcp"
    run.mkdir()
    run.chmod(0o755)
    path = farm_topology(1, run, image, group)  # uml_switch: the vector tap drops GRO-merged frames (see README)
    path.write_text(path.read_text().replace(", nics:", ", args: [umlstate.sink=5001], nics:", 1))
    with lan_pair() as (host, lan):
        sh(PY, "-m", "umlstate", "--netns", host, "apply", str(path), "--yes")
        until_pings(lan, ["172.16.99.1"])
        table_name = "umlstate-farm"
        for _ in range(repeat):
            for with_policy in (True, False):
                if not with_policy:
                    for family in ("netdev", "inet"):
                        sh("ip", "netns", "exec", host, "nft", "delete", "table", family, table_name, check=False)
                sent = sh("ip", "netns", "exec", lan, "python3", "-c", SENDER, "172.16.99.1", str(64 << 20),
                          check=False)
                if sent.returncode:
                    raise SystemExit(f"benchmark: TCP into the guest failed: {sent.stderr.strip()[-300:]}")
                raw["tcp_with_policy_mbs" if with_policy else "tcp_without_policy_mbs"].append(float(sent.stdout))
                if not with_policy:
                    sh(PY, "-m", "umlstate", "--netns", host, "apply", str(path), "--yes")  # loads it again
        sh(PY, "-m", "umlstate", "--netns", host, "destroy", str(path), "--yes")
    return {"raw": raw, "median": {k: statistics.median(v) for k, v in raw.items()}}


HOSTS = {"alpha": "172.16.0.11", "beta": "172.16.0.12", "gamma": "172.16.0.13"}
PLAYBOOK = Path(__file__).resolve().parent.parent / "contrib" / "ansible" / "site.yml"


def hosts_topology(k: int, folder: Path, image: Path, group: str, *, spread: bool, arp_at_once: bool = False) -> Path:
    """k guests on one stretched bridge: spread over three hosts, or all on alpha; ``arp_at_once``: with the
    uplinks' proxy_delay at 0, as README's Troubleshooting offers (the kernel's default answers the LAN's first
    ARP request for a guest after a random delay of up to 0.8 s)."""
    sysctl = "{net.ipv4.ip_forward: 1" + (", net.ipv4.neigh.eth0.proxy_delay: 0}" if arp_at_once else "}")
    names = list(HOSTS)
    hosts = "".join(f"  - {{name: {h}, underlay: {a}, run_dir: {folder}/{h}/run, state_dir: {folder}/{h}/state}}\n"
                    for h, a in HOSTS.items())
    guests = "\n".join(f"  - {{name: g{i}, user: nobody, mem: 96M, host: {names[i % 3] if spread else 'alpha'}, "
                       f"disk: {{base: {image}}}, nics: [{{switch: br0, address: 172.16.99.{i + 1}}}]}}"
                       for i in range(k))
    path = folder / f"hosts-{k}.yaml"
    path.write_text(f"""name: farm
host:
  tun: {{path: {folder}/dev/tun, mode: "0660", group: {group}}}
  groups: [{{name: {group}, members: [nobody]}}]
  sysctl: {sysctl}
hosts:
{hosts}subnets:
  - {{name: guests, cidr: 172.16.99.0/24, gateway: 172.16.99.254, proxy_arp: {{uplink: eth0}}}}
switches:
  - {{name: br0, kind: bridge, subnet: guests}}
guests:
{guests}
""")
    return path


@contextmanager
def three_hosts() -> Iterator[tuple[dict[str, str], str]]:
    """Three host namespaces on one LAN (a bridge in a LAN namespace)."""
    with namespace("umlstate-test-bench-lan-") as lan, namespace() as alpha, namespace() as beta, \
            namespace() as gamma:
        sh("ip", "-n", lan, "link", "add", "lanbr", "type", "bridge")
        sh("ip", "-n", lan, "addr", "add", "172.16.0.2/16", "dev", "lanbr")
        sh("ip", "-n", lan, "link", "set", "lanbr", "up")
        hosts = {"alpha": alpha, "beta": beta, "gamma": gamma}
        for i, (name, ns) in enumerate(hosts.items()):
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"port{i}", "netns", lan)
            sh("ip", "-n", ns, "addr", "add", f"{HOSTS[name]}/16", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", lan, "link", "set", f"port{i}", "master", "lanbr", "up")
        yield hosts, lan


def timing_wrapper(folder: Path, calls: Path) -> Path:
    """umlstate, as the playbook calls it, noting each call's start, end and words in ``calls``; the code
    beside this bench (not the venv's console script, which may be another checkout's)."""
    wrapper = folder / "umlstate-timed"
    wrapper.write_text(f"""#!/bin/sh
start=$(date +%s.%N)
PYTHONPATH={Path(__file__).resolve().parent.parent} {PY} -m umlstate "$@"
code=$?
echo "$start $(date +%s.%N) $*" >> {calls}
exit $code
""")
    wrapper.chmod(0o755)
    return wrapper


def busiest_apply(calls: Path) -> float:
    """The longest time one host spent in its own umlstate apply calls during the rollout."""
    per_host: dict[str, float] = {}
    for line in calls.read_text().splitlines():
        start, end, *words = line.split()
        if "apply" in words and "--host" in words:
            host = words[words.index("--host") + 1]
            per_host[host] = per_host.get(host, 0.0) + float(end) - float(start)
    return max(per_host.values(), default=float("nan"))


def bench_hosts(k: int, repeat: int, folder: Path, image: Path, group: str) -> dict[str, Any]:
    """From empty to all k guests answering the LAN: spread over three hosts, rolled out by the playbook
    (contrib/ansible, where ansible-core is installed; else each host applies its slice, in parallel),
    against the same farm applied on one host; then the same rollout again (in sync), and one that moves a guest
    with its disk; and the rollout from empty with the uplinks answering ARP at once."""
    raw: dict[str, list[float]] = {"three_hosts": [], "one_host": [], "busiest_host": [], "in_sync_rollout": [],
                                   "move_rollout": [], "move_until_answering": [],
                                   "three_hosts_arp_at_once": [], "busiest_host_arp_at_once": []}
    addresses = [f"172.16.99.{i + 1}" for i in range(k)]
    for r in range(repeat):
        for mode in ("three_hosts", "one_host", "three_hosts_arp_at_once"):
            run = folder / f"hosts-{k}-{mode}-{r}"
            run.mkdir()
            run.chmod(0o755)
            spread, arp_at_once = mode != "one_host", mode.endswith("arp_at_once")
            topology = hosts_topology(k, run, image, group, spread=spread, arp_at_once=arp_at_once)
            with three_hosts() as (hosts, lan):
                used = hosts if spread else {"alpha": hosts["alpha"]}
                start = time.perf_counter()
                if spread and PLAYBOOK.exists():  # the rollout as shipped: contrib/ansible
                    inventory = run / "inventory.ini"
                    calls = run / "calls.txt"
                    inventory.write_text("[umlstate]\n" + "".join(
                        f"{name} umlstate_host={name} umlstate_netns={ns} "
                        f"umlstate_topology_path={run}/{name}/topology.yaml\n" for name, ns in used.items())
                        + f"[umlstate:vars]\nansible_connection=local\nansible_python_interpreter={PY}\n"
                        f"umlstate_bin={timing_wrapper(run, calls)}\n")
                    playbook = [str(Path(PY).parent / "ansible-playbook"), "-i", str(inventory), str(PLAYBOOK),
                                "-e", f"umlstate_topology={topology}"]
                    if timed(playbook)[1]:
                        raise SystemExit(f"benchmark: the rollout of the {mode} farm failed")
                    raw["busiest_host_arp_at_once" if arp_at_once else "busiest_host"].append(busiest_apply(calls))
                else:
                    applies = [subprocess.Popen([PY, "-m", "umlstate", "--netns", ns, "--host", name, "apply",
                                                 str(topology), "--yes"], stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL) for name, ns in used.items()]
                    if any(a.wait() for a in applies):
                        raise SystemExit(f"benchmark: an apply of the {mode} farm failed")
                until_pings(lan, addresses, timeout=180)
                raw[mode].append(time.perf_counter() - start)
                if mode == "three_hosts" and PLAYBOOK.exists():  # again, in sync: the playbook's own cost
                    seconds, code, _ = timed(playbook)
                    if code:
                        raise SystemExit("benchmark: the rollout of the in-sync farm failed")
                    raw["in_sync_rollout"].append(seconds)
                    # One guest moves, with its disk: g1 from beta to gamma, until it answers the LAN again.
                    placed = "name: g1, user: nobody, mem: 96M, host: beta"
                    assert placed in topology.read_text(), "bug: the farm's g1 is on beta"
                    topology.write_text(topology.read_text().replace(placed, placed.replace("beta", "gamma")))
                    start = time.perf_counter()
                    seconds, code, _ = timed(playbook)
                    if code:
                        raise SystemExit("benchmark: the rollout that moves g1 failed")
                    until_pings(lan, [addresses[1]], timeout=60)
                    raw["move_rollout"].append(seconds)
                    raw["move_until_answering"].append(time.perf_counter() - start)
                for name, ns in used.items():
                    timed([PY, "-m", "umlstate", "--netns", ns, "--host", name, "destroy", str(topology), "--yes"])
    return {"k": k, "raw": raw, "median": {m: statistics.median(v) for m, v in raw.items() if v}}


def bench_watch(repeat: int, folder: Path, image: Path, group: str) -> dict[str, Any]:
    raw: dict[str, list[float]] = {"deleted_tap": [], "killed_switch": [], "panicked_guest": []}
    run = folder / "watch"
    run.mkdir()
    run.chmod(0o755)
    with lan_pair() as (host, _lan):
        topology = farm_topology(1, run, image, group)
        timed([PY, "-m", "umlstate", "--netns", host, "apply", str(topology), "--yes"])
        watcher = subprocess.Popen([PY, "-m", "umlstate", "--netns", host, "watch", str(topology)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(2)
            records = run / "state" / "state.json"
            for _ in range(repeat):
                sh("ip", "-n", host, "link", "del", "uml0")
                start = time.perf_counter()
                while "uml0" not in sh("ip", "-n", host, "link", "show").stdout:
                    time.sleep(0.005)
                raw["deleted_tap"].append(time.perf_counter() - start)
                time.sleep(3)  # let the pass that follows settle (switch and guest reconnect)
                old = _pid(records, "switch-sw0")
                os.kill(old, signal.SIGKILL)
                start = time.perf_counter()
                while _pid(records, "switch-sw0", default=old) == old:
                    time.sleep(0.005)
                raw["killed_switch"].append(time.perf_counter() - start)
                time.sleep(3)
                raw["panicked_guest"].append(_panic_and_restart(run, "g0"))
                time.sleep(3)
        finally:
            watcher.terminate()
            watcher.wait(10)
        timed([PY, "-m", "umlstate", "--netns", host, "destroy", str(topology), "--yes"])
    return {"raw": raw, "median": {m: statistics.median(v) for m, v in raw.items()}}


def _panic_and_restart(run: Path, guest: str) -> float:
    """Panic a guest (mconsole sysrq c); seconds from the end of its process to the new one answering mconsole."""
    records = run / "state" / "state.json"
    socket = str(run / "run" / "users" / "nobody" / "uml" / guest / "mconsole")
    old = _pid(records, f"guest-{guest}")
    with suppress(mconsole.MconsoleError):
        mconsole.command(socket, "sysrq c", owner=OWNER, timeout=1)
    while psutil.pid_exists(old) and psutil.Process(old).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.005)
    start = time.perf_counter()
    while _pid(records, f"guest-{guest}", default=old) == old or not mconsole.answers(socket, owner=OWNER):
        if time.perf_counter() - start > 60:
            raise SystemExit(f"benchmark: watch did not restart the panicked guest {guest} within 60s")
        time.sleep(0.005)
    return time.perf_counter() - start


def _pid(records: Path, unit: str, default: int = 0) -> int:
    """A process's pid as umlstate recorded it when it started it (its records are root's)."""
    try:
        return int(json.loads(records.read_text())["processes"][unit]["pid"])
    except (OSError, ValueError, KeyError):
        return default


def bench_stops(repeat: int, folder: Path, image: Path, group: str, debian: bool) -> dict[str, Any]:
    """`umlstate stop` of one guest and `destroy` of three: busybox, and Debian (built and --stock) with --debian."""
    raw: dict[str, list[float]] = {}
    farms: list[tuple[str, Callable[[Path], Path], list[str], list[str]]] = [
        ("busybox", lambda run: farm_topology(3, run, image, group), ["g0"], ["172.16.99.1"])]
    if debian:
        script = Path(__file__).resolve().parent.parent / "scripts" / "build-debian-guest"
        built, stock = sh(str(script), check=False), sh(str(script), "--stock", check=False)
        if built.returncode or stock.returncode:
            raise SystemExit(f"benchmark: no Debian images: {(built.stderr + stock.stderr).strip()[-300:]}")
        images = {"d0": built.stdout.strip(), "d1": stock.stdout.strip(), "d2": stock.stdout.strip()}

        def debian_topology(run: Path) -> Path:
            guests = "\n".join(f"  - {{name: {name}, user: nobody, mem: 256M, disk: {{base: {path}}}, "
                               f"nics: [{{switch: sw0, address: 172.16.99.{i + 1}}}]}}"
                               for i, (name, path) in enumerate(images.items()))
            path = run / "debian.yaml"
            path.write_text(FARM.format(folder=run, group=group, guests=guests,
                                        network=NETWORKS["bridge"].format(group=group)))
            return path
        farms.append(("debian", debian_topology, ["d0", "d1"], ["172.16.99.1", "172.16.99.2", "172.16.99.3"]))
    # systemd still runs boot jobs when a guest first answers, and finishes them before it powers off: a stop
    # then takes 10 s, not 3 (measured). Stops are measured on settled guests.
    settle = {"busybox": 0.0, "debian": DEBIAN_SETTLE}
    for r in range(repeat):
        for kind, make, stopped, addresses in farms:
            run = folder / f"stops-{kind}-{r}"
            run.mkdir()
            run.chmod(0o755)
            topology = make(run)
            with lan_pair() as (host, lan):
                umlstate = [PY, "-m", "umlstate", "--netns", host]
                timed([*umlstate, "apply", str(topology), "--yes"])
                until_pings(lan, addresses, timeout=120)
                time.sleep(settle[kind])
                for guest in stopped:
                    label = {"g0": "busybox stop", "d0": "Debian stop (poweroff image)",
                             "d1": "Debian stop (stock: reboots)"}[guest]
                    raw.setdefault(label, []).append(timed([*umlstate, "stop", str(topology), guest])[0])
                    timed([*umlstate, "start", str(topology), guest])
                    time.sleep(settle[kind])
                until_pings(lan, addresses, timeout=120)
                raw.setdefault(f"{kind} destroy of 3", []).append(
                    timed([*umlstate, "destroy", str(topology), "--yes"])[0])
    return {"raw": raw, "median": {m: statistics.median(v) for m, v in raw.items()}}


def table(results: dict[str, Any]) -> str:
    out = ["| N taps | umlstate apply | of it, reading the topology | ip -batch | ratio | "
           "ip -batch + nft -f (policy) | ratio | the rest of apply / ip -batch + nft -f | "
           "script (1 ip/step) | in-sync plan, full | "
           "in-sync plan | in-sync apply | destroy | group delete | ratio | apply RSS | plan RSS |", "|" + "---|" * 17]
    for r in results["taps"]:
        m = r["median"]
        read = m.get("read", float("nan"))  # results stored before the figure was taken have none
        out.append(f"| {r['n']} | {m['umlstate_apply']:.3f} s | {read:.3f} s | {m['ip_batch']:.3f} s | "
                   f"{m['umlstate_apply'] / m['ip_batch']:.1f}x | {m['ip_batch_nft']:.3f} s | "
                   f"{m['umlstate_apply'] / m['ip_batch_nft']:.1f}x | "
                   f"{(m['umlstate_apply'] - read) / m['ip_batch_nft']:.1f}x | {m['shell_script']:.2f} s | "
                   f"{m['full_plan']:.3f} s | {m['noop_plan']:.3f} s | {m['noop_apply']:.3f} s | "
                   f"{m['umlstate_destroy']:.3f} s | "
                   f"{m['group_delete']:.3f} s | "
                   f"{m['umlstate_destroy'] / m['group_delete']:.1f}x | {m['apply_rss_kib'] / 1024:.0f} MB | "
                   f"{m['plan_rss_kib'] / 1024:.0f} MB |")
    taps = {r["n"]: r["median"] for r in results["taps"]}
    if 10 in taps and 1000 in taps:
        out.append(f"\nin-sync plan at N=1000 / N=10: {taps[1000]['noop_plan'] / taps[10]['noop_plan']:.2f}x "
                   "(the quick pass: everything the last full pass read, read again and found the same)")
    if results.get("farm"):
        out += ["", "| guests | umlstate apply, all ping | one after another | ratio to 1 guest |", "|---|---|---|---|"]
        one = results["farm"][0]["median"]["parallel_apply"]
        for r in results["farm"]:
            m = r["median"]
            out.append(f"| {r['k']} | {m['parallel_apply']:.2f} s | {m['one_after_another']:.2f} s | "
                       f"{m['parallel_apply'] / one:.2f}x |")
    if results.get("forms"):
        names = list(results["forms"][0]["median"])
        out += ["", "| guests | " + " | ".join(f"{n}: empty to all answering" for n in names) + " |",
                "|---|" + "---|" * len(names)]
        for r in results["forms"]:
            out.append(f"| {r['k']} | " + " | ".join(f"{r['median'][n]:.2f} s" for n in names) + " |")
    if results.get("hosts"):
        m = results["hosts"]["median"]
        out.append(f"\n{results['hosts']['k']} guests, empty to all answering: three hosts {m['three_hosts']:.2f} s, "
                   f"one host {m['one_host']:.2f} s (three hosts / one: {m['three_hosts'] / m['one_host']:.2f}x)")
        raw = results["hosts"].get("raw", {})
        if "busiest_host" in m:
            out.append(f"the busiest host's own apply calls in that rollout: {m['busiest_host']:.2f} s "
                       f"(rollout / busiest host: {_per_run(raw, 'three_hosts', 'busiest_host', m)})")
        if "in_sync_rollout" in m:
            out.append(f"the same rollout once the farm is in sync (the playbook's own cost): "
                       f"{m['in_sync_rollout']:.2f} s")
        if "move_rollout" in m:
            out.append(f"one guest moved to another host with its disk: rollout {m['move_rollout']:.2f} s, "
                       f"until it answers the LAN again {m['move_until_answering']:.2f} s")
        if "busiest_host_arp_at_once" in m:
            out.append(f"with the uplinks' proxy_delay at 0 (README: Troubleshooting): the rollout "
                       f"{m['three_hosts_arp_at_once']:.2f} s, its busiest host's apply calls "
                       f"{m['busiest_host_arp_at_once']:.2f} s "
                       f"({_per_run(raw, 'three_hosts_arp_at_once', 'busiest_host_arp_at_once', m)})")
    if results.get("watch"):
        w = results["watch"]["median"]
        out.append(f"\nwatch repair: deleted tap {w['deleted_tap']:.2f} s, killed switch {w['killed_switch']:.2f} s, "
                   f"panicked guest (its end to the new one answering mconsole) {w['panicked_guest']:.2f} s")
    if results.get("lab"):
        m = results["lab"]["median"]
        out.append(f"\nstatic-routing lab (2 routers, a PC, 3 checks), from empty: apply {m['apply']:.2f} s, "
                   f"every check passed {m['checks_passed']:.2f} s")
    if results.get("policy"):
        m = results["policy"]["median"]
        out.append(f"\ntraffic policy: apply of 1000 taps {m['apply_1000']:.2f} s, of which loading the policy "
                   f"{m['policy_1000']:.2f} s (without it: {m['without_policy_1000']:.2f} s); 4 guests on a bridge, "
                   f"empty to all answering {m['answering_4']:.2f} s, of which loading the policy "
                   f"{m['answering_4_policy']:.3f} s (without it: {m['answering_4_without_policy']:.2f} s); "
                   "TCP from the LAN into "
                   f"a guest {m['tcp_with_policy_mbs']:.0f} MB/s with the policy, "
                   f"{m['tcp_without_policy_mbs']:.0f} MB/s without")
    if results.get("stops"):
        out += ["", "| stop or destroy (the whole command) | seconds |", "|---|---|"]
        out += [f"| {what} | {seconds:.2f} s |" for what, seconds in results["stops"]["median"].items()]
    return "\n".join(out)


def _per_run(raw: dict[str, list[float]], rollout: str, busiest: str, median: dict[str, float]) -> str:
    """A rollout against its own busiest host, run by run (the target's measure), as their median and range;
    the ratio of the two medians where a stored run has no raw figures."""
    ratios = [a / b for a, b in zip(raw.get(rollout, []), raw.get(busiest, []), strict=True)]
    if not ratios:
        return f"{median[rollout] / median[busiest]:.2f}x"
    spread = f", runs {min(ratios):.2f}x to {max(ratios):.2f}x" if len(ratios) > 1 else ""
    return f"{statistics.median(ratios):.2f}x, the median of each run's own{spread}"


def readme_block(results: dict[str, Any]) -> str:
    """README's Benchmark block: what the run was, then the table it printed, its sentences as a list."""
    run, m = results.get("run") or {}, results["machine"]
    command = " ".join(["scripts/bench", *run.get("argv", [])])
    head = (f"The latest run, `{command}` ({run.get('date', 'undated')}, {m['cpus']} CPUs, "
            f"{m['memory_gib']} GiB, kernel {m['kernel']}, Python {m['python']}; medians of "
            f"{run.get('repeat', '?')}), as it printed it; its raw figures are `benchmarks/figures.json`:")
    lines = [line if not line or line.startswith("|") else f"- {line}" for line in table(results).splitlines()]
    return "\n".join([BEGIN, "", head, "", *lines, "", END])


def with_figures(readme: str, results: dict[str, Any]) -> str:
    """README's text with its Benchmark block written from ``results``; the rest as it was."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"benchmark: {README} has no block between {BEGIN!r} and {END!r}")
    return readme[:start] + readme_block(results) + readme[end + len(END):]


def write_readme(results: dict[str, Any]) -> None:
    """Keep ``results`` as benchmarks/figures.json and write README's block from them. A run with a failed
    section is not written: the block would show a table with holes as the latest figures."""
    if results.get("errors"):
        raise SystemExit("benchmark: README.md is left as it was: a section failed")
    FIGURES.write_text(json.dumps(results, indent=1) + "\n")
    README.write_text(with_figures(README.read_text(), results))
    print(f"README.md's Benchmark block and {FIGURES} written", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--guests", default="1,2,4", help="farm sizes; empty to skip")
    parser.add_argument("--forms", default="1,8", help="guests per farm for uml_switch against bridge; empty to skip")
    parser.add_argument("--hosts", type=int, default=12, help="guests of the three-host farm; 0 to skip")
    parser.add_argument("--no-watch", action="store_true")
    parser.add_argument("--no-stops", action="store_true")
    parser.add_argument("--no-policy", action="store_true", help="skip the traffic policy's cost")
    parser.add_argument("--no-lab", action="store_true", help="skip the static-routing lab")
    parser.add_argument("--debian", action="store_true", help="stops of Debian guests too (scripts/build-debian-guest)")
    parser.add_argument("--out", default="benchmarks/results/latest.json")
    parser.add_argument("--readme", action="store_true",
                        help="then keep this run as benchmarks/figures.json and write README.md's Benchmark block")
    parser.add_argument("--readme-only", action="store_true",
                        help="run nothing: write README.md's Benchmark block again from benchmarks/figures.json")
    args = parser.parse_args()
    if args.readme_only:  # the stored run, written back as it was read
        write_readme(json.loads(FIGURES.read_text()))
        return
    if os.geteuid() != 0:
        raise SystemExit("benchmark: run as root (it makes network namespaces)")
    # Byte code written first, as an install leaves it: with PYTHONDONTWRITEBYTECODE set, every timed command
    # would compile each module changed since its last .pyc again (~40 ms).
    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "umlstate"), quiet=1)
    folder = Path(tempfile.mkdtemp(prefix="umlstate-bench-", dir="/tmp"))
    folder.chmod(0o755)
    group = "umlbench" + secrets.token_hex(2)
    try:
        results: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
            "run": {"date": datetime.now().astimezone().strftime("%Y-%m-%d"), "repeat": args.repeat,
                    "argv": [a for a in sys.argv[1:] if a != "--readme"]},
            "taps": [], "farm": [], "forms": [], "hosts": None, "watch": None, "stops": None, "policy": None,
            "lab": None,
        }
        step: Callable[[str], None] = lambda text: print(f"-- {text}", file=sys.stderr, flush=True)  # noqa: E731
        results["errors"] = []

        def section(name: str, run: Callable[[], Any]) -> Any:
            """A failed section is reported, with the guests' logs kept, and the others still run."""
            step(name)
            try:
                return run()
            except SystemExit as exc:
                kept = Path(args.out).parent / "failure-logs" / name.replace(" ", "-")
                for log in folder.glob("**/logs/*.log"):
                    target = kept / log.relative_to(folder)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(log, target)
                results["errors"].append({"section": name, "error": str(exc), "logs": str(kept)})
                print(f"benchmark: {name} failed (logs kept in {kept}): {exc}", file=sys.stderr)
                return None

        for n in [int(x) for x in args.sizes.split(",") if x]:
            found = section(f"{n} taps x {args.repeat}", functools.partial(bench_taps, n, args.repeat, folder))
            if found:
                results["taps"].append(found)
        if args.guests or args.forms or args.hosts or not args.no_watch or not args.no_stops or not args.no_policy \
                or not args.no_lab:
            image = build(folder / "base.img")
            for k in [int(x) for x in args.guests.split(",") if x]:
                found = section(f"farm of {k} guests x {args.repeat}",
                                functools.partial(bench_farm, k, args.repeat, folder, image, group))
                if found:
                    results["farm"].append(found)
            ks = [int(x) for x in args.forms.split(",") if x]
            if ks:
                results["forms"] = section(f"uml_switch and bridge, {args.forms} guests x {args.repeat}",
                                           lambda: bench_forms(ks, args.repeat, folder, image, group)) or []
            if args.hosts:
                results["hosts"] = section(f"{args.hosts} guests on three hosts and on one",
                                           lambda: bench_hosts(args.hosts, args.repeat, folder, image, group))
            if not args.no_watch:
                results["watch"] = section("watch repair", lambda: bench_watch(args.repeat, folder, image, group))
            if not args.no_lab:
                results["lab"] = section("static-routing lab", lambda: bench_lab(args.repeat, folder, image, group))
            if not args.no_policy:
                results["policy"] = section("traffic policy", lambda: bench_policy(args.repeat, folder, image, group))
            if not args.no_stops:
                results["stops"] = section("stops", lambda: bench_stops(args.repeat, folder, image, group,
                                                                        args.debian))
        print(table(results))
        for error in results["errors"]:
            print(f"\nFAILED: {error['section']}: {error['error'][:300]} (logs: {error['logs']})")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"\nraw figures: {out}", file=sys.stderr)
        if args.readme:
            write_readme(results)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        sh("groupdel", group, check=False)


if __name__ == "__main__":
    main()
