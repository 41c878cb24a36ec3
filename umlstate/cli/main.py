"""The command line: each command loads the topology and asks the reconcile service (or the model) for it.

The outermost layer. It finds and vets the topology (cli.files), picks this
host's slice of a farm, hands the pass to ``reconcile`` (which enters the
namespace and takes the lock), and maps every ``UmlstateError`` to one
readable, sanitized message and SPEC's exit code (``cli.common``); anything
else is reported as a bug. Plans and status go to stdout, logs to stderr.
The commands on one guest are in ``cli.guests``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from umlstate import __version__, errors
from umlstate.cli import files, guests, quick
from umlstate.cli.common import Options, colour, fail, reconciler, run_safely, topology_arg
from umlstate.errors import UmlstateError
from umlstate.model.topology import Topology

if TYPE_CHECKING:
    from umlstate.cli.log import LogFormat
    from umlstate.model.snapshot import Snapshot
    from umlstate.plan.result import Plan
    from umlstate.reconcile import Outcome, Reconciler

# Commands that read only files: they set up no logging and import nothing of the host, the planner or its
# rendering (each command imports those where it needs them). `validate` runs on every host of a rollout
# before anything changes, and its imports are most of its time: 0.26 s with all, 0.19 s with these (medians).
FILE_ONLY = frozenset({"validate", "schema", "graph", "import"})

# The quick pass's name for this command line as it started (cli.quick.key), when run by main() as root: not by
# click's test runner, nor with the quick pass off.
_ENTRY_KEY: str | None = None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="umlstate")
@click.option("--netns", metavar="NS", help="Work inside this existing network namespace (never created).")
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True,
              help="Logs on stderr for people, or one JSON object per line for log shippers.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs.")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True, metavar="SECONDS",
              help="How long to wait for another run's lock before exiting 75.")
@click.option("--host", metavar="NAME", help="With several hosts: act on this host's slice "
                                             "(default $UMLSTATE_HOST, then the hostname).")
@click.pass_context
def cli(ctx: click.Context, netns: str | None, log_format: LogFormat, verbose: bool,  # noqa: PLR0917
        lock_timeout: float, host: str | None) -> None:
    """Declarative networking for User-Mode-Linux guests.

    A topology file says which taps, addresses, proxy ARP entries, sysctls,
    switches and guests a host should have; umlstate compares it with the
    live host, shows the difference as a plan, and applies it.

    \b
    Example:
      umlstate validate topology.yaml
      umlstate --netns lab plan topology.yaml
      umlstate --netns lab apply topology.yaml --yes
    """
    if ctx.invoked_subcommand not in FILE_ONLY:
        from umlstate.cli import log

        log.configure(log_format, verbose)
    ctx.obj = Options(netns, log_format, verbose, lock_timeout, host)


@cli.command()
@topology_arg
@run_safely
def validate(topology: str | None) -> None:
    """Check a topology file; exit 0 when valid, 65 when not.

    \b
    Example:
      umlstate validate topology.yaml
    """
    path, t = files.load_topology(topology)
    click.echo(f"{path}: valid topology {t.name}: {len(t.subnets)} subnet(s), {len(t.taps)} tap(s), "
               f"{len(t.switches)} switch(es), {len(t.guests)} guest(s)"
               + (f" on {len(t.hosts)} hosts" if t.hosts else ""))


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["json", "markdown"]), default="json", show_default=True,
              help="The JSON Schema, or the field-by-field reference the README shows.")
@run_safely
def schema(fmt: str) -> None:
    """Print the topology's JSON Schema (for editors and CI), or its reference.

    \b
    Example:
      umlstate schema > topology.schema.json
      umlstate schema --format markdown > topology-reference.md
    """
    from umlstate.model.schema import reference_markdown, topology_schema

    click.echo(json.dumps(topology_schema(), indent=2) if fmt == "json" else reference_markdown(), nl=fmt == "json")


@cli.command("plan")
@topology_arg
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (format_version 1).")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Save the plan for `apply FILE`.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 when in sync, 2 when changes are pending.")
@click.option("--adopt", is_flag=True, help="Plan to take over foreign objects in the topology's way.")
@click.option("--destroy", is_flag=True, help="Plan the removal of everything umlstate owns.")
@click.pass_obj
@run_safely
def plan_cmd(opts: Options, topology: str | None, as_json: bool, out: str | None,  # noqa: PLR0917
             detailed_exitcode: bool, adopt: bool, destroy: bool) -> None:
    """Show what `apply` would change, without changing anything.

    \b
    Example:
      umlstate --netns lab plan topology.yaml
      umlstate --netns lab plan --json --detailed-exitcode
    """
    from umlstate.cli import render

    read = files.Read()
    path, t = files.load_topology(topology, read)
    rec = reconciler(opts, t)
    snapshot, p = rec.plan(adopt=adopt, destroy=destroy)
    shown = render.dumps(render.plan_json(p)) if as_json else render.plan_text(p, colour=colour())
    click.echo(shown, nl=False)
    if not (out or adopt or destroy):
        _keep_quick(opts, read, topology is None, rec, snapshot, p, shown, locked=False)
    if out:
        files.save_plan(out, files.SavedPlan(source=path, netns=p.netns, adopt=adopt, fingerprint=p.fingerprint,
                                             topology_document=t.model_dump(mode="json"), plan=render.plan_json(p)))
        if not as_json:
            click.echo(f"Saved the plan to {out}; `umlstate apply {out}` carries it out while the host "
                       "is unchanged.")
    if p.blockers:
        sys.exit(errors.EXIT_FAILED)
    if detailed_exitcode and not p.in_sync:
        sys.exit(errors.EXIT_CHANGES)


def _confirm(yes: bool, what: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UmlstateError(f"refusing to {what} without --yes when not on a terminal")
    if not click.confirm(f"Do you want to {what} these changes?", default=False):
        raise UmlstateError(f"{what} cancelled; nothing was changed")


def _keep_quick(opts: Options, read: files.Read, default_path: bool, rec: Reconciler,  # noqa: PLR0917
                snapshot: Snapshot, p: Plan, shown: str, *, locked: bool) -> None:
    """After a full pass run by the console entry point: what the next identical run's quick pass needs
    (cli.quick) when this one found the host in sync, else nothing for it."""
    import structlog

    from umlstate.host.lock import TopologyLock
    from umlstate.observe import witness

    name = _ENTRY_KEY
    if name is None or opts.verbose:
        return
    try:
        if not p.in_sync or p.backoff:  # the next pass must do or say something: a full one
            quick.forget(name)
            return
        probe = witness.probe_of(rec.topology, read.path, snapshot)
        # The probe read twice around a second observation, all three agreeing: the host stood still while the
        # evidence was read. An apply reads under the lock again (without waiting: busy, nothing is kept).
        with TopologyLock(rec.topology.state_dir, 0.0) if locked else contextlib.nullcontext():
            before, _ = witness.read(probe, rec.netlink)
            again = rec.observe()
            after, links = witness.read(probe, rec.netlink)
        if before == after and again.fingerprint() == snapshot.fingerprint():
            quick.remember(name, quick.Kept(probe, before, links, read.topology, read.guest_files, default_path,
                                            shown, code=0, locked=locked))
    except Exception as exc:  # noqa: BLE001 - what the pass printed stands; the next pass is a full one
        structlog.get_logger("umlstate").debug("no quick pass next time", reason=str(exc))


def _converge(opts: Options, topology: Topology, *, yes: bool, adopt: bool = False, destroy: bool = False,
              fingerprint: str | None = None, wait: bool = True, wait_timeout: float | None = None,
              read: files.Read | None = None, default_path: bool = False) -> Outcome:
    """One reconcile pass with this terminal's confirmation, then its closing line (``read``: what loading the
    topology read; the pass may keep what a quick pass needs, cli.quick)."""
    from umlstate.cli import render

    def confirm(p: Plan) -> None:
        if not yes or sys.stdout.isatty():
            click.echo(render.plan_text(p, colour=colour()), nl=False)
        _confirm(yes, "destroy" if destroy else "apply")

    rec = reconciler(opts, topology, wait=wait, wait_timeout=wait_timeout)
    outcome = rec.converge(confirm=confirm, adopt=adopt, destroy=destroy, fingerprint=fingerprint)
    if not outcome.changed:
        shown = render.plan_text(outcome.plan, colour=colour()) if sys.stdout.isatty() and os.geteuid() == 0 else ""
        click.echo(shown, nl=False)
        if read is not None:
            _keep_quick(opts, read, default_path, rec, outcome.after, outcome.plan, shown, locked=True)
        return outcome
    s = outcome.plan.summary
    verb = "Destroy" if destroy else "Apply"
    click.echo(f"{verb} complete: {s['add']} added, {s['change']} changed, {s['destroy']} destroyed "
               f"in {outcome.seconds:.2f}s; verified.")
    return outcome


@cli.command()
@click.argument("target", required=False, metavar="[TOPOLOGY|PLANFILE]")
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@click.option("--adopt", is_flag=True, help="Take over foreign objects that stand where the topology wants its own.")
@click.option("--no-wait", is_flag=True, help="Return once started guests have booted, not when they answer.")
@click.option("--wait-timeout", type=float, default=None, metavar="SECONDS",
              help="How long started guests may take to answer (default 90, or $UMLSTATE_BOOT_TIMEOUT).")
@click.pass_obj
@run_safely
def apply(opts: Options, target: str | None, yes: bool, adopt: bool, no_wait: bool,  # noqa: PLR0917
          wait_timeout: float | None) -> None:
    """Make the host match the topology, then verify it does.

    Started guests count once every address they were told answers from the
    host (ready means answering); --no-wait returns once they have booted.

    \b
    Example:
      umlstate --netns lab apply topology.yaml --yes
      umlstate --netns lab plan --out lab.plan.json && umlstate --netns lab apply lab.plan.json
    """
    read = files.Read()
    t, saved = files.load_target(target, opts.netns, read)
    if saved is not None:
        adopt = adopt or saved.adopt
        yes = True  # the saved plan was the confirmation
    _converge(opts, t, yes=yes, adopt=adopt, fingerprint=saved.fingerprint if saved else None, wait=not no_wait,
              wait_timeout=wait_timeout, read=read if saved is None and not adopt else None,
              default_path=target is None)


@cli.command()
@topology_arg
@click.option("--yes", "-y", is_flag=True, help="Destroy without asking.")
@click.pass_obj
@run_safely
def destroy(opts: Options, topology: str | None, yes: bool) -> None:
    """Remove everything umlstate owns and restore the sysctls it changed.

    \b
    Example:
      umlstate --netns lab destroy topology.yaml --yes
    """
    _converge(opts, files.load_topology(topology)[1], yes=yes, destroy=True)


@cli.command()
@topology_arg
@click.option("--json", "as_json", is_flag=True, help="Print JSON (format_version 1).")
@click.pass_obj
@run_safely
def status(opts: Options, topology: str | None, as_json: bool) -> None:
    """Show every resource: ok, missing, drifted or conflict; exit 2 unless all are ok.

    \b
    Example:
      umlstate --netns lab status
    """
    from umlstate.cli import render
    from umlstate.plan.status import status as compute

    _path, t = files.load_topology(topology)
    snapshot, p = reconciler(opts, t).plan()
    rows = compute(t, snapshot, p, now=time.time())
    if as_json:
        click.echo(render.dumps({"format_version": render.FORMAT_VERSION,
                                 "resources": [r.to_json() for r in rows],
                                 "errors": [f.to_json() for f in p.blockers],
                                 "warnings": [f.to_json() for f in p.warnings]}), nl=False)
    else:
        click.echo(render.status_text(rows, p, colour=colour()), nl=False)
    if p.blockers or any(r.state != "ok" for r in rows):
        sys.exit(errors.EXIT_CHANGES)


@cli.command()
@topology_arg
@click.option("--resync", type=float, default=300.0, show_default=True, metavar="SECONDS",
              help="Full resync period, a backstop to events.")
@click.pass_obj
@run_safely
def watch(opts: Options, topology: str | None, resync: float) -> None:
    """Stay running and repair drift as it happens (netlink events, process exits).

    Each repair is a full apply pass under the topology's lock. Exits 0 on SIGTERM.

    \b
    Example:
      umlstate --netns lab --log-format json watch topology.yaml
    """
    from umlstate.watch import Watcher

    # Booted is enough here: a pass that waited for answers would hold back the next repair.
    gc.enable()  # watch runs for days: main turned the collector off for one-shot commands
    sys.exit(Watcher(reconciler(opts, files.load_topology(topology)[1], wait=False), resync=resync).run())


@cli.command()
@topology_arg
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid"]), default="dot", show_default=True)
@run_safely
def graph(topology: str | None, fmt: str) -> None:
    """Draw the topology: subnets, taps, switches, guests, the uplink.

    Reads only the file; the host is not looked at.

    \b
    Example:
      umlstate graph topology.yaml | dot -Tsvg > topology.svg
      umlstate graph --format mermaid topology.yaml >> NOTES.md
    """
    from umlstate.cli import graph as draw

    _path, t = files.load_topology(topology)
    click.echo(draw.dot(t) if fmt == "dot" else draw.mermaid(t), nl=False)


@cli.group("import")
def import_group() -> None:
    """Write a umlstate topology from another tool's lab."""


