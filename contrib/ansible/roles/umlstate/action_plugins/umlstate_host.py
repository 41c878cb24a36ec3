"""Ansible action: one step of the rollout on one host, in one round trip and one Python start there.

``step: stage`` reads the host's kept copy and journal, stages the new
topology and validates it; ``step: apply`` puts the copy in place and applies
it (``files/umlstate_host.py`` says what each does on the host). The host's
side is that file, run by the host's Python from its stdin with the request
after it, as a pipelined module would be, but without a module's wrapping: a
module task cost Ansible about 0.35 s more than this on three hosts, and a
rollout with nothing to move has two such steps.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.executor.interpreter_discovery import discover_interpreter
from ansible.plugins.action import ActionBase

HOST_SIDE = Path(__file__).resolve().parents[1] / "files" / "umlstate_host.py"
ARGV = {"type": "list", "elements": "str", "required": True}
STEPS: dict[str, dict[str, Any]] = {
    "stage": {
        "host": {"type": "str", "required": True},      # its hosts[].name: what moves.py reads it as
        "path": {"type": "str", "required": True},      # the kept copy, absolute, on the host
        "journal": {"type": "str", "required": True},   # the move journal next to it
        "content": {"type": "str", "required": True},   # the new topology's text
        "validate": ARGV,                               # umlstate's argv to validate with; the staged path follows
    },
    "apply": {
        "path": {"type": "str", "required": True},
        "promote": {"type": "bool", "default": False},  # rename <path>.next to path first (when it is there)
        "content": {"type": "str"},                     # or write this text there first (the departure topology)
        "command": ARGV,                                # umlstate's argv up to the command (--netns, --host)
    },
}
AUTO = ("auto", "auto_legacy", "auto_silent", "auto_legacy_silent")


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _supports_check_mode = False  # the playbook refuses check mode before any step

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result: dict[str, Any] = super().run(tmp, task_vars)
        step = self._task.args.get("step")
        if step not in STEPS:
            raise AnsibleActionFail(f"umlstate_host: step must be one of {sorted(STEPS)}, not {step!r}")
        _, args = self.validate_argument_spec({"step": {"type": "str", "required": True}, **STEPS[step]})
        if not str(args["path"]).startswith("/"):
            raise AnsibleActionFail(f"umlstate_host: path must be absolute on the host, not {args['path']!r}")
        become = self._connection.become
        if not self._connection.has_pipelining or (become and not become.pipelining):
            raise AnsibleActionFail("umlstate_host sends the host a program on its stdin: it needs a connection "
                                    "that can (ssh, local; not paramiko) and a become method that can (sudo, not su)")
        python = self._python(task_vars, result)
        request = json.dumps({"step": step, "args": {k: v for k, v in args.items() if k != "step"}},
                             ensure_ascii=False).encode()
        # The program, then the request's length and the request, all on stdin: the command line stays one short
        # line (in logs, for sudo). The task's environment goes first, as a module's would.
        program = HOST_SIDE.read_bytes()
        loader = f"import sys; exec(sys.stdin.buffer.read({len(program)}))"
        command = " ".join(filter(None, [self._compute_environment_string(), python, "-I -c", shlex.quote(loader)]))
        done = self._low_level_execute_command(command, in_data=program + b"%d\n" % len(request) + request)
        try:  # the program's reply is its last line: a login shell may print something before it
            reply = json.loads(done["stdout"].strip().rpartition("\n")[2])
        except ValueError:
            reply = None
        if not isinstance(reply, dict):  # failed, with an exit code: the apply step's retries still count it
            reply = {"failed": True, "rc": done["rc"] or 1, "module_stdout": done["stdout"],
                     "module_stderr": done["stderr"], "msg": f"{python} on the host gave no answer (exit "
                     f"{done['rc']}): {(done['stderr'] or done['stdout'])[-2000:]}"}
        result.update(reply)
        return result

    def _python(self, task_vars: dict[str, Any], result: dict[str, Any]) -> str:
        """The host's Python as a module would get it: ansible_python_interpreter, or discovered once per host."""
        configured = self._templar.template(C.config.get_config_value("INTERPRETER_PYTHON", variables=task_vars))
        if configured and configured not in AUTO:
            return str(configured)
        facts = task_vars.get("ansible_facts", {})
        if facts.get("discovered_interpreter_python"):
            return str(facts["discovered_interpreter_python"])
        found = discover_interpreter(action=self, interpreter_name="python", discovery_mode=configured or "auto",
                                     task_vars=task_vars)
        result.setdefault("ansible_facts", {})["discovered_interpreter_python"] = found  # the next step reuses it
        return str(found)
