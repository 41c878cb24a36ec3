"""The planner is pure: no I/O, no host libraries, in it or in what it imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "umlstate"
# Every module of the plan layer, the desired state's pure ones, and the renderers.
PURE = [*sorted(str(p.relative_to(PACKAGE).with_suffix("")) for p in (PACKAGE / "plan").rglob("*.py")),
        "model/snapshot", "model/topology", "model/rules", "cli/render", "cli/graph"]
FORBIDDEN_MODULES = {"os", "subprocess", "socket", "fcntl", "ctypes", "shutil", "pyroute2", "psutil", "pathlib",
                     "grp", "pwd", "umlstate.host", "umlstate.observe", "umlstate.apply", "umlstate.reconcile"}
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval"}


def test_pure_modules_import_no_io() -> None:
    for name in PURE:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported = {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
            else:
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                    assert node.func.id not in FORBIDDEN_CALLS, f"{name}.py calls {node.func.id}()"
                continue
            bad = {m for m in imported if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_MODULES)}
            assert not bad, f"umlstate/{name}.py imports {bad}: the planner side must stay pure"


def test_importing_the_planner_loads_no_host_library() -> None:
    code = ("import sys, umlstate.plan.planner, umlstate.plan.status; "
            "print(','.join(m for m in sys.modules if m in ('pyroute2', 'psutil', 'subprocess') "
            "or m.startswith(('umlstate.host', 'umlstate.apply', 'umlstate.observe'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
