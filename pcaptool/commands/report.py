"""`pcaptool report`: a run as one self-contained HTML page, or rich tables on a terminal."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from pcaptool.commands._options import (
    DUCK_MEMORY,
    CacheDir,
    DuckMemory,
    Quiet,
    Verbose,
    set_verbosity,
)
from pcaptool.errors import PcapToolError, UsageError


def report(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="FILES",
            help="Captures (.pcap/.pcapng, .gz), NDJSON parts, directories, gs:// prefixes.",
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option("-o", "--output", metavar="FILE", help="Write the HTML page to FILE."),
    ] = None,
    title: Annotated[str, typer.Option("--title", help="The page's title.")] = "pcaptool report",
    cache_dir: CacheDir = None,
    memory: DuckMemory = DUCK_MEMORY,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Summarise a run: latency, status codes, TCP trouble, top talkers, DNS, worst requests.

    With -o, one self-contained HTML file (inline SVG charts, no script; opens offline);
    without, the same numbers as tables on stdout. Every number is a query over the
    tables of `pcaptool query` (docs/query.md lists them).

    Example:

    \b
        pcaptool report gs://my-bucket/run1/ -o report.html
        pcaptool report capture.pcap
    """
    set_verbosity(quiet, verbose)
    from pcaptool.query.sources import records, resolve
    from pcaptool.query.tables import Tables
    from pcaptool.report.summary import summarize

    if not inputs:
        raise UsageError("name the parts to report on: files, directories or gs:// prefixes")
    started = time.monotonic()
    paths = resolve(inputs, cache_dir)
    with Tables(memory_limit=memory) as tables:
        tables.load(_progress(records(paths), quiet))
        summary = summarize(tables.db)
    if output is None:
        from pcaptool.report.terminal import show

        show(summary)
        return
    from pcaptool.report.page import render

    page = render(summary, title)
    try:
        Path(output).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise PcapToolError(f"cannot write {output}: {exc.strerror}") from None
    if not quiet:
        print(
            f"pcaptool: {output}: {len(page.encode())} bytes, {summary.totals['packets']} "
            f"packets, {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )


def _progress(records, quiet: bool):
    """A spinner with the record count on a terminal's stderr (rich), nothing elsewhere."""
    if quiet or not sys.stderr.isatty():
        yield from records
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(SpinnerColumn(), TextColumn("{task.completed} records"), transient=True) as bar:
        task = bar.add_task("reading", total=None)
        for i, rec in enumerate(records, 1):
            if i % 1000 == 0:
                bar.update(task, completed=i)
            yield rec
