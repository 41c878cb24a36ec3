"""What operators and scripts read: graph output and status --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, Netns, needs_root, umlstate

EXAMPLE = ROOT / "topology.example.yaml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "umlstate", *args], capture_output=True, text=True, check=False)


def test_dot_output_renders_with_graphviz() -> None:
    dot = run("graph", str(EXAMPLE))
    assert dot.returncode == 0
    for expected in ('label="tap uml0\\n172.16.99.254 gateway\\nowner dupont"', "uplink_eth0 -> tap_uml0",
                     "switch_sw0 -> guest_web", "subgraph cluster_guests"):
        assert expected in dot.stdout
    svg = subprocess.run(["dot", "-Tsvg"], input=dot.stdout, capture_output=True, text=True, check=True).stdout
    assert "<svg" in svg and "guest web" in svg and "172.16.99.1" in svg


def test_the_readme_shows_the_example_as_the_mermaid_output_draws_it() -> None:
    mermaid = run("graph", "--format", "mermaid", str(EXAMPLE))
    assert mermaid.returncode == 0
    assert mermaid.stdout.startswith("flowchart LR\n")
    readme = (ROOT / "README.md").read_text()
    assert f"```mermaid\n{mermaid.stdout}```" in readme, "README's graph is stale: paste `umlstate graph --format mermaid`"


@needs_root
def test_status_json_lists_every_resource_with_its_state(host_with_uplink: Netns, tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(f"""\
name: st
host: {{run_dir: {tmp_path}/run, state_dir: {tmp_path}/state, sysctl: {{net.ipv4.ip_forward: 1}}}}
subnets: [{{name: a, cidr: 172.16.99.0/24, gateway: 172.16.99.254, proxy_arp: {{uplink: eth0}}}}]
taps: [{{name: uml0, owner: nobody, subnet: a}}, {{name: uml1, owner: nobody}}]
""")
    ns = host_with_uplink.name
    before = umlstate("status", str(path), "--json", netns=ns)
    assert before.returncode == 2
    data = json.loads(before.stdout)
    assert data["format_version"] == 1
    states = {(r["kind"], r["target"]): r["state"] for r in data["resources"]}
    assert states == {("sysctl", "net.ipv4.ip_forward"): "drifted", ("tap", "uml0"): "missing",
                      ("tap", "uml1"): "missing", ("address", "uml0 172.16.99.254/24"): "missing"}
    assert all(set(r) == {"kind", "target", "state", "detail"} for r in data["resources"])

    assert umlstate("apply", str(path), "--yes", netns=ns).returncode == 0
    host_with_uplink.ip("link", "set", "uml1", "down")
    after = umlstate("status", str(path), "--json", netns=ns)
    rows = {(r["kind"], r["target"]): r for r in json.loads(after.stdout)["resources"]}
    assert after.returncode == 2
    assert rows[("tap", "uml1")]["state"] == "drifted" and rows[("tap", "uml1")]["detail"] == "down"
    assert rows[("tap", "uml0")]["state"] == "ok"
    text = umlstate("status", str(path), netns=ns)
    assert "3 of 4 resources ok." in text.stdout
    assert umlstate("destroy", str(path), "--yes", netns=ns).returncode == 0


@pytest.mark.parametrize("command", ["validate", "plan", "apply", "status", "destroy", "stop", "start", "watch",
                                     "graph", "schema"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert "Example:" in result.stdout