@import_group.command("kathara")
@click.argument("lab", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="The topology's name (default: the lab folder's, shortened).")
@click.option("--user", default="nobody", show_default=True, help="The user the guests run as.")
@click.option("--image", required=True, help="The UML base image every guest boots (Kathara's are Docker images).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (files' `from` then relative to it) instead of standard output.")
@click.option("--host-on", multiple=True, metavar="CD=ADDRESS",
              help="Put the host on this collision domain, with this address as the subnet's gateway.")
@run_safely
def import_kathara(lab: Path, name: str | None, user: str, image: str, out: Path | None,  # noqa: PLR0917
                   host_on: tuple[str, ...]) -> None:
    """A Kathara or Netkit lab (lab.conf, *.startup, device folders) as a topology.

    \b
    Example:
      umlstate import kathara static-routing --image /srv/uml/base.img --out lab.yaml
    """
    from umlstate.cli import kathara

    pairs = [h.partition("=") for h in host_on]
    if any(not sep for _cd, sep, _a in pairs):
        raise click.UsageError("--host-on takes CD=ADDRESS, e.g. --host-on A=195.11.14.254")
    default = re.sub(r"[^a-z0-9-]", "-", lab.resolve().name.lower())[:12].strip("-") or "lab"
    text = kathara.convert(lab, name=name or default, user=user, image=image, out=out,
                           host_on={cd: address for cd, _sep, address in pairs})
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)
        click.echo(f"Wrote {out}; check it with `umlstate validate {out}`.")


