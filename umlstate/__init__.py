"""umlstate: declarative networking for User-Mode-Linux guests.

The pipeline, one module per stage:

    loader (YAML -> model.Topology, with rules)      desired state
    observe (kernel, files, processes -> Snapshot)   observed state
    planner (pure: Topology x Snapshot -> Plan)      the diff, as actions
    executor (Plan -> changes, then verify)          apply
    cli                                              the commands
"""

__version__ = "0.1.0"
