"""The policy listing's digest, without root: on a listing captured from libnftables' text output.

What traffic puts in a dynamic set (a router's senders) is no drift; an element
of any other set (a port's MAC, its sources) is the policy itself.
"""

from __future__ import annotations

from pathlib import Path

from umlstate.host.nft import steady

LISTING = (Path(__file__).parents[2] / "fixtures" / "nft" / "listing-with-dynamic-set.txt").read_bytes()


def test_a_dynamic_sets_elements_are_left_out_and_a_static_sets_kept() -> None:
    out = steady(LISTING)
    assert b"172.16.98" not in out
    assert b'"lab-0"' in out and b'"web-0"' in out
    assert b"flags dynamic,timeout\n\t\ttimeout 10m\n\t}" in out, "the set itself stays"


def test_whatever_traffic_put_in_the_dynamic_set_the_listing_is_the_same() -> None:
    empty = LISTING.replace(b"\n\t\telements = { 172.16.98.10, 172.16.98.11,\n\t\t\t     172.16.98.12 }", b"")
    assert empty != LISTING and steady(empty) == steady(LISTING)
    assert steady(LISTING.replace(b'"web-0"', b'"web-1"')) != steady(LISTING), "a static element is policy"


def test_a_dynamic_set_is_known_by_its_flag_whatever_their_order_and_the_lines_after_it() -> None:
    other = LISTING.replace(b"flags dynamic,timeout\n\t\ttimeout 10m", b"flags timeout,dynamic\n\t\ttimeout 10m\n\t\tgc-interval 1m")
    assert b"172.16.98" not in steady(other)
    static = LISTING.replace(b"flags dynamic,timeout\n", b"")  # no longer dynamic: its elements are policy
    assert b"172.16.98" in steady(static)
