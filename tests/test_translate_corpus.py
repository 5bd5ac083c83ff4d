"""Every capture of ../shared/corpus translates without a traceback into valid records."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from conftest import REPO, corpus_files, run_pcaptool

SCHEMA = json.loads((REPO / "pcaptool" / "schema" / "record.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

# Files the corpus MANIFEST says end in a read error after their good packets.
BROKEN = {"dpkt-truncated-file.pcap", "gopacket-pcapng-bad-shb-version.pcapng"}


def translated(path: Path) -> tuple[int, list[dict], str]:
    result = run_pcaptool("translate", str(path))
    return (
        result.returncode,
        # packet records only: HTTP/2 streams flushed at the end of input have no packet
        [r for r in map(json.loads, result.stdout.splitlines()) if "pcap" in r],
        result.stderr.decode(),
    )


CORPUS = corpus_files()
pytestmark = pytest.mark.skipif(
    not CORPUS, reason="../shared/corpus is absent; corpus tests need it"
)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_translates_without_traceback_and_every_record_is_valid(path: Path) -> None:
    code, records, stderr = translated(path)
    assert "Traceback" not in stderr
    if path.name in BROKEN:
        assert code == 1
        assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("pcaptool: error: ")
    else:
        assert code == 0, stderr
        assert stderr == ""
    for rec in records:
        errors = [e.message for e in VALIDATOR.iter_errors(rec)]
        assert not errors, (rec["pcap"]["num"], errors)
    assert [r["pcap"]["num"] for r in records if "pcap" in r] == list(range(1, len(records) + 1))


# The comparison with tshark (frames, addresses, ports, ICMP, ARP, VLAN, DNS, TLS) is
# tests/test_agreement.py: every family, every frame, the disagreements in docs/agreement.md.
