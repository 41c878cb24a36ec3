"""Ansible action: one step of the rollout on one host, in one round trip and one Python start there.

``step: stage`` reads the host's kept copy and journal, stages the new
topology and validates it; ``step: apply`` writes the move journal when
asked, puts the copy in place and applies it (``files/umlstate_host.py``
says what each does on the host). The host's side is that file, run by the
host's Python from its stdin with the request after it, as a pipelined module
would be, but without a module's wrapping: a module task cost Ansible about
0.35 s more than this on three hosts, and a rollout with nothing to move has
two such steps.

A moving guest's COW file takes three: ``look`` at where it goes (on the new
host), ``carry_out`` (pack it on the old host, fetch it to the controller)
and ``carry_in`` (send it to the new host, unpack it there). Each side's
archive is in the action's own temporary folder there, made and removed as
a module's is, so the connection's user (under ``become``) fetches and sends
it; ``remove`` drops the old COW file once the guest runs on its new host,
and the journal once the disks have landed.
``transit`` makes (or, given ``remove``, removes) the controller's folder for
the archives, on the controller alone. Each was a dozen module tasks: a move
of one guest took 5.9 s to carry a disk that tar packed in a blink.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.executor.interpreter_discovery import discover_interpreter
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

HOST_SIDE = Path(__file__).resolve().parents[1] / "files" / "umlstate_host.py"
ARGV = {"type": "list", "elements": "str", "required": True}
PATH = {"type": "str", "required": True}  # absolute, on the host
STEPS: dict[str, dict[str, Any]] = {
    "stage": {
        "host": {"type": "str", "required": True},      # its hosts[].name: what moves.py reads it as
        "path": PATH,                                   # the kept copy
        "journal": PATH,                                # the move journal next to it
        "content": {"type": "str", "required": True},   # the new topology's text
        "validate": ARGV,                               # umlstate's argv to validate with; the staged path follows
    },
    "apply": {
        "path": PATH,
        "promote": {"type": "bool", "default": False},  # rename <path>.next to path first (when it is there)
        "content": {"type": "str"},                     # or write this text there first (the departure topology)
        "command": ARGV,                                # umlstate's argv up to the command (--netns, --host)
        "journal": {"type": "str"},                     # the move journal,
        "record": {"type": "str"},                      # written first with this text (a departure)
    },
    "look": {"path": PATH},                             # where a moving guest's COW file goes
    "carry_out": {
        "path": PATH,                                   # the COW file on the old host
        "same_as": {"type": "dict"},                    # look's stat of the same path on the new host
        "archive": PATH,                                # where it goes on the controller
    },
    "carry_in": {
        "path": PATH,                                   # where the COW file goes on the new host
        "user": {"type": "str", "required": True},      # whose it is there
        "archive": PATH,                                # carry_out's, on the controller
    },
    "remove": {"path": PATH,                            # the journal, or the old COW file,
               "keep": {"type": "list", "elements": "int"}},  # unless it is this file (carry_in's inode and
                                                                 # ctime: a folder both hosts share)
    "transit": {"remove": {"type": "str"}},             # on the controller alone
}
AUTO = ("auto", "auto_legacy", "auto_silent", "auto_legacy_silent")


def shown(reply: dict[str, Any], verbosity: int) -> dict[str, Any]:
    """An apply that changed the host, shown by its own result: what umlstate printed, once.

    Printed as the debug action's result is (``_ansible_verbose_always``), instead of by a debug task after
    it, which cost a task's round on every host. Without -v, only that (``msg``); with -v, Ansible prints every
    result whole, and this one keeps the reply's own keys beside it. A failure keeps the whole reply, output
    included, as Ansible prints it anyway; an apply with no changes prints nothing."""
    if reply.get("failed") or not reply.get("changed"):
        return reply
    lines = [*reply.get("stderr_lines", []), *reply.get("stdout_lines", [])]
    kept = reply if verbosity else {"changed": True, "rc": reply.get("rc", 0)}
    return {**kept, "msg": lines, "_ansible_verbose_always": True}


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _supports_check_mode = True  # so that run() refuses it itself, rather than Ansible skipping each step

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        # Refused by the first step itself, rather than by a task of its own before it (each task costs Ansible
        # about 0.02 s, however little it does): skipped, every step would report a rollout that did nothing.
        if self._task.check_mode:
            raise AnsibleActionFail("check mode cannot show a rollout: run `umlstate --host NAME plan TOPOLOGY` "
                                    "on a host instead")
        task_vars = task_vars or {}
        result: dict[str, Any] = super().run(tmp, task_vars)
        step = self._task.args.get("step")
        if step not in STEPS:
            raise AnsibleActionFail(f"umlstate_host: step must be one of {sorted(STEPS)}, not {step!r}")
        _, args = self.validate_argument_spec({"step": {"type": "str", "required": True}, **STEPS[step]})
        args = {k: v for k, v in args.items() if k != "step" and v is not None}
        for key in ("path", "archive", "remove", "journal"):
            if key in args and not str(args[key]).startswith("/"):
                raise AnsibleActionFail(f"umlstate_host: {key} must be an absolute path, not {args[key]!r}")
        if step == "transit":
            return {**result, **self._transit(args.get("remove"))}
        become = self._connection.become
        if not self._connection.has_pipelining or (become and not become.pipelining):
            raise AnsibleActionFail("umlstate_host sends the host a program on its stdin: it needs a connection "
                                    "that can (ssh, local; not paramiko) and a become method that can (sudo, not su)")
        self._interpreter = self._python(task_vars, result)
        if step == "carry_out":
            result.update(self._carry_out(**args))
        elif step == "carry_in":
            result.update(self._carry_in(**args))
        elif step == "apply":
            result.update(shown(self._call(step, args), Display().verbosity))
        else:
            result.update(self._call(step, args))
        return result

    def _call(self, step: str, args: dict[str, Any]) -> dict[str, Any]:
        """One step of files/umlstate_host.py on the host: its reply, or a failure with an exit code."""
        request = json.dumps({"step": step, "args": args}, ensure_ascii=False).encode()
        # The program, then the request's length and the request, all on stdin: the command line stays one short
        # line (in logs, for sudo). The task's environment goes first, as a module's would.
        program = HOST_SIDE.read_bytes()
        loader = f"import sys; exec(sys.stdin.buffer.read({len(program)}))"
        command = " ".join(filter(None, [self._compute_environment_string(), self._interpreter, "-I -c",
                                         shlex.quote(loader)]))
        done = self._low_level_execute_command(command, in_data=program + b"%d\n" % len(request) + request)
        try:  # the program's reply is its last line: a login shell may print something before it
            reply = json.loads(done["stdout"].strip().rpartition("\n")[2])
        except ValueError:
            reply = None
        if not isinstance(reply, dict):  # failed, with an exit code: the apply step's retries still count it
            reply = {"failed": True, "rc": done["rc"] or 1, "module_stdout": done["stdout"],
                     "module_stderr": done["stderr"], "msg": f"{self._interpreter} on the host gave no answer "
                     f"(exit {done['rc']}): {(done['stderr'] or done['stdout'])[-2000:]}"}
        return reply

    def _carry_out(self, path: str, archive: str, same_as: dict[str, Any] | None = None) -> dict[str, Any]:
        """Pack the COW file on this (old) host into the action's temporary folder, fetch it to ``archive``."""
        folder = self._make_tmp_path()
        try:
            reply = self._call("pack", {"path": path, "into": folder, "same_as": same_as})
            if reply.get("archive") and not reply.get("failed"):
                self._connection.fetch_file(reply["archive"], archive)
                reply["archive"] = archive
        finally:
            self._remove_tmp_path(folder, force=True)
        return reply

    def _carry_in(self, path: str, user: str, archive: str) -> dict[str, Any]:
        """Send ``archive`` to this (new) host's temporary folder for the action, unpack it as the COW file."""
        folder = self._make_tmp_path()
        try:
            sent = self._connection._shell.join_path(folder, "cow.z")
            self._connection.put_file(archive, sent)
            return self._call("unpack", {"path": path, "archive": sent, "user": user})
        finally:
            self._remove_tmp_path(folder, force=True)
            Path(archive).unlink(missing_ok=True)

    @staticmethod
    def _transit(remove: str | None) -> dict[str, Any]:
        """The controller's folder for the archives in transit (0700, the controller user's), or its removal."""
        if remove is None:
            return {"changed": False, "path": tempfile.mkdtemp(prefix="umlstate-moves-")}
        if Path(remove).name.startswith("umlstate-moves-"):
            shutil.rmtree(remove, ignore_errors=True)
        return {"changed": False}

    def _python(self, task_vars: dict[str, Any], result: dict[str, Any]) -> str:
        """The Python of the host the step runs on, as a module would get it: ansible_python_interpreter, or
        discovered once per host and kept as its fact. A delegated step runs on the host it is delegated to,
        with that host's variables (its discovery is not kept: the fact would go to the task's own host)."""
        delegated = self._task.delegate_to
        host_vars = task_vars.get("ansible_delegated_vars", {}).get(delegated, task_vars) if delegated else task_vars
        configured = self._templar.template(C.config.get_config_value("INTERPRETER_PYTHON", variables=host_vars))
        if configured and configured not in AUTO:
            return str(configured)
        facts = host_vars.get("ansible_facts", {})
        if facts.get("discovered_interpreter_python"):
            return str(facts["discovered_interpreter_python"])
        found = discover_interpreter(action=self, interpreter_name="python", discovery_mode=configured or "auto",
                                     task_vars=host_vars)
        if not delegated:
            result.setdefault("ansible_facts", {})["discovered_interpreter_python"] = found  # the next step reuses it
        return str(found)
