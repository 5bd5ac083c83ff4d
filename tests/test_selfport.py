"""pcaptool's own connections never land in the capture (PCAP_SELF_PORTS, issue 16).

The end-to-end test runs fake-gcs-server inside a network namespace reached over a veth
(not loopback), the sidecar capturing that veth with the default filter and 2 s parts
while an application sends steady UDP across it and health probes come across it, and
reads every uploaded part back. (DNS lookups, the health port's filter and a proxy:
tests/test_selfport_own.py.)
"""

from __future__ import annotations

import gzip
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from gcs_fixtures import fake_gcs_binary
from netns import Lab
from test_entrypoint import Sidecar, free_port, port_open, sidecar_env, wait_for

from conftest import needs_root, run_pcaptool
from pcaptool.errors import UsageError
from pcaptool.sidecar import selfport

SELF = (61000, 61099)


def test_parse_and_refuse():
    assert selfport.parse("61000-61099") == SELF
    assert selfport.parse("61000") == (61000, 61000)
    assert selfport.parse("") is None and selfport.parse("DISABLED") is None
    for bad in ("80-90", "61099-61000", "61000-70000", "a-b", "61000-"):
        with pytest.raises(UsageError):
            selfport.parse(bad)


def test_the_filter_always_excludes_the_range_even_a_raw_one():
    r = run_pcaptool("capture", "--print-filter", "--self-ports", "61000-61099")
    assert r.returncode == 0, r.stderr
    own = "tcp portrange 61000-61099 or (udp portrange 61000-61099 and udp port 53)"
    assert r.stdout.decode().strip() == f"(ip or ip6) and (tcp or udp) and not ({own})"
    r = run_pcaptool(
        "capture", "--print-filter", "--self-ports", "61000-61099", "--filter", "udp or tcp"
    )
    assert r.stdout.decode().strip() == f"(udp or tcp) and not ({own})"
    r = run_pcaptool("capture", "--print-filter", "--self-ports", "1-2")
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1


def _listener() -> socket.socket:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    return srv


def test_connections_leave_from_the_range_and_skip_ports_in_use():
    srv = _listener()
    lo = 62090  # outside the sidecar's default range: no upload of another test there
    held = []
    try:
        for port in range(lo, lo + 3):  # three of four ports taken: the fourth is used
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # even after TIME_WAIT
            s.bind(("0.0.0.0", port))
            s.listen()
            held.append(s)
        conn = selfport.create_connection(srv.getsockname(), 2, (lo, lo + 3))
        assert conn.getsockname()[1] == lo + 3
        conn.close()
        held.append(socket.socket())  # the fourth taken too (in TIME_WAIT, now listened on)
        held[-1].setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held[-1].bind(("0.0.0.0", lo + 3))
        held[-1].listen()
        with pytest.raises(OSError, match="all 4 ports of PCAP_SELF_PORTS"):
            selfport.create_connection(srv.getsockname(), 2, (lo, lo + 3))
    finally:
        for s in held:
            s.close()
        srv.close()


