"""The policy's render digest is the same however umlstate's code was loaded.

It decides whether a quiet pass may skip rendering; when it differed between
code compiled from source and code read from a .pyc, a host converged one way
saw drift the other way (the policy was loaded again, plan exited 2).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

DIGEST = "from umlstate.plan import ruleset; print(ruleset._code_digest().hex())"


def digest(cache: Path) -> str:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # as nobody: the venv's packages too
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(cache), "PYTHONPATH": path}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run([sys.executable, "-c", DIGEST], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_render_digest_is_the_same_from_source_and_from_pyc(tmp_path: Path) -> None:
    from_source = digest(tmp_path)  # an empty cache: compiled from source, and written there
    assert list(tmp_path.rglob("ruleset*.pyc")), "the first run wrote its .pyc files"
    assert digest(tmp_path) == from_source  # read back from the .pyc files
