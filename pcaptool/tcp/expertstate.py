"""The state of the TCP expert analysis (pcaptool/tcp/expert.py): one `Side` per direction,
Wireshark's tcp_flow_t with its sequence info, and one `Conn` per conversation, which also
keeps what the connection record needs (pcaptool/tcp/outcome.py)."""

from __future__ import annotations

M = 0xFFFFFFFF
ACKED_UNSEEN = M  # Wireshark's (guint32)-1 dupacknum after an ACKed unseen segment


class Side:
    """The analysis state of one direction (Wireshark's tcp_flow_t and its seq info)."""

    __slots__ = (
        "base_set",
        "base_seq",
        "nextseq",
        "nextseq_frame",
        "nextseq_ts",
        "maxseqtobeacked",
        "lastack",
        "lastack_ts",
        "lastnondupack",
        "dupacknum",
        "window",
        "win_scale",
        "first_ack",
        "valid_bif",
        "lastflags",
        "segs",
        "sack",
        "push_bytes",
        "push_last",
        "calm",
        "shift",
        # for the connection record (pcaptool/tcp/outcome.py)
        "bytes",
        "rt_segs",
        "rt_bytes",
        "dupacks",
        "zw_start",
        "zw_time",
    )

    def __init__(self) -> None:
        self.base_set = False
        self.base_seq = 0
        self.nextseq = 0  # 0: not known yet (as in Wireshark)
        self.nextseq_frame = 0
        self.nextseq_ts = 0
        self.maxseqtobeacked = 0
        self.lastack = 0
        self.lastack_ts = 0
        self.lastnondupack = 0
        self.dupacknum = 0  # unsigned, as Wireshark's: ACKED_UNSEEN counts as >= 2
        self.window = M  # G_MAXUINT32 until this side sends, as in Wireshark
        self.win_scale = -1  # -1 unknown, -2 not used, else the shift
        self.first_ack = False
        self.valid_bif = True
        self.lastflags = 0
        # unacknowledged segments, oldest first: (seq, nextseq, frame, ts)
        self.segs: list[tuple[int, int, int, int]] = []
        self.sack = 0  # bytes in the SACK blocks of this direction's last segment
        self.push_bytes = 0
        self.push_last = False
        # past the handshake, any zero window and any loss: the steady path may take
        # this side's segments and its peer's (pcaptool/tcp/expertsteady.py)
        self.calm = False
        self.shift = -1  # the shift of its window for the window-full test (-1: no test)
        self.bytes = 0
        self.rt_segs = 0
        self.rt_bytes = 0
        self.dupacks = 0
        self.zw_start = 0  # when this side advertised a zero window (0: it does not)
        self.zw_time = 0


class Conn:
    """Both directions of one TCP conversation."""

    __slots__ = (
        "sides",
        "mru_syn",
        "first_rtt",
        "data",
        "fins",
        "syns",
        "syn_first",
        "syn_last",
        "syn_side",
        "synack",
        "rst_side",
        "rst_bytes",
        "fin_side",
        "last_ts",
        "icmp",
    )

    def __init__(self) -> None:
        self.sides = (Side(), Side())
        self.mru_syn = 0
        self.first_rtt = 0
        self.data = False  # payload seen in either direction
        self.fins = 0  # bit 1 << side: that side sent a FIN
        self.syns = 0  # SYNs without ACK sent (1 + retries)
        self.syn_first = self.syn_last = 0
        self.syn_side = -1  # the side that sent the SYN (the originator)
        self.synack = False
        self.rst_side = -1  # the side whose RST came first
        self.rst_bytes = 0  # payload bytes both ways before it
        self.fin_side = -1  # the side whose FIN came first
        self.last_ts = 0
        self.icmp: list[dict] = []  # ICMP errors quoting this connection (at most 8)