def test_requests_and_urllib_connect_from_the_range():
    import http.server

    import requests

    seen: list[int] = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.client_address[1])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        session = selfport.mount(requests.Session(), SELF)
        assert session.get(url, timeout=5).status_code == 200
        opener = urllib.request.build_opener(selfport.HTTPHandler(SELF))
        with opener.open(url, timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.shutdown()
    assert len(seen) == 2 and all(SELF[0] <= p <= SELF[1] for p in seen), seen


def _fake_gcs_in(lab: Lab, root: Path, port: int) -> subprocess.Popen:
    host = lab.addr(0, 2)
    endpoint = f"http://{host}:{port}"
    cmd = [str(fake_gcs_binary()), "-scheme", "http", "-host", host, "-port", str(port)]
    cmd += ["-backend", "filesystem", "-filesystem-root", str(root), "-log-level", "warn"]
    cmd += ["-external-url", endpoint, "-public-host", f"{host}:{port}"]
    proc = lab.popen(lab.peer, *cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Asked from inside the namespace: no connection of the test's crosses the veth.
    probe = f"import socket; socket.create_connection(({host!r}, {port}), timeout=0.5).close()"
    ready = lambda: lab.exec(lab.peer, sys.executable, "-c", probe).returncode == 0  # noqa: E731
    wait_for(ready, 15, "fake-gcs-server in the namespace")
    return proc


def _fields(pcap: Path) -> list[list[str]]:
    r = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-E", "separator=,"]
        + ["-e", "frame.len", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "udp.dstport"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return [line.split(",") for line in r.stdout.splitlines()]


@needs_root
def test_uploads_are_never_in_the_parts_and_sizes_stay_flat(tmp_path):
    if shutil.which("tshark") is None or shutil.which("tcpdump") is None:
        pytest.skip("tshark and tcpdump are the oracles")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    gcs_port, hc_port, bucket = free_port(), free_port(), "own-pcaps"
    with Lab(root=True) as veth:
        fake = _fake_gcs_in(veth, tmp_path / "gcs", gcs_port)
        endpoint = f"http://{veth.addr(0, 2)}:{gcs_port}"
        client = storage.Client(
            project="test-project",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
        )
        # Made from inside the namespace: no connection of the test's crosses the veth.
        create = (
            "import urllib.request as u; u.urlopen(u.Request("
            f"'{endpoint}/storage/v1/b?project=test-project', data=b'{{\"name\": \"{bucket}\"}}',"
            " headers={'Content-Type': 'application/json'}), timeout=10)"
        )
        assert veth.exec(veth.peer, sys.executable, "-c", create).returncode == 0
        # tcpdump beside the sidecar sees every upload on the wire (they do cross the veth).
        oracle = tmp_path / "oracle.pcap"
        dump = subprocess.Popen(
            ["tcpdump", "-i", veth.host_if, "-n", "-U", "-w", str(oracle)]
            + [f"tcp port {gcs_port} or tcp port {hc_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        env = sidecar_env(
            tmp_path,
            PCAP_IFACE=veth.host_if,
            PCAP_GCS_BUCKET=bucket,
            GCS_MOUNT=str(tmp_path / "pcap"),
            PCAP_ROTATE_SECS="2",
            PCAP_HC_PORT=str(hc_port),
            STORAGE_EMULATOR_HOST=endpoint,
            # Metadata lookups go across the veth too (fake-gcs is no metadata server).
            GCE_METADATA_HOST=f"{veth.addr(0, 2)}:{gcs_port}",
            GOOGLE_CLOUD_PROJECT="test-project",
        )
        sidecar = Sidecar(env, tmp_path)
        try:
            wait_for(lambda: port_open(hc_port), 30, "the health port")
            wait_for(lambda: (tmp_path / "ready").exists(), 30, "capture ready")
            sent = veth.send_udp(1100, seconds=22)  # ~11 rotations of steady traffic
            # Health probes across the veth, as Cloud Run's: the sidecar's own, left out.
            _probe(veth, hc_port, 20)
            time.sleep(1)
            rc, _ = sidecar.stop()
            dump.terminate()  # before the test's own downloads cross the veth
            dump.wait()
            parts = sorted(b.name for b in client.list_blobs(bucket, timeout=10))
            blobs = {
                n: gzip.decompress(client.bucket(bucket).blob(n).download_as_bytes()) for n in parts
            }
        finally:
            sidecar.kill()
            dump.terminate()
            dump.wait()
            fake.terminate()
            fake.wait()
        err = sidecar.err.read_text()
        assert rc == 0, err[-4000:]

    assert len(parts) >= 10, parts
    sizes, udp_total = _check_parts(tmp_path, parts, blobs, (str(gcs_port), str(hc_port)))
    assert udp_total == sent, f"{udp_total} of {sent} application datagrams in the parts"
    oracle_rows = _fields(oracle)
    uploads = [r for r in oracle_rows if _in_self(r[1], r[2])]
    assert len(uploads) > 10 * len(parts), f"{len(uploads)} upload packets on the wire"
    probes = [r for r in oracle_rows if str(hc_port) in r[1:3]]
    assert len(probes) >= 20 * 3, f"{len(probes)} probe packets on the wire"
    unbound = [r for r in oracle_rows if not _in_self(r[1], r[2]) and r not in probes]
    assert not unbound, f"connections not bound: {unbound[:5]}"
    middle = sizes[1:-1]  # the first and last parts are partial
    print(f"part sizes (bytes): {sizes}", file=sys.stderr)
    assert max(middle) <= 1.5 * min(middle), f"part sizes grow: {sizes}"


def _probe(veth: Lab, port: int, count: int) -> None:
    """Health probes from the peer namespace across the veth, as Cloud Run's."""
    code = (
        f"import socket\nfor _ in range({count}): "
        f"socket.create_connection(({veth.addr(0, 1)!r}, {port}), 5).close()"
    )
    assert veth.exec(veth.peer, sys.executable, "-c", code).returncode == 0


def _check_parts(tmp: Path, parts: list[str], blobs: dict, own_ports: tuple[str, ...]):
    """No packet of pcaptool's own connections in any part; (sizes, application UDP)."""
    sizes, udp_total = [], 0
    for i, name in enumerate(parts):
        f = tmp / f"part{i}.pcap"
        f.write_bytes(blobs[name])
        rows = _fields(f)
        own = [r for r in rows if r[1] and (set(own_ports) & set(r[1:3]) or _in_self(r[1], r[2]))]
        assert not own, f"{name}: {len(own)} packets of pcaptool's own connections"
        udp_total += sum(1 for r in rows if r[3] == "9999")
        sizes.append(len(blobs[name]))
    return sizes, udp_total


def _in_self(src: str, dst: str) -> bool:
    return any(p and SELF[0] <= int(p) <= SELF[1] for p in (src, dst))
