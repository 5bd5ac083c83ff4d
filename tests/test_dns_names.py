"""The DNS decoder's own names of the usual types and classes are dnspython's, and
decoding the usual messages does not import dnspython (its import costs ~0.1 CPU s)."""

import subprocess
import sys

import dns.rdataclass
import dns.rdatatype

from pcaptool.decode.dns import CLASS_NAMES, TYPE_NAMES


def test_type_names_are_dnspythons():
    for value, name in TYPE_NAMES.items():
        assert dns.rdatatype.to_text(value) == name


def test_class_names_are_dnspythons():
    for value, name in CLASS_NAMES.items():
        assert dns.rdataclass.to_text(value) == name


def test_usual_messages_decode_without_importing_dnspython():
    # a query and an A + CNAME answer built here; then a TXT answer, which needs dnspython
    script = r"""
import struct, sys
from pcaptool.decode.dns import message
def name(n):
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"
q = name("www.example.com") + struct.pack("!HH", 1, 1)
query = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + q
answer = struct.pack("!HHHHHH", 7, 0x8180, 1, 2, 0, 0) + q
answer += b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, 7) + name("e.net")
answer += name("e.net") + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1])
rec = {}
message(query, rec, cut=False)
message(answer, rec, cut=False)
assert [a["data"] for a in rec["dns"]["answers"]] == ["e.net", "192.0.2.1"], rec
print("dns.rdata" in sys.modules, end=" ")
txt = struct.pack("!HHHHHH", 8, 0x8180, 0, 1, 0, 0)
txt += name("t.example") + struct.pack("!HHIH", 16, 1, 60, 3) + b"\x02hi"
message(txt, rec, cut=False)
print("dns.rdata" in sys.modules, rec["dns"]["answers"][0]["data"])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", '"hi"']
