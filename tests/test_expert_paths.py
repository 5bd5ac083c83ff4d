"""The steady path of the TCP expert analysis gives what the general path gives (every
segment, every value, the connection outcomes), and `translate --no-analysis` /
PCAP_TCP_ANALYSIS=false turn the analysis off."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from test_expert import ACK, FIN, MS, PSH, RST, SYN, Talk
from typer.testing import CliRunner

from pcaptool.cli import app
from pcaptool.tcp.expert import TcpExpert
from pcaptool.tcp.outcome import tcp_outcome

C, S = ("10.0.0.1", 40000), ("10.0.0.9", 80)
STEP = st.tuples(
    st.booleans(),  # from the client
    st.sampled_from([ACK, ACK, PSH | ACK, ACK, SYN, SYN | ACK, FIN | ACK, RST | ACK]),
    st.sampled_from([0, 0, 1, 100, 1448]),  # payload bytes
    st.sampled_from([0, 0, 0, 1, -1, 100, -100, 1 << 31]),  # sequence number offset
    st.sampled_from([0, 0, 0, 1, -1, 1448, -1448]),  # acknowledgment offset
    st.sampled_from([0, 512, 65535, 65535]),  # window
    st.sampled_from([None, None, None, 0, 7]),  # window scale option
    st.sampled_from([0, 1, 30, 1000]),  # µs since the previous segment
)


def run(steps, shortcut: bool, max_segments: int = 10_000):
    ex = TcpExpert(shortcut=shortcut, max_segments=max_segments)
    nxt = {True: 0xFFFFFF00, False: 1000}  # the client's numbers wrap around 2^32
    ts, out = 1_700_000_000_000_000_000, []
    for num, (client, flags, size, dseq, dack, win, ws, dt) in enumerate(steps, 1):
        ts += dt * 1000
        (src, sport), (dst, dport) = (C, S) if client else (S, C)
        seq = (nxt[client] + dseq) & 0xFFFFFFFF
        ack = (nxt[not client] + dack) & 0xFFFFFFFF
        size = 0 if flags & SYN else size
        sack = [[ack, (ack + 100) & 0xFFFFFFFF]] if dack and not size else None
        a = ex.segment(num, ts, src, sport, dst, dport, seq, ack, flags, win, size, ws, sack)
        out.append(a)
        nxt[client] = (seq + size + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
    hit = ex.find(*C, *S)
    return out, None if hit is None else tcp_outcome(hit[0], hit[1], "end")


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=60))
def test_steady_path_equals_the_general_path(steps):
    assert run(steps, True) == run(steps, False)


@settings(max_examples=100, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=60), st.sampled_from([0, 1, 2]))
def test_the_paths_agree_when_the_segments_kept_are_few(steps, max_segments):
    assert run(steps, True, max_segments) == run(steps, False, max_segments)


def test_a_long_in_order_transfer_takes_the_steady_path_with_equal_results():
    steps = [(True, SYN, 0, 0, 0, 65535, 7, 10), (False, SYN | ACK, 0, 0, 0, 65535, 7, 10)]
    steps += [(True, ACK, 0, 0, 0, 65535, None, 10)]
    for _ in range(200):
        steps += [(False, PSH | ACK, 1448, 0, 0, 65535, None, 5)] * 3
        steps += [(True, ACK, 0, 0, 0, 65535, None, 5)]
    fast, slow = run(steps, True), run(steps, False)
    assert fast == slow
    assert sum(1 for a in fast[0] if a and "bytes_in_flight" in a) == 600


def retransmission(tmp_path):
    t = Talk()
    t.handshake()
    first = t.c(PSH | ACK, b"a" * 50)
    again = t.c(PSH | ACK, b"a" * 50, seq=1000, dt=300 * MS)
    return t.write(tmp_path / "r.pcap"), first, again


def test_no_analysis_turns_tcp_analysis_off(tmp_path, monkeypatch):
    path, _, again = retransmission(tmp_path)
    monkeypatch.delenv("PCAP_TCP_ANALYSIS", raising=False)
    runner = CliRunner()
    on = runner.invoke(app, ["translate", str(path)])
    off = runner.invoke(app, ["translate", "--no-analysis", str(path)])
    env = runner.invoke(app, ["translate", str(path)], env={"PCAP_TCP_ANALYSIS": "false"})
    assert on.exit_code == off.exit_code == env.exit_code == 0, (off.output, env.output)
    recs = {k: [json.loads(x) for x in r.stdout.splitlines()] for k, r in
            (("on", on), ("off", off), ("env", env))}  # fmt: skip
    rt = recs["on"][again - 1]
    assert rt["severity"] == "WARNING" and "retransmission" in rt["tcp"]["analysis"]["flags"]
    for k in ("off", "env"):
        assert len(recs[k]) == len(recs["on"])
        assert not any("analysis" in r["tcp"] for r in recs[k])
        assert recs[k][again - 1]["severity"] != "WARNING"
        assert not recs[k][again - 1]["message"].endswith("]")
