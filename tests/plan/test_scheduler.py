"""The scheduler, a pure function: which actions go to the kernel together, which alone, in what order."""

from __future__ import annotations

import ipaddress

from umlstate.apply.scheduler import Batch, GroupDelete, Single, Stops, schedule
from umlstate.model.snapshot import Proc
from umlstate.plan import actions as A

GROUP = 4242


def tap(name: str) -> A.CreateTap:
    return A.CreateTap("missing", name, "dupont", None, "umlstate:lab", GROUP)


def delete(name: str) -> A.DeleteTap:
    return A.DeleteTap("gone", name, GROUP)


def address(name: str) -> A.AddAddress:
    return A.AddAddress("missing", name, ipaddress.IPv4Interface("172.16.99.254/24"))


def test_netlink_changes_between_two_processes_form_one_batch_in_order() -> None:
    start = A.StartSwitch("not running", "sw0", ("uml_switch",), "dupont", "/run/sw0.ctl", "uml0")
    actions = (tap("uml0"), address("uml0"), A.SetLinkUp("down", "uml0"), start, A.SetLinkUp("down", "uml1"))
    assert schedule(actions, frozenset()) == [Batch(actions[:3]), Single(start), Batch(actions[4:])]


def test_a_tap_whose_name_a_queued_deletion_holds_starts_a_new_batch() -> None:
    actions = (delete("uml0"), address("uml1"), tap("uml0"), tap("uml2"))
    assert schedule(actions, frozenset({"uml0", "uml9"})) == [Batch(actions[:2]), Batch(actions[2:])]


def test_deleting_every_link_of_the_group_is_one_request() -> None:
    actions = (delete("uml0"), delete("uml1"), delete("uml2"))
    assert schedule(actions, frozenset({"uml0", "uml1", "uml2"})) == [GroupDelete(actions)]


def test_deleting_part_of_the_group_is_batched_one_by_one() -> None:
    actions = (delete("uml0"), delete("uml1"))
    assert schedule(actions, frozenset({"uml0", "uml1", "foreign"})) == [Batch(actions)]


def test_a_single_deletion_never_takes_the_group_route() -> None:
    actions = (delete("uml0"),)
    assert schedule(actions, frozenset({"uml0"})) == [Batch(actions)]


def policy() -> A.LoadRuleset:
    return A.CreateRuleset("missing", "umlstate-lab", frozenset({"netdev umlstate-lab"}), '{"nftables": []}', "d",
                           "port security on 2 port(s)", (), "i", frozenset({"uml0", "uml1"}))


def test_the_policy_after_a_batch_is_loaded_beside_it() -> None:
    """Its taps are made before the requests go (ioctls), and nothing else in the batch is what nftables reads."""
    load = policy()
    actions = (tap("uml0"), tap("uml1"), address("uml0"), A.SetLinkUp("down", "uml0"), load)
    assert schedule(actions, frozenset()) == [Batch(actions[:4], beside=load)]


def test_the_policy_waits_for_a_batch_that_deletes_links() -> None:
    """A port the old tables hook may be the link going: the load waits until the link is gone."""
    load = policy()
    actions = (delete("uml9"), tap("uml0"), load)
    assert schedule(actions, frozenset({"uml9", "uml8"})) == [Batch(actions[:2]), Single(load)]


def test_the_policy_with_nothing_before_it_is_a_step_of_its_own() -> None:
    load = policy()
    start = A.StartSwitch("not running", "sw0", ("uml_switch",), "dupont", "/run/sw0.ctl", "uml0")
    assert schedule((start, load), frozenset()) == [Single(start), Single(load)]


def test_every_action_appears_exactly_once_and_in_plan_order() -> None:
    proc = Proc(1, 0, ("linux",), 0.0)
    actions: tuple[A.AnyAction, ...] = (
        A.StopGuest("gone", "web", proc), delete("uml0"), delete("uml1"), A.CreateGroup("missing", "umlusers"),
        tap("uml0"), address("uml0"), A.SetSysctl("is 0", "net.ipv4.ip_forward", "1", "0"), tap("uml3"), policy())
    flat: list[A.AnyAction] = []
    for step in schedule(actions, frozenset({"uml0", "uml1"})):
        match step:
            case Batch(actions=batch, beside=load):
                flat.extend(batch)
                flat.extend([load] if load is not None else [])
            case GroupDelete(actions=batch) | Stops(actions=batch):
                flat.extend(batch)
            case Single(action=action):
                flat.append(action)
    assert tuple(flat) == actions


def test_guest_stops_in_a_row_are_one_step_carried_out_together() -> None:
    proc = Proc(1, 0, ("linux",), 0.0)
    web, db = A.StopGuest("gone", "web", proc), A.StopGuest("gone", "db", proc)
    alone = A.StopGuest("gone", "mail", proc)
    actions: tuple[A.AnyAction, ...] = (web, db, delete("uml0"), alone)
    assert schedule(actions, frozenset({"uml0", "uml1"})) == [Stops((web, db)), Batch((delete("uml0"),)),
                                                              Single(alone)]
