"""Docs that must not drift from the code: the schema page names every schema key."""

from __future__ import annotations

import json
import re

from conftest import REPO

SCHEMA = json.loads((REPO / "pcaptool" / "schema" / "record.schema.json").read_text())
SCHEMA_DOC = (REPO / "docs" / "schema.md").read_text()


def property_names(node: dict, path: str = "") -> set[str]:
    names = set()
    for key, sub in node.get("properties", {}).items():
        names.add(key)
        names |= property_names(sub, f"{path}.{key}")
        if isinstance(sub.get("items"), dict):
            names |= property_names(sub["items"], f"{path}.{key}[]")
    return names


def test_schema_page_names_every_key() -> None:
    documented = set(re.findall(r"`([A-Za-z0-9_./]+)`", SCHEMA_DOC))
    documented |= {part for name in documented for part in name.split(".")}
    missing = sorted(property_names(SCHEMA) - documented)
    assert not missing, f"docs/schema.md does not name: {missing}"
