"""The flag bits of the TCP expert analysis, their tshark names and Info tags."""

from __future__ import annotations

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
SFR = SYN | FIN | RST

# analysis flag bits, in Wireshark's order of display
RETRANSMISSION = 0x0001
LOST_PACKET = 0x0002
ACK_LOST_PACKET = 0x0004
KEEP_ALIVE = 0x0008
DUPLICATE_ACK = 0x0010
ZERO_WINDOW = 0x0020
ZERO_WINDOW_PROBE = 0x0040
ZERO_WINDOW_PROBE_ACK = 0x0080
KEEP_ALIVE_ACK = 0x0100
OUT_OF_ORDER = 0x0200
FAST_RETRANSMISSION = 0x0400
WINDOW_UPDATE = 0x0800
WINDOW_FULL = 0x1000
REUSED_PORTS = 0x2000
SPURIOUS_RETRANSMISSION = 0x4000

# bit -> (tshark field names it sets, Info column tag); a fast or spurious retransmission
# also sets tcp.analysis.retransmission, as tshark's expert info does
FLAG_INFO = (
    (REUSED_PORTS, ("reused_ports",), "[TCP Port numbers reused]"),
    (RETRANSMISSION, ("retransmission",), "[TCP Retransmission]"),
    (FAST_RETRANSMISSION, ("fast_retransmission", "retransmission"), "[TCP Fast Retransmission]"),
    (
        SPURIOUS_RETRANSMISSION,
        ("spurious_retransmission", "retransmission"),
        "[TCP Spurious Retransmission]",
    ),
    (OUT_OF_ORDER, ("out_of_order",), "[TCP Out-Of-Order]"),
    (LOST_PACKET, ("lost_segment",), "[TCP Previous segment not captured]"),
    (ACK_LOST_PACKET, ("ack_lost_segment",), "[TCP ACKed unseen segment]"),
    (WINDOW_UPDATE, ("window_update",), "[TCP Window Update]"),
    (WINDOW_FULL, ("window_full",), "[TCP Window Full]"),
    (KEEP_ALIVE, ("keep_alive",), "[TCP Keep-Alive]"),
    (KEEP_ALIVE_ACK, ("keep_alive_ack",), "[TCP Keep-Alive ACK]"),
    (DUPLICATE_ACK, ("duplicate_ack",), None),  # tag with the numbers: [TCP Dup ACK f#n]
    (ZERO_WINDOW_PROBE, ("zero_window_probe",), "[TCP ZeroWindowProbe]"),
    (ZERO_WINDOW, ("zero_window",), "[TCP ZeroWindow]"),
    (ZERO_WINDOW_PROBE_ACK, ("zero_window_probe_ack",), "[TCP ZeroWindowProbeAck]"),
)
FLAG_NAMES = tuple(dict.fromkeys(n for _, names, _ in FLAG_INFO for n in names))
ANY_RETRANSMISSION = RETRANSMISSION | FAST_RETRANSMISSION | SPURIOUS_RETRANSMISSION
WARNING_FLAGS = ANY_RETRANSMISSION | ZERO_WINDOW | LOST_PACKET
NOTICE_FLAGS = OUT_OF_ORDER | DUPLICATE_ACK | ACK_LOST_PACKET | WINDOW_FULL | REUSED_PORTS
NOTICE_FLAGS |= ZERO_WINDOW_PROBE | ZERO_WINDOW_PROBE_ACK
