"""umlstate.cli.render: plans and status as people (text) and programs (JSON) read them.

Small hand-made Plans, not the planner: plan_text's lines (Terraform's symbols, one reason per
action, the header, the "Plan: ..." summary, the held guests' line), its errors, conflicts and
warnings, colour codes only when asked; plan_json as SPEC's "Machine-readable output" fixes it
(format_version 1, every action with op, kind, target, detail and reason, in execution order);
status_text's table, its closing count and its problems.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import get_args

import pytest

from umlstate.cli.render import COLOURS, FORMAT_VERSION, STATE_COLOURS, dumps, plan_json, plan_text, status_text
from umlstate.errors import Finding
from umlstate.plan import actions as A
from umlstate.plan.result import Plan
from umlstate.plan.status import Row

GROUP = 1650496500
NS = "umlstate-test-render"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def tap(name: str, reason: str = "missing") -> A.CreateTap:
    return A.CreateTap(reason, name, "dupont", "umlusers", "umlstate:lab", GROUP)


ACTIONS: tuple[A.AnyAction, ...] = (
    tap("uml0"),
    A.AddAddress("missing", "uml0", ipaddress.IPv4Interface("172.16.99.254/24")),
    A.SetSysctl("is 0, wanted 1", "net.ipv4.ip_forward", "1", "0"),
    A.AddProxy("missing", "eth0", ipaddress.IPv4Address("172.16.99.1")),
    A.DeleteTap("no longer in the topology", "uml9", GROUP),
    A.ReplaceTap("has packet information (PI) on", tap("uml1", "has packet information (PI) on")),
)
CHANGES = Plan("lab", NS, ACTIONS, given_fingerprint="0123456789abcdef", held=("db",))
ERROR = Finding("error", "switch", "sw0", "uml_switch (switch sw0) is not installed", "apt-get install uml-utilities")
CONFLICT = Finding("conflict", "tap", "uml2", "tap uml2 exists and is not umlstate's", "umlstate apply --adopt",
                   adoptable=True)
WARNING = Finding("warning", "guest", "web", "guest web has no address")
BLOCKED = Plan("lab", None, (), conflicts=(CONFLICT,), blockers=(ERROR,), warnings=(WARNING,))


# --- plan_text ---------------------------------------------------------------------------------


def test_each_action_is_one_line_in_order_with_symbol_detail_and_reason() -> None:
    lines = plan_text(CHANGES).splitlines()
    assert lines[0] == f"umlstate will apply topology lab in network namespace {NS}:"
    assert lines[1] == ""
    body = lines[2:2 + len(ACTIONS)]
    width = max(len(f"{a.kind} {a.target}") for a in ACTIONS)
    for line, action in zip(body, ACTIONS, strict=True):
        symbol = {"create": "  +", "update": "  ~", "delete": "  -", "replace": "-/+"}[action.op]
        assert line == f"{symbol} {f'{action.kind} {action.target}'.ljust(width)}  {action.detail}  # {action.reason}"
    assert body[4].startswith("  - tap uml9")
    assert body[5].startswith("-/+ tap uml1")


def test_the_summary_counts_a_replacement_as_an_add_and_a_destroy() -> None:
    text = plan_text(CHANGES)
    assert CHANGES.summary == {"add": 4, "change": 1, "destroy": 2}
    assert "\nPlan: 4 to add, 1 to change, 2 to destroy.\n" in text


def test_held_guests_are_named_after_the_summary_and_in_an_empty_plan() -> None:
    held = "Guest db stays down: `umlstate stop` holds it until `umlstate start db`."
    assert plan_text(CHANGES).endswith(f"to destroy.\n{held}\n")
    empty = Plan("lab", NS, (), held=("db",))
    assert plan_text(empty) == f"No changes. The host in network namespace {NS} matches topology lab.\n{held}\n"


def test_an_empty_plan_says_the_host_matches() -> None:
    assert plan_text(Plan("lab", None, ())) == "No changes. The host matches topology lab.\n"


def test_a_destroy_plan_says_destroy() -> None:
    plan = Plan("lab", None, (A.DeleteTap("destroy", "uml0", GROUP),), mode="destroy")
    assert plan_text(plan).startswith("umlstate will destroy topology lab:\n")
    assert "Plan: 0 to add, 0 to change, 1 to destroy." in plan_text(plan)


def test_errors_conflicts_and_warnings_come_first_and_an_empty_blocked_plan_claims_no_match() -> None:
    text = plan_text(BLOCKED)
    assert text == (
        "error: uml_switch (switch sw0) is not installed\n"
        "  to fix: apt-get install uml-utilities\n"
        "conflict: tap uml2: tap uml2 exists and is not umlstate's\n"
        "  to fix: umlstate apply --adopt\n"
        "warning: guest web has no address\n"
        "\n")
    assert "No changes" not in text


def test_problems_precede_the_actions() -> None:
    plan = Plan("lab", None, ACTIONS[:1], warnings=(WARNING,))
    assert plan_text(plan).startswith("warning: guest web has no address\n\numlstate will apply topology lab:\n")


def test_no_colour_unless_asked() -> None:
    for plan in (CHANGES, BLOCKED, Plan("lab", None, ())):
        assert "\x1b[" not in plan_text(plan)


def test_colour_when_asked_paints_only_symbols_and_prefixes() -> None:
    painted = plan_text(CHANGES, colour=True)
    assert ANSI.sub("", painted) == plan_text(CHANGES)  # the same text underneath
    assert f"\x1b[{COLOURS['create']}m  +\x1b[0m tap uml0" in painted
    assert f"\x1b[{COLOURS['replace']}m-/+\x1b[0m tap uml1" in painted
    assert f"\x1b[{COLOURS['delete']}m  -\x1b[0m tap uml9" in painted
    assert f"\x1b[{COLOURS['update']}m  ~\x1b[0m sysctl" in painted
    problems = plan_text(BLOCKED, colour=True)
    assert ANSI.sub("", problems) == plan_text(BLOCKED)
    assert "\x1b[31;1merror: \x1b[0muml_switch" in problems
    assert "\x1b[31;1mconflict: \x1b[0mtap uml2" in problems
    assert "\x1b[33;1mwarning: \x1b[0mguest web" in problems


# --- plan_json ---------------------------------------------------------------------------------


def test_plan_json_is_spec_s_object() -> None:
    data = plan_json(CHANGES)
    assert data["format_version"] == FORMAT_VERSION == 1
    assert (data["topology"], data["netns"]) == ("lab", NS)
    assert data["summary"] == {"add": 4, "change": 1, "destroy": 2}
    assert [(a["op"], a["kind"], a["target"]) for a in data["actions"]] == [
        (a.op, a.kind, a.target) for a in ACTIONS]  # in execution order


def test_every_action_in_json_has_op_kind_target_detail_and_reason() -> None:
    kinds = set(get_args(A.Kind))
    assert {"tun-device", "group", "sysctl", "tap", "address", "proxy-neigh", "switch", "guest"} <= kinds
    for action, entry in zip(ACTIONS, plan_json(CHANGES)["actions"], strict=True):
        assert {"op", "kind", "target", "detail", "reason"} <= set(entry)
        assert all(isinstance(entry[key], str) and entry[key] for key in ("op", "kind", "target", "detail", "reason"))
        assert entry["op"] in ("create", "update", "delete", "replace")
        assert entry["kind"] in kinds
        assert (entry["detail"], entry["reason"]) == (action.detail, action.reason)


def test_findings_in_json_carry_kind_target_problem_and_fix() -> None:
    data = plan_json(BLOCKED)
    assert data["netns"] is None and data["actions"] == []
    assert data["summary"] == {"add": 0, "change": 0, "destroy": 0}
    assert data["errors"] == [{"kind": "switch", "target": "sw0", "problem": ERROR.problem, "fix": ERROR.fix}]
    assert data["conflicts"] == [{"kind": "tap", "target": "uml2", "problem": CONFLICT.problem,
                                  "fix": CONFLICT.fix, "adoptable": True}]
    assert data["warnings"] == [{"kind": "guest", "target": "web", "problem": WARNING.problem, "fix": ""}]


@pytest.mark.parametrize("plan", [CHANGES, BLOCKED, Plan("lab", None, ())], ids=["changes", "blocked", "empty"])
def test_dumps_is_one_json_object_and_a_newline(plan: Plan) -> None:
    text = dumps(plan_json(plan))
    assert text.endswith("}\n") and text.count("\n}\n") == 1
    assert json.loads(text) == plan_json(plan)
    assert "\x1b[" not in text


# --- status_text ---------------------------------------------------------------------------------

ROWS = [
    Row("tap", "uml0", "ok", "owner dupont, up"),
    Row("address", "uml0 172.16.99.254/24", "missing", "missing"),
    Row("guest", "web", "drifted", "command line changed"),
    Row("tap", "uml2", "conflict", "tap uml2 exists and is not umlstate's; umlstate apply --adopt"),
    Row("proxy-neigh", "eth0 172.16.99.1", "ok", ""),
]


def test_status_text_is_an_aligned_table_then_a_count() -> None:
    lines = status_text(ROWS, Plan("lab", None, ())).splitlines()
    assert lines[:5] == [
        "tap          uml0                   ok        owner dupont, up",
        "address      uml0 172.16.99.254/24  missing   missing",
        "guest        web                    drifted   command line changed",
        "tap          uml2                   conflict  tap uml2 exists and is not umlstate's; umlstate apply --adopt",
        "proxy-neigh  eth0 172.16.99.1       ok",  # no trailing blanks without a detail
    ]
    assert lines[5:] == ["", "2 of 5 resources ok."]


def test_status_text_of_all_ok_says_so() -> None:
    rows = [r for r in ROWS if r.state == "ok"]
    assert status_text(rows, Plan("lab", None, ())).endswith("\n\nAll 2 resources ok.\n")


def test_status_text_adds_errors_and_warnings_but_not_conflicts_again() -> None:
    text = status_text(ROWS, BLOCKED)
    assert text.endswith("2 of 5 resources ok.\n\n"
                         "error: uml_switch (switch sw0) is not installed\n"
                         "  to fix: apt-get install uml-utilities\n"
                         "warning: guest web has no address\n")
    assert "conflict:" not in text  # its row says it


UNWELL = [
    Row("guest", "db", "panicked", "Kernel panic - not syncing: sysrq triggered crash; apply or watch starts it again",
        ("sysrq: Trigger a crash", "Kernel panic - not syncing: sysrq triggered crash")),
    Row("guest", "app", "hung", "pid 42, up 3m, its mconsole does not answer"),
]
FAILED_CHECK = [Row("check", "pc ping r1", "failed", "failed at 2026-12-03 17:05:02 UTC: ping 10.0.1.1: no answer")]


def test_status_text_shows_a_panicked_guests_last_lines_under_its_row() -> None:
    lines = status_text(UNWELL, Plan("lab", None, ())).splitlines()
    assert lines[:4] == [
        "guest  db   panicked  Kernel panic - not syncing: sysrq triggered crash; apply or watch starts it again",
        "            | sysrq: Trigger a crash",
        "            | Kernel panic - not syncing: sysrq triggered crash",
        "guest  app  hung      pid 42, up 3m, its mconsole does not answer",
    ]
    assert lines[-1] == "0 of 2 resources ok."
    assert UNWELL[0].to_json()["log"] == list(UNWELL[0].log)
    assert "log" not in UNWELL[1].to_json()


def test_status_text_colours_the_state_only_when_asked() -> None:
    plain = status_text(ROWS + UNWELL + FAILED_CHECK, BLOCKED)
    painted = status_text(ROWS + UNWELL + FAILED_CHECK, BLOCKED, colour=True)
    assert "\x1b[" not in plain
    # The same text underneath, but for the padding a painted state keeps on a row without detail.
    assert [line.rstrip() for line in ANSI.sub("", painted).splitlines()] == plain.splitlines()
    for state, code in STATE_COLOURS.items():
        assert f"\x1b[{code}m{state:<8}\x1b[0m" in painted


def test_status_text_without_resources_says_so_with_its_problems() -> None:
    text = status_text([], BLOCKED)
    assert text.startswith("The topology declares no resources.\n\nerror: uml_switch")
    assert text.endswith("warning: guest web has no address\n")


def test_status_text_without_resources_or_problems_is_one_line() -> None:
    assert status_text([], Plan("lab", None, ())) == "The topology declares no resources.\n"
