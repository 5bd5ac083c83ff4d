"""The BigQuery table schema of pcaptool's NDJSON records, derived from the JSON Schema.

Never kept by hand: `bigquery_schema()` walks `pcaptool/schema/record.schema.json`:
- an object with declared properties (and no free-form keys) is a RECORD;
- an object whose keys are data (headers, settings, labels) is JSON;
- an array of scalars or of objects is REPEATED; an array of arrays (SACK blocks,
  HTTP/2 header lists) is JSON, since BigQuery has no array of arrays;
- a value that may be of several types (`["integer", "string"]`) is JSON; one that may be
  null is its type, NULLABLE (every field is NULLABLE: a layer is present only when the
  packet has it).
Keys that are not BigQuery column names (`logging.googleapis.com/trace` and its kin) are
left out; `bq load --ignore_unknown_values` skips them (the same values are in `flow`,
`httpRequest` and the labels' sources). `conforms()` checks one record against the
schema the way a load job would.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
_SCALARS = {"integer": "INT64", "number": "FLOAT64", "string": "STRING", "boolean": "BOOL"}


@cache
def json_schema() -> dict:
    return json.loads(resources.files("pcaptool").joinpath("schema/record.schema.json").read_text())


def bigquery_schema() -> list[dict]:
    """The schema as BigQuery's API representation: a list of field dicts."""
    root = json_schema()
    return _fields(_properties(root, root), root, ())


def _resolve(node: dict, root: dict) -> dict:
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"unsupported $ref {ref}")
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _properties(node: dict, root: dict) -> dict:
    """Declared properties, merged over oneOf/anyOf/allOf alternatives (record kinds)."""
    node = _resolve(node, root)
    props = dict(node.get("properties", {}))
    for key in ("oneOf", "anyOf", "allOf"):
        for alt in node.get(key, []):
            for name, sub in _properties(alt, root).items():
                props.setdefault(name, sub)
    return props


def _types(node: dict) -> list[str]:
    t = node.get("type")
    if isinstance(t, str):
        return [t]
    if isinstance(t, list):
        return [x for x in t if isinstance(x, str)]
    if "enum" in node:
        kinds = {type(v) for v in node["enum"] if v is not None}
        return ["string"] if kinds == {str} else ["integer"] if kinds == {int} else []
    if "const" in node:
        return ["string"] if isinstance(node["const"], str) else []
    return []


def _field(name: str, node: dict, root: dict, seen: tuple[str, ...]) -> dict:
    ref = node.get("$ref")
    if ref in seen:
        # a recursive definition (http.more holds http messages): its own level is JSON
        return {"name": name, "type": "JSON", "mode": "NULLABLE"}
    seen = (*seen, ref) if ref else seen
    node = _resolve(node, root)
    types = [t for t in _types(node) if t != "null"]
    if len(types) != 1:
        return {"name": name, "type": "JSON", "mode": "NULLABLE"}
    kind = types[0]
    if kind in _SCALARS:
        return {"name": name, "type": _SCALARS[kind], "mode": "NULLABLE"}
    if kind == "object":
        props = _properties(node, root)
        free = node.get("additionalProperties", True) is not False
        if not props or free:
            return {"name": name, "type": "JSON", "mode": "NULLABLE"}
        return {
            "name": name,
            "type": "RECORD",
            "mode": "NULLABLE",
            "fields": _fields(props, root, seen),
        }
    if kind == "array":
        items = node.get("items")
        if not isinstance(items, dict):
            return {"name": name, "type": "JSON", "mode": "NULLABLE"}
        inner = _field(name, items, root, seen)
        if inner["type"] == "JSON" or inner["mode"] == "REPEATED":
            return {"name": name, "type": "JSON", "mode": "NULLABLE"}
        return {**inner, "mode": "REPEATED"}
    return {"name": name, "type": "JSON", "mode": "NULLABLE"}


def _fields(props: dict, root: dict, seen: tuple[str, ...]) -> list[dict]:
    return [_field(name, sub, root, seen) for name, sub in props.items() if _NAME.match(name)]


def conforms(record: dict, fields: list[dict] | None = None, path: str = "") -> list[str]:
    """Why a load job would reject RECORD (empty: it loads), ignoring unknown keys it skips."""
    fields = bigquery_schema() if fields is None else fields
    problems: list[str] = []
    by_name = {f["name"]: f for f in fields}
    for key, value in record.items():
        field = by_name.get(key)
        if field is None:
            if _NAME.match(key):
                problems.append(f"{path}{key}: not in the schema")
            continue
        problems.extend(_check(field, value, f"{path}{key}"))
    return problems


def _check(field: dict, value, where: str) -> list[str]:
    if value is None or field["type"] == "JSON":
        return []
    if field["mode"] == "REPEATED":
        if not isinstance(value, list):
            return [f"{where}: REPEATED but {type(value).__name__}"]
        one = {**field, "mode": "NULLABLE"}
        out: list[str] = []
        for i, item in enumerate(value):
            if item is None:
                out.append(f"{where}[{i}]: null in a REPEATED field")
            else:
                out.extend(_check(one, item, f"{where}[{i}]"))
        return out
    kind = field["type"]
    if kind == "RECORD":
        if not isinstance(value, dict):
            return [f"{where}: RECORD but {type(value).__name__}"]
        return conforms(value, field["fields"], where + ".")
    ok = {
        "INT64": isinstance(value, int) and not isinstance(value, bool),
        "FLOAT64": isinstance(value, (int, float)) and not isinstance(value, bool),
        "STRING": isinstance(value, str),
        "BOOL": isinstance(value, bool),
    }.get(kind, True)
    return [] if ok else [f"{where}: {kind} but {type(value).__name__}"]
