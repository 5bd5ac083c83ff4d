"""Every command documents itself, in help a shell user can read at any width.

The command list comes from the app itself, so a new command is checked without editing
this file. In-process with typer's CliRunner (no subprocess needed for help).
"""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from pcaptool import __version__
from pcaptool.cli import app

CLICK = typer.main.get_command(app)


def all_commands(group=CLICK, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the app: ('capture',), ('healthcheck', 'serve'), ..."""
    out = []
    for name, cmd in getattr(group, "commands", {}).items():
        out.append((*path, name))
        out += all_commands(cmd, (*path, name))
    return out


COMMANDS = all_commands()


def command(path: tuple[str, ...]):
    cmd = CLICK
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def help_text(path: tuple[str, ...], columns: int = 80) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_app_has_the_commands_the_readme_lists() -> None:
    top = {p[0] for p in COMMANDS}
    assert {"capture", "translate", "rotate", "compress", "upload", "schedule", "merge"} <= top
    assert ("healthcheck", "serve") in COMMANDS


def test_top_level_help_lists_every_subcommand() -> None:
    text = help_text(())
    for name in {p[0] for p in COMMANDS}:
        assert re.search(rf"^\s+{name}\s", text, re.M), name


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_each_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    text = help_text(path)
    assert "Example" in text, f"`pcaptool {' '.join(path)} --help` shows no example"
    assert "pcaptool" in text.split("Example", 1)[1]


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_no_help_text_is_cut_off_or_noisy(path: tuple[str, ...], columns: int) -> None:
    """Every option's help, every example line, in full; no `<str>`/`<bool>` type labels."""
    text = help_text(path, columns)
    assert "…" not in text and "╭" not in text
    assert not re.search(r"<(str|bool|int|float|path|list\[str\]|int range|float range)>", text)
    squashed = _squash(text)
    cmd = command(path)
    for param in cmd.params:
        if getattr(param, "help", None) and not getattr(param, "hidden", False):
            assert _squash(param.help) in squashed, (param.name, param.help)
    doc = cmd.help or ""
    if "Example:" in doc:
        for line in doc.split("Example:", 1)[1].splitlines():
            line = line.strip().replace("\b", "")
            if line.startswith("pcaptool "):
                assert line in text, f"example cut or rewrapped at {columns} columns: {line}"


def test_short_options_mean_one_thing_across_commands() -> None:
    """-f is a filter everywhere, -F a format everywhere (as tcpdump, tshark, mergecap)."""
    meaning: dict[str, set[str]] = {}
    for path in COMMANDS:
        for param in command(path).params:
            longs = [o for o in param.opts if o.startswith("--")]
            for short in (o for o in param.opts if re.fullmatch(r"-\w", o)):
                meaning.setdefault(short, set()).update(longs)
    clashes = {k: v for k, v in meaning.items() if len(v) > 1}
    # -p is --port in both healthcheck subcommands: one meaning
    assert clashes == {}, clashes
    assert meaning["-f"] == {"--filter"}
    assert meaning["-F"] == {"--format"}


def test_every_command_takes_quiet_and_verbose() -> None:
    for path in COMMANDS:
        cmd = command(path)
        if getattr(cmd, "commands", None):
            continue  # a group: its subcommands take them
        opts = {o for p in cmd.params for o in p.opts}
        assert {"-q", "--quiet", "-v", "--verbose"} <= opts, path


def test_file_arguments_are_named_files_everywhere() -> None:
    for path in COMMANDS:
        for param in command(path).params:
            if (
                param.param_type_name == "argument"
                and param.nargs == -1
                and path[0] not in ("schedule", "relay")
            ):
                assert param.metavar == "FILES", (path, param.name, param.metavar)


def test_shell_completion_is_offered_and_works() -> None:
    text = help_text(())
    assert "--install-completion" in text and "--show-completion" in text
    result = CliRunner().invoke(
        app, [], env={"_PCAPTOOL_COMPLETE": "complete_bash", "COMP_WORDS": "pcaptool tr",
                      "COMP_CWORD": "1"},
        prog_name="pcaptool",
    )  # fmt: skip
    assert "translate" in result.stdout


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"pcaptool {__version__}\n"
