"""The commands on one guest: stop, start, console; and check, which asks the guests for their checks.

In the command line's layer; each goes through the reconcile service like the
others (``cli.common``).
"""

from __future__ import annotations

import os
import sys

import click

from umlstate import errors
from umlstate.cli import files
from umlstate.cli.common import Options, one_guest, reconciler, run_safely, topology_arg


@click.command()
@click.argument("args", nargs=-1, required=True, metavar="[TOPOLOGY] GUEST")
@click.pass_obj
@run_safely
def stop(opts: Options, args: tuple[str, ...]) -> None:
    """Stop one guest cleanly (mconsole cad, then halt, then signals) and keep it down.

    Later `apply` runs leave it stopped until `umlstate start GUEST`.

    \b
    Example:
      umlstate --netns lab stop topology.yaml web
    """
    service, guest = one_guest(opts, args)
    if service.stop_guest(guest):
        click.echo(f"Guest {guest} stays down until `umlstate start {guest}`; apply, cron and watch leave it so.")
    else:
        click.echo(f"Guest {guest} was not running; it stays down until `umlstate start {guest}`.")


@click.command()
@click.argument("args", nargs=-1, required=True, metavar="[TOPOLOGY] GUEST")
@click.pass_obj
@run_safely
def start(opts: Options, args: tuple[str, ...]) -> None:
    """Start one guest (and what it needs), and let `apply` keep it running again.

    \b
    Example:
      umlstate --netns lab start topology.yaml web
    """
    service, guest = one_guest(opts, args)
    after = service.start_guest(guest).after
    state = after.guests.get(guest)
    pid = f" (pid {state.proc.pid})" if state is not None and state.proc is not None else ""
    click.echo(f"Guest {guest} is running{pid}; apply keeps it so again.")


@click.command("check")
@topology_arg
@click.pass_obj
@run_safely
def check_cmd(opts: Options, topology: str | None) -> None:
    """Run the topology's checks now, in the guests that declare them, and say how each went.

    Exit 0 when every check went as expected, 2 when one did not (or its guest did not report).

    \b
    Example:
      umlstate --netns lab check topology.yaml
    """
    _path, t = files.load_topology(topology)
    if not t.checks:
        click.echo("The topology declares no checks.")
        return
    results = reconciler(opts, t).check()
    bad = 0
    for n, result in results:
        c = t.checks[n]
        if result is None:
            bad += 1
            click.echo(f"  no answer  {c.label}: {c.from_} did not report (is it running, with a seed disk?)")
        else:
            bad += not result.ok
            click.echo(f"  {'ok' if result.ok else 'FAILED':9}  {c.label}: {result.detail}")
    click.echo(f"{len(results) - bad} of {len(results)} check(s) went as expected.")
    if bad:
        sys.exit(errors.EXIT_CHANGES)


@click.command("console")
@click.argument("args", nargs=-1, required=True, metavar="[TOPOLOGY] GUEST")
@click.pass_obj
@run_safely
def console_cmd(opts: Options, args: tuple[str, ...]) -> None:
    """Attach this terminal to a guest's console (its tty1); Ctrl-] detaches.

    The console is a pseudo-terminal umlstate makes for each guest it starts,
    so it is there for guests started by cron or watch too; a session ends
    when you detach, the guest keeps running and stays logged in, like a
    serial line. What the guest prints is filtered: sequences that make a
    terminal answer or set its title, palette or clipboard never reach yours.

    \b
    Example:
      umlstate --netns lab console topology.yaml web
    """
    from umlstate.host import console

    service, guest = one_guest(opts, args)
    fd, path = service.console(guest)
    try:
        # Said once the terminal is raw (hence the \r): whoever types on seeing it loses nothing.
        why = console.attach(fd, sys.stdin.fileno(), sys.stdout.fileno(), utf8=console.utf8_terminal(dict(os.environ)),
                             announce=lambda: click.echo(f"Connected to guest {guest}'s console ({path}, tty1 in the "
                                                         "guest). Escape character is ^] (Ctrl-]); press Enter for "
                                                         "a prompt.\r", err=True))
    finally:
        os.close(fd)
    click.echo(f"\nDisconnected from guest {guest}'s console: {why}.", err=True)


