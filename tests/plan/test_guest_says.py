"""What a running guest says of itself reaches the plan as a warning, never as an action.

A guest told IPv6 addresses whose kernel has no IPv6 (Debian's 6.1 UML kernel builds it as a module, which
only its image can carry) says so in its log: ``umlstate: no IPv6 in kernel <version>``. Observation keeps the
version (host/logs.py's ``lacks_ipv6``); plan warns, for a guest with IPv6 addresses only. The real boot of
such a guest is in tests/e2e/test_labs.py.
"""

from __future__ import annotations

import dataclasses

from umlstate.host.logs import lacks_ipv6
from umlstate.model.snapshot import GuestState, Proc
from umlstate.plan.planner import plan

from cases import FIXTURES, load_case

CASE = FIXTURES / "cases" / "ipv6-proxy-ndp"  # guests dual (IPv4 and IPv6) and six (IPv6 alone)


def test_the_line_is_read_at_a_line_s_start_only() -> None:
    assert lacks_ipv6("Linux version 6.1.176\numlstate: no IPv6 in kernel 6.1.176\numlstate: network up\n") \
        == "6.1.176"
    assert lacks_ipv6("[    3.141592] umlstate: no IPv6 in kernel 6.1.176\n") == "6.1.176"
    assert lacks_ipv6("umlstate-guest: startup: umlstate: no IPv6 in kernel 6.1.176\n") is None
    assert lacks_ipv6("umlstate: no IPv6 in kernel 6.1.176; rm -rf /\n") is None
    assert lacks_ipv6("umlstate: network up\n") is None
    assert lacks_ipv6("umlstate: no IPv6 in kernel ..\n") is None, "a version, which a fix names a folder by"


def warnings_when_said(guest: str) -> list[str]:
    placement, observed, _ = load_case(CASE)
    proc = Proc(pid=5001, uid=1000, argv=("/usr/bin/linux.uml", f"umid={guest}"), started=1.0)
    guests = {**observed.guests, guest: GuestState(proc, answers=True, no_ipv6="6.1.176")}
    made = plan(placement.topology, dataclasses.replace(observed, guests=guests), stretches=placement.stretches)
    return [f"{w.target}: {w.problem} / {w.fix}" for w in made.warnings if w.kind == "guest"]


def test_a_guest_with_ipv6_addresses_whose_kernel_has_none_is_a_warning() -> None:
    said = warnings_when_said("dual")
    assert said == ["dual: guest dual says its kernel (6.1.176) has no IPv6: its image lacks the kernel's ipv6 "
                    "module, so 2001:db8:0:1::111 is not on it / put the kernel's modules in the image's "
                    "/lib/modules/6.1.176 (scripts/build-debian-guest and umlstate's busybox image carry those of "
                    "the UML kernels installed here), or boot a kernel with IPv6 built in; the guest takes it at "
                    "its next boot"], said


def test_the_same_word_from_a_guest_without_ipv6_addresses_is_no_warning() -> None:
    placement, observed, _ = load_case(CASE)
    proc = Proc(pid=5001, uid=1000, argv=("/usr/bin/linux.uml", "umid=other"), started=1.0)
    guests = {**observed.guests, "other": GuestState(proc, answers=True, no_ipv6="6.1.176")}
    made = plan(placement.topology, dataclasses.replace(observed, guests=guests), stretches=placement.stretches)
    assert not [w for w in made.warnings if "no IPv6" in w.problem]


def test_what_a_guest_says_of_itself_is_not_in_the_fingerprint() -> None:
    _, observed, _ = load_case(CASE)
    proc = Proc(pid=5001, uid=1000, argv=("/usr/bin/linux.uml", "umid=dual"), started=1.0)
    quiet = dataclasses.replace(observed, guests={"dual": GuestState(proc, answers=True)})
    said = dataclasses.replace(observed, guests={"dual": GuestState(proc, answers=True, no_ipv6="6.1.176")})
    assert quiet.fingerprint() == said.fingerprint()
