"""Every command documents itself: --help works and shows an example."""

from __future__ import annotations

import pytest

from conftest import run_pcaptool

COMMANDS = [
    "capture",
    "translate",
    "rotate",
    "compress",
    "upload",
    "schedule",
    "merge",
    "healthcheck",
]


def test_top_level_help_lists_every_subcommand() -> None:
    result = run_pcaptool("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout.decode()


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_help_with_an_example(name: str) -> None:
    result = run_pcaptool(name, "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "Example" in text, f"`pcaptool {name} --help` shows no example"
    assert "pcaptool" in text.split("Example", 1)[1]


def test_version() -> None:
    result = run_pcaptool("--version")
    assert result.returncode == 0
    assert result.stdout.decode().startswith("pcaptool ")
