"""README's Benchmark block is the stored run's table, written by the bench (`scripts/bench --readme`).

No root, no kernel: the bench's rendering, on the figures kept in git.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import benchmarks.__main__ as bench
from benchmarks.__main__ import BEGIN, END, FIGURES, README, readme_block, table, with_figures


def stored() -> dict[str, Any]:
    figures: dict[str, Any] = json.loads(FIGURES.read_text())
    return figures


def test_the_readmes_block_is_the_stored_run_as_the_bench_writes_it() -> None:
    readme = README.read_text()
    assert with_figures(readme, stored()) == readme, (
        "README.md's Benchmark block differs from benchmarks/figures.json: `python -m benchmarks --readme-only`")


def test_the_block_shows_the_run_and_every_figure_the_bench_printed() -> None:
    results = stored()
    block = readme_block(results)
    run = results["run"]
    assert f"({run['date']}, {results['machine']['cpus']} CPUs" in block and f"medians of {run['repeat']})" in block
    for line in table(results).splitlines():  # every row as printed; every sentence as an item of a list
        assert (line if line.startswith("|") or not line else f"- {line}") in block.splitlines(), line
    assert "| 1000 |" in block, "the 1000-tap row: the figure issue 22's targets are about"


def test_only_the_block_is_written_and_a_readme_without_one_is_refused() -> None:
    results = stored()
    text = f"before\n{BEGIN}\nold figures\n{END}\nafter\n"
    written = with_figures(text, results)
    assert written.startswith("before\n" + BEGIN) and written.endswith(END + "\nafter\n")
    assert "old figures" not in written and with_figures(written, results) == written
    with pytest.raises(SystemExit, match="has no block"):
        with_figures("a README without the markers\n", results)


def test_a_run_is_kept_and_written_unless_a_section_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results, empty = stored(), f"{BEGIN}\n{END}\n"
    readme, figures = tmp_path / "README.md", tmp_path / "figures.json"
    readme.write_text(empty)
    monkeypatch.setattr(bench, "README", readme)
    monkeypatch.setattr(bench, "FIGURES", figures)
    with pytest.raises(SystemExit, match="a section failed"):
        bench.write_readme({**results, "errors": [{"section": "watch repair", "error": "boom", "logs": "/tmp/x"}]})
    assert readme.read_text() == empty and not figures.exists()
    bench.write_readme(results)
    assert json.loads(figures.read_text()) == results and readme.read_text() == readme_block(results) + "\n"