for _command in (guests.stop, guests.start, guests.console_cmd, guests.check_cmd):
    cli.add_command(_command)


def main(quick_key: str | None = None) -> None:
    """The console entry point: SPEC's exit codes, including 64 for usage errors.

    ``quick_key``: cli.quick's name for this command line (it ran first), under which a full pass that finds
    the host in sync keeps what the next quick pass needs.

    A command is one short pass: the cyclic garbage collector is off (it cost a quarter of a 1000-tap pass,
    tracing the YAML's nodes; memory stays the same, and ``watch`` turns it back on), and the process ends
    with ``os._exit`` once its output is flushed, without the interpreter's teardown (~45 ms): every file and
    lock is closed by then by the ``with`` blocks that opened it.
    """
    global _ENTRY_KEY  # noqa: PLW0603 - set once, by the one entry point
    _ENTRY_KEY = quick_key
    gc.disable()
    try:
        _main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    if not isinstance(code, int):  # sys.exit("message"), or None
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else errors.EXIT_FAILED
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BrokenPipeError, ValueError):  # `umlstate plan | head`, a closed stream
            stream.flush()
    os._exit(code)


def _main() -> None:
    try:
        code = cli.main(standalone_mode=False)
    except click.UsageError as exc:
        exc.show()
        sys.exit(errors.EXIT_USAGE)
    except click.Abort:
        fail("aborted", errors.EXIT_FAILED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(errors.EXIT_USAGE)
    sys.exit(code if isinstance(code, int) else 0)
