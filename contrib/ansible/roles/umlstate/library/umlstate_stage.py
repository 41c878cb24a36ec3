#!/usr/bin/python
"""Ansible module: one host's observe step of the rollout, in one round trip.

Reads the topology copy the host kept from its last run and the move journal
(each may be missing), makes the copy's folder root's and not writable by
others, writes the new topology next to the copy (``<path>.next``, atomically,
root's, 0644) and, unless it is the copy itself, validates it with the host's
own umlstate. It replaces six tasks (two slurps, a fact, a folder, a copy, a
command): Ansible's cost is per task, about a second each on a small host.
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.umlstate_files import read, root_folder, write_atomic

DOCUMENTATION = r"""
module: umlstate_stage
short_description: Read a host's kept umlstate topology and journal, stage and validate the new one
options:
  host: {description: "its umlstate host name (hosts[].name)", type: str, required: true}
  path: {description: the host's kept copy, type: path, required: true}
  journal: {description: the move journal next to it, type: path, required: true}
  content: {description: the new topology's text, type: str, required: true}
  validate: {description: "umlstate's argv to validate with; the staged path is appended", type: list,
             elements: str, required: true}
"""


def main() -> None:
    module = AnsibleModule(argument_spec={
        "host": {"type": "str", "required": True},
        "path": {"type": "path", "required": True},
        "journal": {"type": "path", "required": True},
        "content": {"type": "str", "required": True},
        "validate": {"type": "list", "elements": "str", "required": True},
    })
    path, staged = module.params["path"], module.params["path"] + ".next"
    try:
        previous, journal = read(path), read(module.params["journal"])
        changed = root_folder(os.path.dirname(path))
        if read(staged) != module.params["content"]:
            write_atomic(staged, module.params["content"])
        changed |= module.params["content"] != previous  # staging itself is bookkeeping: a new topology is news
    except OSError as exc:
        module.fail_json(msg=f"staging the topology: {exc.strerror or exc}")
    # The kept copy was put in place by a run whose stage had this host's umlstate validate it: the same
    # topology again (a re-run) moves nothing, and the apply that follows validates it before it changes
    # anything. A new topology, a copy edited by hand, or a host without a copy is validated now.
    if module.params["content"] != previous:
        rc, out, err = module.run_command([*module.params["validate"], staged], environ_update={"NO_COLOR": "1"})
        if rc != 0:
            module.fail_json(msg=f"this host's umlstate refuses the new topology (exit {rc}):\n{err or out}", rc=rc)
    # What moves.py reads of each host.
    module.exit_json(changed=changed, staged=staged,
                     seen={"name": module.params["host"], "previous": previous, "journal": journal})


if __name__ == "__main__":
    main()
