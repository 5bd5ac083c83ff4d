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


def _block_after(text: str, start: str, end: str) -> str:
    i = text.index(start)
    return text[i : text.index(end, i + len(start))]


def test_readme_settings_table_equals_the_sidecar_docs() -> None:
    readme = (REPO / "README.md").read_text()
    sidecar = (REPO / "docs" / "sidecar.md").read_text()
    head = "| Variable | Default | Meaning |"
    assert _block_after(readme, head, "\n\n") == _block_after(sidecar, head, "\n\n")


def test_readme_jq_recipes_equal_the_tested_ones() -> None:
    """The tests run docs/sidecar.md's jq recipes on a real run; the README shows the same."""
    readme = (REPO / "README.md").read_text()
    sidecar = (REPO / "docs" / "sidecar.md").read_text()

    def recipes(text: str) -> str:
        block = text[text.index("jq on the NDJSON") :]
        return _block_after(block, "```sh", "```\n")

    assert recipes(readme) == recipes(sidecar)


def test_readme_links_resolve() -> None:
    readme = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(((?:docs|examples)/[^)#]+)", readme):
        assert (REPO / target).exists(), target
