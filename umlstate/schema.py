"""The topology's JSON Schema, generated from the model (``umlstate schema``).

Committed as schemas/topology.schema.json for editors (yaml-language-server);
a test fails when the committed copy is stale.
"""

from __future__ import annotations

from typing import Any

from umlstate.model import Topology

SCHEMA_ID = "https://umlstate.invalid/schemas/topology.schema.json"


def topology_schema() -> dict[str, Any]:
    schema = Topology.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "umlstate topology", **schema}
