"""Records from whatever the user names: captures, NDJSON parts, directories, gs:// prefixes.

Captures (pcap/pcapng, plain or gzip) are translated on the fly with the TCP analysis and
connection records on (`--flows`), so every table can be filled; NDJSON parts are read as
they are. Directories and gs:// prefixes are listed exactly as `pcaptool merge` lists them
(gs:// objects go through the same local cache).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from pcaptool.errors import CaptureFormatError, PcapToolError

NDJSON_SUFFIXES = (".json", ".json.gz", ".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")


def resolve(specs: list[str], cache: Path | None = None, timeout: float = 60.0) -> list[str]:
    """Local paths of every part SPECS name, downloading gs:// objects into CACHE."""
    from pcaptool.merge import parts as lib

    listed, _ = lib.resolve_parts(specs, None, None, lambda url, s: _gcs_parts(url, s, timeout))
    remote = [p for p in listed if p.gcs is not None]
    if remote:
        from pcaptool.storage.fetch import default_cache_dir, fetch

        paths, _stats = fetch([p.gcs for p in remote], cache or default_cache_dir(), 8, timeout)
        for part, path in zip(remote, paths, strict=True):
            part.path = str(path)
    return [p.path for p in listed]


def _gcs_parts(url: str, suffixes: tuple[str, ...], timeout: float):
    from pcaptool.merge.parts import Part
    from pcaptool.storage.fetch import list_objects

    return [
        Part(o.url, None, o.size, o.updated, o, listed=True)
        for o in list_objects(url, suffixes, timeout=timeout)
    ]


def records(paths: list[str], warn: Callable[[str], None] | None = None) -> Iterator[dict]:
    """Every record of PATHS in order; a corrupt input ends with a warning, not the run."""
    warn = warn or (lambda m: print(f"pcaptool: warning: {m}", file=sys.stderr))
    for path in paths:
        try:
            if path.endswith(NDJSON_SUFFIXES):
                yield from _ndjson_records(path, warn)
            else:
                yield from _capture_records(path)
        except (CaptureFormatError, PcapToolError) as exc:
            warn(f"{exc} (records before it are kept)")


def _ndjson_records(path: str, warn: Callable[[str], None]) -> Iterator[dict]:
    from pcaptool.capfile.reader import open_input

    stream = open_input(path)
    try:
        for lineno, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                warn(f"{path}:{lineno}: not JSON, skipped")
                continue
            if isinstance(rec, dict):
                yield rec
    finally:
        stream.close()


def _capture_records(path: str) -> Iterator[dict]:
    from pcaptool.capfile.reader import CaptureReader, open_input
    from pcaptool.tcp.analyzer import HttpAnalyzer
    from pcaptool.translate.serial import Translator

    stream = open_input(path)
    try:
        translator = Translator(Path(path).name, HttpAnalyzer(flows=True))
        yield from translator.records(CaptureReader(stream, path))
    finally:
        stream.close()
