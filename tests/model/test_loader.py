"""The loader and the validation rules: every invalid input is one clear, positioned message."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from umlstate.errors import TopologyError
from umlstate.model.loader import load_bytes, load_file
from umlstate.model.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
INVALID = sorted((ROOT / "fixtures" / "invalid").glob("*.yaml"))
VALID = [*sorted((ROOT / "fixtures" / "cases").glob("*/topology.yaml")), ROOT / "topology.example.yaml"]
EXPECT = re.compile(rb"^# expect: (\d+):(\d+): (.*)$", re.MULTILINE)


def expectations(path: Path) -> list[tuple[int, int, str]]:
    return [(int(m[1]), int(m[2]), m[3].decode()) for m in EXPECT.finditer(path.read_bytes())]


def test_the_table_has_at_least_twenty_cases() -> None:
    assert len(INVALID) >= 20
    for path in INVALID:
        assert expectations(path), f"{path.name} states no '# expect:' line"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_topology_reports_every_problem_at_its_position(path: Path) -> None:
    with pytest.raises(TopologyError) as info:
        load_file(path)
    got = [(d.line, d.column, d.message) for d in info.value.diagnostics]
    for line, column, text in expectations(path):
        assert any((line, column) == (gl, gc) and text in gm for gl, gc, gm in got), (
            f"expected {line}:{column}: {text}\n got:\n" + "\n".join(f"{a}:{b}: {c}" for a, b, c in got))
    assert len(got) == len(expectations(path)), f"unexpected extra problems: {got}"
    assert all(str(d).startswith(f"{path}:") for d in info.value.diagnostics)


@pytest.mark.parametrize("path", INVALID[:5], ids=lambda p: p.stem)
def test_validate_command_exits_65_without_traceback(path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "umlstate", "validate", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 65
    assert "Traceback" not in proc.stderr
    line, column, text = expectations(path)[0]
    assert f"{path}:{line}:{column}: " in proc.stderr
    assert text in proc.stderr


def test_valid_example_validates() -> None:
    proc = subprocess.run([sys.executable, "-m", "umlstate", "validate", str(ROOT / "topology.example.yaml")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "valid topology lab" in proc.stdout


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.parent.name)
def test_valid_topologies_round_trip_through_the_model(path: Path) -> None:
    topology = load_file(path)
    dumped = yaml.safe_dump(topology.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
    again = load_bytes(dumped.encode(), "round-trip.yaml")
    assert again == topology


def test_missing_file_is_a_positioned_error() -> None:
    with pytest.raises(TopologyError, match="no such file"):
        load_file("/nonexistent/topology.yaml")


def test_alias_bomb_is_refused() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True))
    with pytest.raises(TopologyError, match="too large"):
        load_bytes(bomb.encode())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_give_a_topology_or_a_topology_error(data: bytes) -> None:
    try:
        assert isinstance(load_bytes(data), Topology)
    except TopologyError as exc:
        assert exc.diagnostics
        assert all(d.line >= 1 and d.column >= 1 for d in exc.diagnostics)


EXAMPLE = (ROOT / "topology.example.yaml").read_text()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_mutated_valid_topologies_never_raise_anything_else(data: st.DataObject) -> None:
    text = EXAMPLE
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(text)))
        edit = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        chunk = data.draw(st.sampled_from(["", " ", "\t", ":", "-", "\n", "[", "{", "*a", "&a", "!!", "0x",
                                           "99999999999999999999", "uml0", "172.16.99.1", "'", '"', "#"]))
        end = min(len(text), pos + data.draw(st.integers(0, 12)))
        if edit == "delete":
            text = text[:pos] + text[end:]
        elif edit == "insert":
            text = text[:pos] + chunk + text[pos:]
        else:
            text = text[:pos] + chunk + text[end:]
    try:
        load_bytes(text.encode())
    except TopologyError as exc:
        assert exc.diagnostics


def test_committed_schema_is_in_sync() -> None:
    proc = subprocess.run([sys.executable, "-m", "umlstate", "schema"], capture_output=True, text=True, check=True)
    committed = (ROOT / "schemas" / "topology.schema.json").read_text()
    assert proc.stdout == committed, "schemas/topology.schema.json is stale: umlstate schema > it"


def test_example_points_at_the_schema() -> None:
    assert EXAMPLE.splitlines()[0].startswith("# yaml-language-server: $schema=")
