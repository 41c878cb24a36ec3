"""What every command shares: its options, one guard that turns errors into SPEC's exit codes, the service.

In the command line's layer (``cli.main`` and ``cli.guests`` use it). Messages
may quote what a guest's user chose, so each is sanitized on its way out.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from umlstate import errors
from umlstate.cli import files
from umlstate.errors import InternalError, UmlstateError
from umlstate.host.logs import sanitize
from umlstate.model.topology import Topology

if TYPE_CHECKING:
    from umlstate.cli.log import LogFormat
    from umlstate.reconcile import Reconciler

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Options:
    netns: str | None
    log_format: LogFormat
    verbose: bool
    lock_timeout: float
    host: str | None = None  # with several hosts: whose slice (else $UMLSTATE_HOST, else the hostname)


def fail(message: str, code: int) -> NoReturn:
    # Messages may quote what a guest's user chose (file names, console lines): never raw to a terminal.
    click.echo(f"umlstate: {sanitize(message)}", err=True)
    sys.exit(code)


def run_safely(fn: F) -> F:
    """Turn every error into one message and an exit code; never a traceback for bad input."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors.TopologyError as exc:
            click.echo(sanitize(str(exc)), err=True)
            sys.exit(exc.exit_code)
        except UmlstateError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # the last line of defence
            if os.environ.get("UMLSTATE_DEBUG"):
                raise
            fail(str(InternalError(f"{type(exc).__name__}: {exc}")), errors.EXIT_FAILED)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


def reconciler(opts: Options, topology: Topology, *, wait: bool = True, wait_timeout: float | None = None
                ) -> Reconciler:
    """The service every host-reading command goes through (imported late: validate stays fast).

    With several hosts, it serves this host's slice of the farm only.
    """
    from umlstate.model.placement import UnknownHost, place
    from umlstate.reconcile import Reconciler, Settings

    name = opts.host or os.environ.get("UMLSTATE_HOST") or socket.gethostname()
    try:
        placement = place(topology, name)
    except UnknownHost as exc:
        raise errors.UsageError(f"{exc}\n  to fix: pass --host NAME or set UMLSTATE_HOST") from None

    progress = sys.stderr.isatty() and opts.log_format == "console"
    settings = Settings.from_environment(os.environ, netns=opts.netns, lock_timeout=opts.lock_timeout,
                                         progress=progress, command_line=" ".join(sys.argv[1:]), wait=wait,
                                         wait_timeout=wait_timeout)
    return Reconciler(placement.topology, settings, placement.stretches)


def colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


topology_arg = click.argument("topology", required=False, metavar="[TOPOLOGY]")


def one_guest(opts: Options, args: tuple[str, ...]) -> tuple[Reconciler, str]:
    """The service and guest of `stop`, `start` and `console`."""
    topology, guest = topology_and_guest(args)
    _path, t = files.load_topology(topology)
    if t.guest(guest) is None:
        known = ", ".join(g.name for g in t.guests) or "none"
        raise click.UsageError(f"no guest {guest!r} in topology {t.name} (guests: {known})")
    return reconciler(opts, t), guest


def topology_and_guest(args: tuple[str, ...]) -> tuple[str | None, str]:
    if len(args) == 1:
        return None, args[0]
    if len(args) == 2:
        return args[0], args[1]
    raise click.UsageError("expected [TOPOLOGY] GUEST")


