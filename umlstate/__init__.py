"""umlstate: declarative networking for User-Mode-Linux guests.

The pipeline, one package per stage, each importing only from those below it
(pyproject's import-linter contracts enforce the order):

    cli          click commands; text, JSON, graphs, logs
    watch        the level-triggered loop: events and exits trigger passes
    reconcile    one pass: observe -> plan -> apply -> verify, under the lock
    observe      the live host -> a frozen Snapshot
    apply        a Plan -> changes on the host
    plan         pure: Topology x Snapshot -> Plan (actions, status)
    host         every system call: netlink, tun, files, processes, records
    model        the desired state: topology, loader, rules, schema, snapshot
    errors       the one error hierarchy
"""

__version__ = "0.1.0"
