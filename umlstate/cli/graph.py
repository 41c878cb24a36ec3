"""``umlstate graph``: the topology as a picture, in Graphviz dot or Mermaid.

Pure, beside the planner: it reads only the desired state. Subnets are
clusters holding the tap that serves them (the guests' gateway), the switches
on that tap and the guests with their addresses; the LAN uplink stands
outside, joined to each subnet it answers ARP for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from umlstate.model.topology import Subnet, Topology, nic_tap_name


@dataclass(frozen=True)
class _Node:
    id: str
    lines: tuple[str, ...]
    shape: str  # "box", "round" (the uplink) or "stack" (a switch)


def _nodes_and_edges(t: Topology) -> tuple[dict[str | None, list[_Node]], list[tuple[str, str, str]]]:
    """Nodes grouped by subnet (None: outside any), and (from, to, label) edges."""
    groups: dict[str | None, list[_Node]] = {}
    edges: list[tuple[str, str, str]] = []

    def subnet_of_tap(name: str | None) -> str | None:
        tap = t.tap(name) if name else None
        return tap.subnet_names[0] if tap and tap.subnet_names else None

    for uplink in t.uplinks:
        groups.setdefault(None, []).append(_Node(f"uplink_{uplink}", (uplink, "LAN uplink"), "round"))
    for tap in t.taps:  # drawn in its first subnet's box
        subnets = t.subnets_of(tap)
        lines = [f"tap {tap.name}", *(f"{s.gateway} gateway" for s in subnets if s.gateway), f"owner {tap.owner}"]
        groups.setdefault(subnet_of_tap(tap.name), []).append(_Node(f"tap_{tap.name}", tuple(lines), "box"))
        edges += [(f"uplink_{uplink}", f"tap_{tap.name}", label) for uplink, label in _proxied(subnets)]
    for sw in t.switches:
        if sw.is_bridge:
            subnets = t.subnets_of(sw)
            lines = [f"bridge {sw.name}", *(f"{s.gateway} gateway" for s in subnets if s.gateway)]
            groups.setdefault(sw.subnet_names[0] if sw.subnet_names else None, []).append(
                _Node(f"switch_{sw.name}", tuple(lines), "stack"))
            edges += [(f"uplink_{uplink}", f"switch_{sw.name}", label) for uplink, label in _proxied(subnets)]
            continue
        groups.setdefault(subnet_of_tap(sw.tap), []).append(
            _Node(f"switch_{sw.name}", (f"{sw.kind} {sw.name}", f"user {sw.user}"), "stack"))
        if sw.tap:
            edges.append((f"tap_{sw.tap}", f"switch_{sw.name}", ""))
    for guest in t.guests:
        addresses = [str(ip) for n in guest.nics for ip in n.ips]
        label = (f"guest {guest.name}", *addresses, f"{guest.mem}, user {guest.user}",
                 *([f"on host {guest.host}"] if guest.host else []))
        home = next((s.name for n in guest.nics for s in t.subnets_of_nic(n)), None)
        groups.setdefault(home, []).append(_Node(f"guest_{guest.name}", label, "box"))
        for i, nic in enumerate(guest.nics):
            source = f"switch_{nic.switch}" if nic.switch else f"tap_{nic.tap}"
            bridge = t.switch(nic.switch) if nic.switch else None
            via = f"NIC {i}, tap {nic_tap_name(guest.name, i)}" if bridge is not None and bridge.is_bridge \
                else f"NIC {i}"
            edges.append((source, f"guest_{guest.name}", via))
    return groups, edges


def _proxied(subnets: tuple[Subnet, ...]) -> list[tuple[str, str]]:
    """(uplink, edge label) of each uplink that answers for these subnets' guests."""
    kinds: dict[str, list[str]] = {}
    for s in subnets:
        for proxy, kind in ((s.proxy_arp, "ARP"), (s.proxy_ndp, "NDP")):
            if proxy is not None and kind not in kinds.setdefault(proxy.uplink, []):
                kinds[proxy.uplink].append(kind)
    return [(uplink, f"proxy {'/'.join(k)}, forwarding") for uplink, k in sorted(kinds.items())]


def _safe(node_id: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in node_id)


def dot(t: Topology) -> str:
    groups, edges = _nodes_and_edges(t)
    shapes = {"box": "box", "round": "ellipse", "stack": "box3d"}

    def node(n: _Node) -> str:
        label = "\\n".join(n.lines).replace('"', '\\"')
        return f'    {_safe(n.id)} [label="{label}", shape={shapes[n.shape]}];'

    out = [f'digraph "{t.name}" {{', "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=11];',
           '  edge [fontname="Helvetica", fontsize=9];']
    out += [node(n)[2:] for n in groups.get(None, [])]
    for subnet in t.subnets:
        out.append(f"  subgraph cluster_{_safe(subnet.name)} {{")
        out.append(f'    label="subnet {subnet.name}\\n{subnet.cidr}"; style=rounded;')
        out += [node(n) for n in groups.get(subnet.name, [])]
        out.append("  }")
    out += [f'  {_safe(a)} -> {_safe(b)}' + (f' [label="{label}"];' if label else ";") for a, b, label in edges]
    out.append("}")
    return "\n".join(out) + "\n"


def mermaid(t: Topology) -> str:
    groups, edges = _nodes_and_edges(t)
    brackets = {"box": ('["', '"]'), "round": ('(["', '"])'), "stack": ('[["', '"]]')}

    def node(n: _Node, indent: str) -> str:
        left, right = brackets[n.shape]
        return f"{indent}{_safe(n.id)}{left}{'<br/>'.join(n.lines)}{right}"

    def lines() -> Iterator[str]:
        yield "flowchart LR"
        for n in groups.get(None, []):
            yield node(n, "  ")
        for subnet in t.subnets:
            yield f'  subgraph subnet_{_safe(subnet.name)}["subnet {subnet.name} {subnet.cidr}"]'
            for n in groups.get(subnet.name, []):
                yield node(n, "    ")
            yield "  end"
        for a, b, label in edges:
            yield f"  {_safe(a)} -- {label} --> {_safe(b)}" if label else f"  {_safe(a)} --> {_safe(b)}"

    return "\n".join(lines()) + "\n"
