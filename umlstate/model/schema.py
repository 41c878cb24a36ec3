"""The topology's JSON Schema, generated from the model (``umlstate schema``).

Committed as schemas/topology.schema.json for editors (yaml-language-server),
and rendered as the README's field-by-field reference
(``umlstate schema --format markdown``); tests fail when either copy is stale.
"""

from __future__ import annotations

import json
from typing import Any

from umlstate.model.topology import Topology

SCHEMA_ID = "https://umlstate.invalid/schemas/topology.schema.json"


def topology_schema() -> dict[str, Any]:
    schema = Topology.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "umlstate topology", **schema}


def reference_markdown(schema: dict[str, Any] | None = None) -> str:
    """One table per object of the file, named by its YAML path, in the order of the file."""
    schema = schema or topology_schema()
    defs: dict[str, Any] = schema["$defs"]
    sections: list[str] = []

    def section(path: str, obj: dict[str, Any]) -> None:
        required = set(obj.get("required", ()))
        rows = ["| field | type | default | description |", "|---|---|---|---|"]
        nested: list[tuple[str, dict[str, Any]]] = []
        for field, prop in obj.get("properties", {}).items():
            ref, many = _ref(prop)
            child = f"{path}.{field}" if path else field
            if ref:
                child += "[]" if many else ""
                nested.append((child, defs[ref]))
            default = "required" if field in required else _default(prop)
            rows.append(f"| `{field}` | {_type(prop, child if ref else None)} | {default} | "
                        f"{_cell(prop.get('description', ''))} |")
        title = f"`{path}`" if path else "top level"
        sections.append(f"#### {title}\n\n{_cell(obj.get('description', ''))}\n\n" + "\n".join(rows) + "\n")
        for child, sub in nested:
            section(child, sub)

    section("", schema)
    return "\n".join(sections)


def _ref(prop: dict[str, Any]) -> tuple[str | None, bool]:
    """The object definition a property holds (one, or a list of them)."""
    for candidate, many in ((prop, False), (prop.get("items", {}), True)):
        if "$ref" in candidate:
            return candidate["$ref"].rsplit("/", 1)[1], many
        for option in candidate.get("anyOf", ()):
            if "$ref" in option:
                return option["$ref"].rsplit("/", 1)[1], many
    return None, False


def _type(prop: dict[str, Any], section: str | None) -> str:
    if section is not None:
        anchor = section.replace(".", "").replace("[]", "")
        kind = "list of objects" if section.endswith("[]") else "object"
        return f"{kind}, see [`{section}`](#{anchor})"
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    return " or ".join(_one_type(o) for o in options)


def _one_type(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_one_type(prop.get('items', {}))}s"
    if kind == "object":
        return "map of dotted key to value"
    fmt = {"ipv4": "IPv4 address", "ipv4network": "IPv4 network"}.get(prop.get("format", ""))
    return fmt or str(kind)


def _default(prop: dict[str, Any]) -> str:
    if "default" not in prop or prop["default"] in (None, [], {}):
        return ""
    return f"`{json.dumps(prop['default']).strip(chr(34))}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
