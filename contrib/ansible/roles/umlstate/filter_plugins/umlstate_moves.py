"""Ansible filter: which guests move, worked out inside the controller's own process.

``hosts | umlstate_moves(new_topology_text)`` is what ``moves.py NEW < hosts.json``
prints, as data: the computation is moves.py's (contrib/ansible/moves.py, found
beside this role), run without a module or a process of its own. Its warnings
are Ansible's warnings too (shown in the output, not by a task of their own),
and ``moving`` says whether the rollout has guests to move or a journal to
finish, the same for every host, so that all go the same way (tasks/main.yml).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

MOVES = Path(__file__).resolve().parents[3] / "moves.py"  # filter_plugins -> umlstate -> roles -> contrib/ansible


def _moves() -> ModuleType:
    spec = importlib.util.spec_from_file_location("umlstate_contrib_moves", MOVES)
    if spec is None or spec.loader is None:
        raise AnsibleFilterError(f"umlstate_moves: cannot load {MOVES}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def umlstate_moves(hosts: dict[str, dict[str, Any]], new_text: str) -> dict[str, Any]:
    moves = _moves()
    if not isinstance(hosts, dict):
        raise AnsibleFilterError("umlstate_moves: hosts must map inventory hosts to what they hold")
    try:
        result: dict[str, Any] = moves.compute(new_text, hosts)
    except moves.MoveError as exc:
        raise AnsibleFilterError(f"moves: {exc}") from None
    for warning in result["warnings"]:
        Display().warning(f"umlstate: {warning}")
    result["moving"] = bool(result["moves"]) or any(seen.get("journal") is not None for seen in hosts.values())
    return result


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"umlstate_moves": umlstate_moves}
