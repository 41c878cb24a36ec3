#!/usr/bin/python
"""Ansible module: one host's umlstate apply, with the topology copy put in place first.

The copy the host keeps (what its timer applies) becomes the staged new
topology (``promote``: renamed from ``<path>.next``) or the given text
(``content``: the departure topology), atomically, root's, 0644; then
`umlstate apply` runs on it. One round trip instead of a copy task and a
command task. Changed when umlstate says it applied something.
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.umlstate_files import write_atomic

DOCUMENTATION = r"""
module: umlstate_apply
short_description: Put a host's umlstate topology copy in place and apply it
options:
  path: {description: the host's kept copy, type: path, required: true}
  promote: {description: "rename <path>.next to path first (when it is there)", type: bool, default: false}
  content: {description: "write this text to path first (instead of promote)", type: str}
  command: {description: "umlstate's argv up to the command (binary, --netns, --host)", type: list,
            elements: str, required: true}
"""


def main() -> None:
    module = AnsibleModule(argument_spec={
        "path": {"type": "path", "required": True},
        "promote": {"type": "bool", "default": False},
        "content": {"type": "str"},
        "command": {"type": "list", "elements": "str", "required": True},
    })
    path = module.params["path"]
    try:
        if module.params["content"] is not None:
            write_atomic(path, module.params["content"])
        elif module.params["promote"] and os.path.lexists(path + ".next"):  # a retry finds it renamed already
            os.replace(path + ".next", path)
    except OSError as exc:
        module.fail_json(msg=f"putting the topology in place at {path}: {exc}")
    rc, out, err = module.run_command([*module.params["command"], "apply", path, "--yes"],
                                      environ_update={"NO_COLOR": "1"})
    result = {"rc": rc, "stdout": out, "stderr": err, "stdout_lines": out.splitlines(),
              "stderr_lines": err.splitlines(), "changed": "Apply complete" in out}
    if rc != 0:
        module.fail_json(msg=f"umlstate apply failed (exit {rc})", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
