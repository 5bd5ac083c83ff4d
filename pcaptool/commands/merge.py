"""`pcaptool merge`: one capture (or one NDJSON stream) from many parts, local or gs://."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from pcaptool import fsmode
from pcaptool.commands._options import (
    Count,
    Fields,
    Quiet,
    ReadFiles,
    ReadFilter,
    Verbose,
    Where,
    set_verbosity,
    split_files_and_filter,
)
from pcaptool.errors import PcapToolError, UsageError
from pcaptool.stdio import refuse_terminal

FORMATS = ("pcap", "pcapng", "ndjson")


Inputs = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="FILES",
        help="Parts to merge: files, globs, directories (every part in them, in name "
        "order), gs://BUCKET/PREFIX (every part under the prefix), or - for stdin.",
        show_default=False,
    ),
]

Output = Annotated[
    str | None,
    typer.Option(
        "-o",
        "--output",
        metavar="FILE",
        help="Output file (.gz compresses it), or - for stdout.",
    ),
]

Append = Annotated[
    bool,
    typer.Option("-a", "--append", help="Concatenate in input order instead of merging by time."),
]

Fmt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-F",
        help="pcap, pcapng or ndjson. Default: ndjson for .json/.ndjson parts; pcap when "
        "every input is pcap of one link type; pcapng otherwise.",
        show_default=False,
    ),
]

SkipBad = Annotated[
    bool,
    typer.Option("--skip-bad", help="Report a corrupt or truncated part and merge the rest."),
]

ListOnly = Annotated[
    bool,
    typer.Option("--list", help="Print name, size, time range of each part; merge nothing."),
]

PartsCacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        envvar="PCAPTOOL_CACHE_DIR",
        help="Where gs:// parts are downloaded (default: ~/.cache/pcaptool/gcs).",
        show_default=False,
    ),
]

Jobs = Annotated[int, typer.Option("-j", "--jobs", min=1, help="Parallel downloads.")]

Timeout = Annotated[
    float,
    typer.Option("--timeout", min=1, help="Seconds to keep retrying a Cloud Storage request."),
]


def merge(
    inputs: Inputs = None,
    read: ReadFiles = None,
    count: Count = 0,
    bpf: ReadFilter = None,
    where: Where = None,
    fields: Fields = None,
    output: Output = None,
    append: Append = False,
    fmt: Fmt = None,
    skip_bad: SkipBad = False,
    list_only: ListOnly = False,
    cache_dir: PartsCacheDir = None,
    jobs: Jobs = 8,
    timeout: Timeout = 60.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Merge capture parts into one file ordered by time, like `mergecap -w`.

    The result equals `mergecap -w` on the same inputs packet for packet. Parts may be pcap or pcapng, gzip or plain, mixed; gs:// parts are downloaded into a cache that a rerun reuses. See docs/merge.md.

    Example:

    \b
        pcaptool merge gs://my-bucket/proj/svc/us-central1/rev/ -o full.pcap
        pcaptool merge parts/ -o - | tshark -r - -Y http
        pcaptool merge 'parts/*.json.gz' --format ndjson -o - | jq .message
        pcaptool merge gs://my-bucket/run1/ --list
        pcaptool merge parts/ -o web.pcap -f 'tcp port 8080' -c 1000
        pcaptool merge 'parts/*.json' -F ndjson -o - --where 'http.status >= 500'
    """
    set_verbosity(quiet, verbose)
    from pcaptool import merge as lib

    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    inputs, expression = split_files_and_filter(inputs, read, bpf)
    if not inputs:
        raise UsageError("name the parts to merge: files, directories, gs://BUCKET/PREFIX or -")
    if output is None and not list_only:
        raise UsageError("say where the merge goes: -o FILE, or -o - for stdout")
    if inputs.count("-") > 1:
        raise UsageError("stdin (-) can be given only once")
    selection = _selection(expression, where, fields)

    parts, ndjson = lib.resolve_parts(
        inputs, fmt, output, lambda url, suffixes: _gcs_parts(url, suffixes, timeout)
    )
    if ndjson and expression:
        raise UsageError("a BPF read filter applies to captures; filter NDJSON with --where")
    if not ndjson and (where or fields):
        raise UsageError("--where and --fields apply to NDJSON merges (-F ndjson)")
    cache = cache_dir or _default_cache()
    if list_only:
        _print_list(parts, cache)
        return
    _download(parts, cache, jobs, verbose, timeout)

    result = _run(lib, parts, output, ndjson, fmt, append, skip_bad, (expression, count), selection)
    if verbose:
        print(
            f"pcaptool: merged {result.packets} packets from {result.inputs} parts "
            f"into {output} ({result.format}); {len(result.skipped)} bad part(s) skipped",
            file=sys.stderr,
        )


