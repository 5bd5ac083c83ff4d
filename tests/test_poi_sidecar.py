"""The sidecar with PCAP_POI_TARGET: the capture is streamed beside the parts (issue 16).

The sidecar captures a veth (default filter) while an application sends steady UDP across
it; the PCAP-over-IP receiver runs in the peer namespace, so the stream crosses the very
interface being captured. Every packet sent is in the parts, the stream holds exactly the
packets of the parts, and none of the stream's own connection is captured.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

from netns import Lab
from test_entrypoint import Sidecar, free_port, port_open, sidecar_env, wait_for

from conftest import needs_root
from pcaptool.capfile.reader import read_packets

RECEIVER = textwrap.dedent(
    """
    import os, socket, sys
    host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(4)
    open(os.path.join(out, "listening"), "w").close()
    n = 0
    while True:
        conn, peer = s.accept()
        tmp = os.path.join(out, f".conn{n}")
        with conn, open(tmp, "wb") as f:
            while data := conn.recv(65536):
                f.write(data)
        os.rename(tmp, os.path.join(out, f"conn{n}-{peer[1]}.pcap"))
        n += 1
    """
)


def packets(paths: list[Path]) -> list[tuple[int, bytes]]:
    """(µs time stamp, bytes) of each packet: the stream's records carry microseconds."""
    return [(p.ts_ns // 1000, p.data) for path in paths for p in read_packets(path)]


@needs_root
def test_the_stream_holds_the_packets_of_the_parts(tmp_path):
    hc_port, rx_port = free_port(), free_port()
    streams = tmp_path / "rx"
    streams.mkdir()
    with Lab(root=True) as veth:
        rx_host = veth.addr(0, 2)
        receiver = veth.popen(
            veth.peer, sys.executable, "-c", RECEIVER, rx_host, str(rx_port), str(streams)
        )
        env = sidecar_env(
            tmp_path,
            PCAP_IFACE=veth.host_if,
            GCS_MOUNT=str(tmp_path / "pcap"),
            PCAP_ROTATE_SECS="2",
            PCAP_HC_PORT=str(hc_port),
            PCAP_POI_TARGET=f"{rx_host}:{rx_port}",
            GCE_METADATA_HOST="127.0.0.1:9",  # no metadata server: answered at once
        )
        sidecar = None
        try:
            wait_for(lambda: (streams / "listening").exists(), 15, "the receiver")
            sidecar = Sidecar(env, tmp_path)
            wait_for(lambda: port_open(hc_port), 30, "the health port")
            wait_for(lambda: (tmp_path / "ready").exists(), 30, "capture ready")
            time.sleep(0.5)
            sent = veth.send_udp(2000, size=300, seconds=5)
            time.sleep(1)
            rc, _ = sidecar.stop()
            wait_for(lambda: list(streams.glob("conn*.pcap")), 15, "the end of the stream")
        finally:
            if sidecar is not None:
                sidecar.kill()
            receiver.kill()
            receiver.wait()
        err = sidecar.err.read_text()
        assert rc == 0, err[-4000:]

    parts = sorted((tmp_path / "pcap").rglob("*.pcap*"))
    assert len(parts) >= 3, parts
    in_parts = packets(parts)
    udp = [d for _, d in in_parts if d[23] == 17 and d[36:38] == (9999).to_bytes(2, "big")]
    assert len(udp) == sent, f"{len(udp)} of {sent} datagrams in the parts"
    [conn] = streams.glob("conn*.pcap")
    local_port = int(conn.stem.split("-")[1])
    assert 61000 <= local_port <= 61099, local_port  # from PCAP_SELF_PORTS
    assert packets([conn]) == in_parts  # the same packets, the same order, the same times
    own = [
        d for _, d in in_parts if d[23] == 6 and rx_port.to_bytes(2, "big") in (d[34:36], d[36:38])
    ]
    assert not own, f"{len(own)} packets of the stream's own connection were captured"
    logs = sidecar.stderr_json()
    summary = next(x["poi"] for x in logs if "streamed" in x.get("poi", {}))
    assert summary["streamed"] == len(in_parts) and summary["dropped"] == 0, summary


def test_a_bad_target_is_one_line_and_exit_2(tmp_path):
    from test_entrypoint import run_entrypoint

    env = sidecar_env(tmp_path, PCAP_IFACE="lo", PCAP_POI_TARGET="no-port", GCS_MOUNT=str(tmp_path))
    r = run_entrypoint(env | {"PCAP_POI_BACKLOG": "lots"})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and "PCAP_POI_TARGET='no-port'" in lines[0], r.stderr
    assert "PCAP_POI_BACKLOG='lots'" in lines[1]
