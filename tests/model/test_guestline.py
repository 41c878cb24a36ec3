"""The guest's command line: written once, read back by the same grammar (model/guestline.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from umlstate.model.guestline import GuestLine, Nic

CASES = Path(__file__).parents[2] / "fixtures" / "cases"


def recorded_guest_lines() -> list[tuple[str, ...]]:
    """Every guest argv the golden scenarios record, as root recorded it at spawn."""
    found = []
    for observed in sorted(CASES.glob("*/observed.json")):
        records = json.loads(observed.read_text()).get("records", {})
        for unit, proc in sorted(records.get("processes", {}).items()):
            if unit.startswith("guest-"):
                found.append(tuple(proc["argv"]))
    return found


@pytest.mark.parametrize("argv", recorded_guest_lines(), ids=lambda a: a[1])
def test_a_recorded_line_reads_back_into_the_line_that_writes_it(argv: tuple[str, ...]) -> None:
    line = GuestLine.parse(argv)
    assert line is not None and line.argv == argv


def test_the_parts_of_a_line_are_typed() -> None:
    line = GuestLine("/usr/bin/linux.uml", "web", "/run/u/uml", "96M", "/s/web.cow,/srv/base.img",
                     (Nic("eth0", "eth0=daemon,fe:fd:0:0:0:1,unix,/run/sw.ctl", "10.0.0.1/24"),
                      Nic("vec1", "vec1:transport=tap,ifname=web-1,mac=fe:fd:0:0:0:2,mtu=1450", "10.1.0.1/24", "10.1.0.254")),
                     args=("umlstate.mark=m1",))
    again = GuestLine.parse(line.argv)
    assert again == line
    assert line.addresses == ["10.0.0.1", "10.1.0.1"] and line.gateway == "10.1.0.254"
    assert line.mconsole == "/run/u/uml/web/mconsole"
    assert line.summary == "/usr/bin/linux.uml mem=96M; eth0 daemon; vec1 vector tap web-1 mtu 1450"
    assert [n.live for n in line.nics] == [False, True]
    assert line.argv[-3:] == ("umlstate.vec1=10.1.0.1/24", "umlstate.gw=10.1.0.254", "umlstate.mark=m1")


@pytest.mark.parametrize("argv", [
    ("/usr/bin/uml_switch", "-unix", "/run/sw.ctl"),  # a switch's line
    ("linux.uml", "mem=96M", "umid=web", "uml_dir=/u", "ubd0=/img", "con=null", "con0=null,fd:1", "ssl=null"),
    ("linux.uml", "umid=web", "uml_dir=/u", "mem=96M", "ubd0=/img", "con=null", "con0=null,fd:1"),  # cut short
    # hints out of the order umlstate writes them: not a line it wrote
    ("linux.uml", "umid=web", "uml_dir=/u", "mem=96M", "ubd0=/img", "con=null", "con0=null,fd:1", "ssl=null",
     "eth0=tuntap,t0,fe:fd:0:0:0:1", "umlstate.gw=10.0.0.254", "umlstate.eth0=10.0.0.1/24"),
])
def test_a_line_umlstate_did_not_write_is_not_read_as_one(argv: tuple[str, ...]) -> None:
    assert GuestLine.parse(argv) is None


def test_a_line_without_the_console_word_is_an_older_guests() -> None:
    line = GuestLine.parse(("linux.uml", "umid=web", "uml_dir=/u", "mem=96M", "ubd0=/img", "con=null",
                            "con0=null,fd:1", "ssl=null", "eth0=tuntap,t0,fe:fd:0:0:0:1"))
    assert line is not None and not line.console
    assert line.same_but_nics(GuestLine("linux.uml", "web", "/u", "96M", "/img"))