def _run(lib, parts, output, ndjson: bool, fmt, append, skip_bad, read_filter, selection):
    """The merge itself, into `output`; read_filter is (BPF expression, -c count)."""
    from pcaptool.stdio import quiet_broken_pipe

    expression, count = read_filter

    def warn(message: str) -> None:
        print(f"pcaptool: warning: {message}", file=sys.stderr, flush=True)

    opened: list[BinaryIO] = []

    def open_output() -> BinaryIO:
        out = _open_output(output, binary=not ndjson)
        if ndjson and (selection[0] or selection[1] or count):
            from pcaptool.merge.select import RecordFilterOutput

            out = RecordFilterOutput(out, selection[0], selection[1], count)  # type: ignore[assignment]
        opened.append(out)
        return out

    # `merge … -o - | head`: the reader going away ends the merge quietly, exit 0
    with quiet_broken_pipe():
        try:
            if ndjson:
                return lib.merge_ndjson(parts, open_output, append, skip_bad, warn)
            if expression or count:
                return _merge_filtered(
                    lib, parts, open_output, fmt, append, skip_bad, warn, expression, count
                )
            return lib.merge_captures(parts, open_output, fmt, append, skip_bad, warn)
        finally:
            for out in opened:
                _close_output(out)


def _selection(expression: str | None, where: str | None, fields: str | None):
    """Every expression checked before anything is read or written (exit 2, no output file)."""
    from pcaptool.capfile.readfilter import check_expression
    from pcaptool.translate.select import compile_where, parse_fields

    if expression:
        check_expression(expression)
    return (compile_where(where) if where else None, parse_fields(fields) if fields else None)


def _merge_filtered(lib, parts, open_output, fmt, append, skip_bad, warn, expression, count):
    """The merge as mergecap makes it, then the read filter and -c, as tcpdump -r applies them."""
    import os

    from pcaptool.merge.select import refilter_capture, temporary_capture

    path, open_temp = temporary_capture()
    try:
        temp: list[BinaryIO] = []

        def open_once() -> BinaryIO:
            temp.append(open_temp())
            return temp[-1]

        try:
            result = lib.merge_captures(parts, open_once, fmt, append, skip_bad, warn)
        finally:
            for out in temp:
                out.close()
        result.packets = refilter_capture(path, open_output, expression, count)
        return result
    finally:
        os.unlink(path)


def _default_cache() -> Path:
    from pcaptool.storage.fetch import default_cache_dir

    return default_cache_dir()


def _gcs_parts(url: str, suffixes: tuple[str, ...], timeout: float):
    from pcaptool.merge.parts import Part
    from pcaptool.storage.fetch import list_objects

    return [
        Part(o.url, None, o.size, o.updated, o, listed=True)
        for o in list_objects(url, suffixes, timeout=timeout)
    ]


def _download(parts, cache: Path, jobs: int, verbose: bool, timeout: float) -> None:
    remote = [p for p in parts if p.gcs is not None]
    if not remote:
        return
    from pcaptool.storage.fetch import fetch

    paths, stats = fetch([p.gcs for p in remote], cache, jobs, timeout=timeout)
    for part, path in zip(remote, paths, strict=True):
        part.path = str(path)
    if verbose:
        print(
            f"pcaptool: {len(remote)} objects: {stats.downloaded} downloaded "
            f"({stats.downloaded_bytes} bytes), {stats.cached} from the cache {cache}",
            file=sys.stderr,
        )


def _print_list(parts, cache: Path) -> None:
    from pcaptool.merge import format_ns, summarize
    from pcaptool.storage.fetch import cache_path, is_cached

    out = sys.stdout
    out.write("name\tsize\tupdated\tfirst\tlast\tpackets\n")
    for part in parts:
        path = part.path
        if part.gcs is not None:
            # Never download for --list; a valid cached copy tells the time range too.
            cached = cache_path(cache, part.gcs)
            path = str(cached) if is_cached(cached, part.gcs) else None
        s = summarize(part, path)
        updated = s.updated.strftime("%Y-%m-%dT%H:%M:%SZ") if s.updated else "-"
        size = "-" if s.size is None else str(s.size)
        packets = "-" if s.packets is None else str(s.packets)
        row = [s.name, size, updated, format_ns(s.first_ns), format_ns(s.last_ns), packets]
        if s.error:
            row.append(f"error: {s.error}")
        out.write("\t".join(row) + "\n")
    out.flush()


def _open_output(output: str | None, binary: bool) -> BinaryIO:
    if output == "-" or output is None:
        if binary:
            refuse_terminal(sys.stdout, "capture bytes", instead="-o FILE")
        sys.stdout.flush()
        return open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)  # noqa: SIM115
    try:
        raw = fsmode.create(output, exclusive=False, buffering=1 << 20)  # closed by _close_output
    except OSError as exc:
        raise PcapToolError(f"cannot write {output}: {exc.strerror}") from None
    if output.endswith(".gz"):
        from isal import igzip

        return igzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1)  # type: ignore[return-value]
    return raw


def _close_output(out: BinaryIO) -> None:
    inner = getattr(out, "fileobj", None)
    out.close()
    if isinstance(inner, io.IOBase):
        inner.close()
