"""TCP expert analysis on the records: `tcp.analysis`, Wireshark's Info tags at the end of
`message`, the severity the flags call for (pcaptool/tcp/expert.py does the analysis)."""

from __future__ import annotations

from pcaptool.decode.tcp import FLAG_BITS
from pcaptool.tcp.expert import TcpExpert
from pcaptool.tcp.expertflags import FLAG_INFO, NOTICE_FLAGS, WARNING_FLAGS

_NAMES_CACHE: dict[int, tuple[list[str], list]] = {}
SEVERITY_RANK = {"DEFAULT": 0, "DEBUG": 1, "INFO": 2, "NOTICE": 3, "WARNING": 4, "ERROR": 5}


def _names(flags: int) -> tuple[list[str], list[str | None]]:
    """(tshark field names, Info tags in Wireshark's call order; None: the Dup ACK tag)."""
    hit = _NAMES_CACHE.get(flags)
    if hit is None:
        names: list[str] = []
        tags: list[str | None] = []
        for bit, fields, tag in FLAG_INFO:
            if flags & bit:
                names.extend(n for n in fields if n not in names)
                tags.append(tag)
        hit = _NAMES_CACHE[flags] = (names, tags)
    return hit


def describe(analysis: dict) -> tuple[list[str], str, str | None]:
    """(flag names, the Info tags as one text, the severity they call for, or None).

    The tags read as in Wireshark's Info column, where each is put in front of the last.
    """
    bits = analysis.get("flags", 0)
    names, tags = _names(bits)
    text = []
    for tag in reversed(tags):
        if tag is None:
            tag = f"[TCP Dup ACK {analysis['duplicate_ack_frame']}#{analysis['duplicate_ack_num']}]"
        text.append(tag)
    if analysis.get("mid_data_reset"):
        text.append("[TCP Reset mid-data]")
    severity = "WARNING" if bits & WARNING_FLAGS else "NOTICE" if bits & NOTICE_FLAGS else None
    if analysis.get("mid_data_reset"):
        severity = "WARNING"
    return names, " ".join(text), severity


_BITS: dict[str, int] = {}


def flag_bits(letters: str) -> int:
    """The flags byte of tcpdump's letters (`S.`, `FP.`, …; `none`); memoised."""
    bits = _BITS.get(letters)
    if bits is None:
        bits = _BITS[letters] = sum(b for b, _, c in FLAG_BITS if c in letters)
    return bits


def annotate(rec: dict, tcp: dict, analysis: dict) -> str:
    """Put `analysis` on the record as `tcp.analysis`; raise its severity; return the tags."""
    bits = analysis.pop("flags", 0)
    if bits or "mid_data_reset" in analysis:
        names, tags, severity = describe({**analysis, "flags": bits})
        if names:
            analysis = {"flags": names, **analysis}
        if severity and SEVERITY_RANK[severity] > SEVERITY_RANK.get(rec["severity"], 0):
            rec["severity"] = severity
    else:
        tags = ""
    tcp["analysis"] = analysis
    return tags


def on_tcp(
    expert: TcpExpert, rec: dict, seg: dict, src: str, dst: str, ts: int, bits: int | None = None
) -> str:
    """Analyse the decoded TCP header `seg` of record `rec`; return the Info tags ("" if none)."""
    return analyse(
        expert,
        rec,
        seg,
        rec["pcap"]["num"],
        ts,
        src,
        seg["sport"],
        dst,
        seg["dport"],
        seg["seq"],
        seg["ack"],
        flag_bits(seg["flags_str"]) if bits is None else bits,
        seg["window"],
        seg["len"],
    )


def analyse(
    expert: TcpExpert,
    rec: dict,
    seg: dict,
    num: int,
    ts: int,
    src: str,
    sport: int,
    dst: str,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    seglen: int,
) -> str:
    """`on_tcp` with the header's values as the translator has read them already.

    The payload length is the one the IP header gives, as Wireshark's: a packet the snap
    length cut short still counts with its length on the wire. A header whose options are
    cut short is analysed too (without its options), as Wireshark does.
    """
    ip = rec["ip"]
    if "MF" in ip.get("flags", ()) and "fragment" not in ip:
        return ""  # a first fragment: Wireshark analyses the reassembled datagram only
    opts = seg.get("options")
    ws = sack = None
    if opts is not None and (len(opts) != 1 or "ts" not in opts):  # not timestamps only
        ws = opts.get("wscale")
        sack = opts.get("sack")
    if rec["pcap"]["truncated"]:
        seglen = _wire_seglen(ip, seg, seglen)
    a = expert.segment(num, ts, src, sport, dst, dport, seq, ack, flags, window, seglen, ws, sack)
    if a is None:
        return ""
    if "flags" not in a and "mid_data_reset" not in a:  # values only: nothing to tag
        seg["analysis"] = a
        return ""
    return annotate(rec, seg, a)


def _wire_seglen(ip: dict, seg: dict, captured: int) -> int:
    """The TCP payload length the IP header announces (IPv6 with extension headers: the
    captured length, as those headers' sizes are not kept)."""
    if ip["version"] == 4:
        return max(ip["len"] - ip["hdr_len"] - seg["hdr_len"], captured)
    if "ext" in ip:
        return captured
    return max(ip["len"] - 40 - seg["hdr_len"], captured)
