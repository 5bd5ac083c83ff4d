"""pcaptool: packet capture and analysis for serverless containers.

The library under the CLI: open a capture, iterate its packets, translate them to the
records `pcaptool translate` writes (docs/schema.md)::

    import pcaptool

    for rec in pcaptool.records("capture.pcap", http=False):
        if "dns" in rec:
            print(rec["pcap"]["num"], rec["dns"]["questions"][0]["name"])

    with pcaptool.open_capture("capture.pcap.gz") as reader:
        for pkt in reader:
            print(pkt.ts_ns, pkt.wirelen, len(pkt.data))

Bad input never raises anything but `CaptureFormatError` (a broken file, after the
packets before the break); a packet that does not decode is a record with an `error`.
"""

from pcaptool.api import TranslateOptions, open_capture, packets, records
from pcaptool.capfile.reader import CaptureReader, Packet
from pcaptool.errors import CaptureFormatError, PcapToolError

__version__ = "0.1.0"

__all__ = [
    "CaptureFormatError",
    "CaptureReader",
    "Packet",
    "PcapToolError",
    "TranslateOptions",
    "__version__",
    "open_capture",
    "packets",
    "records",
]
