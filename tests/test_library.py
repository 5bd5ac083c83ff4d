"""The public library API (pcaptool.__all__) and its documented example, run as written."""

from __future__ import annotations

import gzip
import io
import re
import shutil
from pathlib import Path

import pytest

import pcaptool
from conftest import REPO

GOLDEN = Path(__file__).resolve().parent / "golden"
DOC = REPO / "docs" / "library.md"


def _examples(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def test_every_public_name_is_documented() -> None:
    text = DOC.read_text()
    for name in pcaptool.__all__:
        if name != "__version__":
            assert f"`{name}" in text, name


@pytest.mark.parametrize("doc", [DOC, REPO / "README.md", REPO / "pcaptool" / "__init__.py"])
def test_documented_examples_run(doc: Path, tmp_path, monkeypatch, capsys) -> None:
    shutil.copy(GOLDEN / "dns_tls.pcap", tmp_path / "capture.pcap")
    (tmp_path / "capture.pcap.gz").write_bytes(
        gzip.compress((GOLDEN / "dns_tls.pcap").read_bytes())
    )
    monkeypatch.chdir(tmp_path)
    if doc.suffix == ".py":
        blocks = [re.search(r"::\n\n(.*?)\n\nBad", pcaptool.__doc__, re.S).group(1)]
        blocks = ["\n".join(line[4:] for line in blocks[0].splitlines())]
    else:
        blocks = [b for b in _examples(doc) if "pcaptool." in b]
    assert blocks
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {})
    out = capsys.readouterr().out
    assert out  # each example prints what it found
    if doc == DOC:
        assert "www.example.com" in out and "example.com" in out


def test_translate_equals_the_cli_records() -> None:
    import json

    from conftest import run_pcaptool

    cli = [
        json.loads(x)
        for x in run_pcaptool(
            "translate", "--run-id", "r1", str(GOLDEN / "dns_tls.pcap")
        ).stdout.splitlines()
    ]
    assert list(pcaptool.records(GOLDEN / "dns_tls.pcap", run_id="r1")) == cli


def test_file_objects_options_and_errors() -> None:
    data = (GOLDEN / "dns_tls.pcap").read_bytes()
    recs = list(pcaptool.records(io.BytesIO(data), pcaptool.TranslateOptions(http=False)))
    assert [r["pcap"]["num"] for r in recs] == [1, 2, 3, 4]
    assert [p.wirelen for p in pcaptool.packets(io.BytesIO(data))] == [
        r["pcap"]["len"] for r in recs
    ]
    with pytest.raises(ValueError):
        list(pcaptool.records(io.BytesIO(data), http=False, flows=True))
    with pytest.raises(pcaptool.CaptureFormatError):
        list(pcaptool.records(io.BytesIO(data[:40])))
    with pytest.raises(pcaptool.CaptureFormatError):
        list(pcaptool.packets("/nonexistent/capture.pcap"))
