"""Loading the policy when a port's link is missing: without root, on the rendered document.

Before Linux 6.16 nftables cannot hook a device that is not there, and one
missing tap (its creation failed in this pass) would keep every other guest's
policy out. The loader leaves that port out and records it; the plan loads it
once the link is there.
"""

from __future__ import annotations

import json
from dataclasses import replace

from umlstate.apply.ruleset import without_missing_ports
from umlstate.model.loader import load_text
from umlstate.model.snapshot import LISTING_FORM, Link, RulesetRecord, RulesetState, Snapshot
from umlstate.plan import actions as A
from umlstate.plan.planner import plan
from umlstate.plan.ruleset import inputs_of, render

TOPOLOGY = """\
name: lab
subnets: [{name: guests, cidr: 10.0.0.0/24, gateway: 10.0.0.254}]
switches: [{name: br0, kind: bridge, subnet: guests}]
guests:
  - {name: web, user: nobody, disk: {image: /srv/web.img}, nics: [{switch: br0, address: 10.0.0.1}]}
  - {name: lab, user: nobody, disk: {image: /srv/lab.img}, nics: [{switch: br0}]}
"""


def names(document: dict[str, object]) -> set[str]:
    commands = document["nftables"]
    assert isinstance(commands, list)
    return {c["add"][kind]["name"] for c in commands for kind in ("chain", "set") if kind in c.get("add", {})}


def test_a_missing_ports_chain_rules_and_set_are_left_out_and_the_others_kept() -> None:
    rendered = render(load_text(TOPOLOGY), {})
    assert rendered is not None
    document = json.loads(rendered.document)
    assert {"port-web-0", "port-lab-0", "senders-lab-0"} <= names(document)
    kept, left_out = without_missing_ports(document, lambda link: link != "lab-0")
    assert left_out == {"lab-0"}
    assert "port-web-0" in names(kept) and not {"port-lab-0", "senders-lab-0"} & names(kept)
    rules = [c["add"]["rule"]["chain"] for c in kept["nftables"] if "rule" in c.get("add", {})]
    assert "port-web-0" in rules and "port-lab-0" not in rules
    assert without_missing_ports(document, lambda _link: True) == (document, frozenset())


def test_the_render_names_every_port_it_hooks() -> None:
    """The load reads the document only when one of these links is missing: they must be all it hooks."""
    rendered = render(load_text(TOPOLOGY), {})
    assert rendered is not None
    hooked = {c["add"]["chain"]["dev"] for c in json.loads(rendered.document)["nftables"]
              if "dev" in c.get("add", {}).get("chain", {})}
    assert rendered.ports == hooked == {"web-0", "lab-0"}


def test_the_plan_loads_a_left_out_port_once_its_link_is_there() -> None:
    t = load_text(TOPOLOGY)
    rendered = render(t, {})
    assert rendered is not None
    taps = {name: Link(name, kind="tun", tun_type="tap") for name in ("web-0", "lab-0")}

    def reloads(left_out: frozenset[str], links: dict[str, Link]) -> list[str]:
        record = RulesetRecord(rendered.tables, rendered.digest, "listed", left_out, inputs=inputs_of(t, {}))
        s = Snapshot(links=links, ruleset=RulesetState(rendered.tables, "listed"))
        s = replace(s, records=replace(s.records, ruleset=record))
        return [a.reason for a in plan(t, s).actions if isinstance(a, A.LoadRuleset)]

    assert reloads(frozenset(), taps) == [], "loaded whole: nothing to do"
    assert reloads(frozenset({"lab-0"}), {"web-0": taps["web-0"]}) == \
        ["port(s) lab-0 left out, their link is there now"], "the plan makes the missing tap, then loads its port"
    assert reloads(frozenset({"lab-0"}), taps) == ["port(s) lab-0 left out, their link is there now"]


def test_a_record_listed_in_an_older_form_is_loaded_anew_not_called_a_change_by_someone_else() -> None:
    t = load_text(TOPOLOGY)
    rendered = render(t, {})
    assert rendered is not None
    taps = {name: Link(name, kind="tun", tun_type="tap") for name in ("web-0", "lab-0")}

    def reasons(recorded: str, seen: str) -> list[str]:
        record = RulesetRecord(rendered.tables, rendered.digest, recorded, inputs=inputs_of(t, {}))
        s = Snapshot(links=taps, ruleset=RulesetState(rendered.tables, seen))
        s = replace(s, records=replace(s.records, ruleset=record))
        return [a.reason for a in plan(t, s).actions if isinstance(a, A.LoadRuleset)]

    older = "0123456789abcdef"  # a JSON listing's digest, as umlstate recorded before the text form
    assert reasons(older, older) == [], "nothing in nftables changed since (its generation says so)"
    assert reasons(older, LISTING_FORM + "fedcba9876543210") == \
        ["recorded by an older umlstate, which listed it in another form: loaded anew to record it"]
    assert reasons(LISTING_FORM + "0", LISTING_FORM + "1") == \
        ["changed outside umlstate (its listing is not the one loaded)"]
