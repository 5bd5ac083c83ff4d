"""The rest of the sidecar's own traffic (issue 16): its DNS lookups, the health probes to
PCAP_HC_PORT and its connections to an HTTP(S) proxy never land in the capture, and none
of the application's traffic is hidden for it.

The filter's meaning is checked by tcpdump reading crafted packets; the DNS and health
cases run for real in two network namespaces joined by a veth (a DNS server and
fake-gcs-server on the peer side, `pcaptool upload` resolving a name on the capture side).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from gcs_fixtures import GcsServer, fake_gcs_binary, free_port
from netns import Lab
from packets import eth, ip4, udp
from test_entrypoint import wait_for

from conftest import PCAPTOOL, needs_root, pcaptool_env, run_pcaptool
from pcaptool.capfile.reader import read_packets
from pcaptool.capfile.writer import PcapWriter
from pcaptool.sidecar import bpf, selfdns, selfport

SELF = (61000, 61099)
HC = 12345
ME, PEER, FAR = "10.0.0.5", "10.0.0.9", "93.184.216.34"


def _tcp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x18, 65535, 0, 0)


def _pkt(src: str, dst: str, proto: str, sport: int, dport: int) -> bytes:
    l4 = _tcp(sport, dport) if proto == "tcp" else udp(sport, dport, b"q")
    return eth(ip4(l4, 6 if proto == "tcp" else 17, socket.inet_aton(src), socket.inet_aton(dst)))


CASES = {  # name: (packet, left out?)
    "probe to the health port": (_pkt(PEER, ME, "tcp", 40000, HC), True),
    "health port's answer": (_pkt(ME, PEER, "tcp", HC, 40000), True),
    "probe on loopback": (_pkt("127.0.0.1", "127.0.0.1", "tcp", 50000, HC), True),
    "loopback answer": (_pkt("127.0.0.1", "127.0.0.1", "tcp", HC, 50000), True),
    "app to a remote server on the same port": (_pkt(ME, FAR, "tcp", 40001, HC), False),
    "that server's answer": (_pkt(FAR, ME, "tcp", HC, 40001), False),
    "our DNS query": (_pkt(ME, "8.8.8.8", "udp", 61050, 53), True),
    "its answer": (_pkt("8.8.8.8", ME, "udp", 53, 61050), True),
    "our DNS over TCP": (_pkt(ME, "8.8.8.8", "tcp", 61050, 53), True),
    "app DNS query": (_pkt(ME, "8.8.8.8", "udp", 45000, 53), False),
    "app UDP to a remote port in the range": (_pkt(ME, FAR, "udp", 45001, 61050), False),
    "an upload": (_pkt(ME, FAR, "tcp", 61001, 443), True),
}


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is the oracle")
def test_the_filter_leaves_out_exactly_the_sidecars_own_traffic(tmp_path):
    settings = bpf.FilterSettings(self_ports="61000-61099", health_port=HC)
    nets = lambda: [f"{ME}/32", "127.0.0.0/8", "fd00::2/128"]  # noqa: E731
    expression = bpf.FilterBuilder(settings, local_networks=nets).build()
    src = tmp_path / "in.pcap"
    with open(src, "wb") as f:
        w = PcapWriter(f, 1)
        for i, (data, _) in enumerate(CASES.values()):
            w.write(i * 1000, data)
    out = tmp_path / "out.pcap"
    r = subprocess.run(["tcpdump", "-r", src, "-w", out, expression], capture_output=True)
    assert r.returncode == 0, r.stderr
    kept = {p.data for p in read_packets(out)}
    wrong = [name for name, (data, excluded) in CASES.items() if (data in kept) == excluded]
    assert not wrong, f"{wrong} with {expression}"


def test_local_networks_are_read_from_proc(tmp_path):
    fib = tmp_path / "fib_trie"
    fib.write_text(
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.1.2.3\n        /32 host LOCAL\n"
        "     |-- 10.1.2.255\n        /32 link BROADCAST\n"
        "     |-- 127.0.0.0\n        /8 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n"
    )
    inet6 = tmp_path / "if_inet6"
    inet6.write_text("00000000000000000000000000000001 01 80 10 80 lo\n")
    assert selfport.local_networks(str(fib), str(inet6)) == [
        "10.1.2.3/32",
        "127.0.0.0/8",
        "::1/128",
    ]


def test_hosts_file_answers_before_dns(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("# c\n10.9.8.7  gcs.example  alias # x\nfd00::7 gcs.example\n")
    assert selfdns.hosts_lookup("GCS.example.", str(hosts)) == ["10.9.8.7", "fd00::7"]
    assert selfdns.hosts_lookup("other", str(hosts)) == []


# ------------------------------------------------------------------ an HTTP(S) proxy


class Proxy:
    """A forwarding HTTP proxy on loopback: notes each client's port, then pipes bytes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.clients: list[int] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.clients.append(peer[1])
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head and (chunk := conn.recv(65536)):
            head += chunk
        if b"\r\n\r\n" not in head:  # closed before a request
            conn.close()
            return
        target = head.split(b" ", 2)[1].split(b"/")[2].decode()  # http://HOST:PORT/...
        host, port = target.rsplit(":", 1)
        up = socket.create_connection((host, int(port)))
        up.sendall(head)  # absolute-form requests: fake-gcs-server (Go) takes them as they are

        def pump(a: socket.socket, b: socket.socket) -> None:
            with contextlib.suppress(OSError):  # a side that resets ends the pipe
                while data := a.recv(65536):
                    b.sendall(data)
                b.shutdown(socket.SHUT_WR)

        threading.Thread(target=pump, args=(up, conn), daemon=True).start()
        pump(conn, up)


def test_uploads_through_a_proxy_leave_from_the_range(tmp_path):
    if not fake_gcs_binary().exists():
        pytest.skip("fake-gcs-server is not installed")
    gcs = GcsServer(tmp_path / "gcs")
    gcs.start()
    proxy = Proxy()
    try:
        gcs.make_bucket("proxied")
        part = tmp_path / "part.pcap"
        part.write_bytes(b"\xd4\xc3\xb2\xa1" + b"x" * 5000)
        env = pcaptool_env() | gcs.env | {"PCAP_SELF_PORTS": "61000-61099"}
        env |= {"HTTP_PROXY": f"http://127.0.0.1:{proxy.port}", "NO_PROXY": ""}
        r = run_pcaptool("upload", "--bucket", "proxied", str(part), env=env, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        assert list(gcs.objects("proxied"))  # it went through
    finally:
        proxy.sock.close()
        gcs.stop()
    assert proxy.clients and all(SELF[0] <= p <= SELF[1] for p in proxy.clients), proxy.clients


# ------------------------------------------------------------------ for real, in namespaces

DNS_SERVER = textwrap.dedent(
    """
    import socket, sys
    import dns.message, dns.rrset
    host, answer, ready = sys.argv[1], sys.argv[2], sys.argv[3]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 53))
    open(ready, "w").close()
    while True:
        data, peer = s.recvfrom(4096)
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        name = q.question[0].name
        if q.question[0].rdtype == 1 and name.to_text() == "gcs.poi.test.":
            r.answer.append(dns.rrset.from_text(name, 5, "IN", "A", answer))
        s.sendto(r.to_wire(), peer)
    """
)

LISTEN = "import socket,sys,time; s=socket.create_server((sys.argv[1], int(sys.argv[2]))); "
LISTEN += "open(sys.argv[3], 'w').close(); [s.accept()[0].close() for _ in iter(int, 1)]"


def _dns_and_tcp(pcap: Path) -> tuple[list[tuple[int, int]], list[tuple[str, int, str, int]]]:
    """(sport, dport) of the UDP port 53 packets, (src, sport, dst, dport) of the TCP ones."""
    dns, tcp = [], []
    for p in read_packets(pcap):
        d = p.data
        if len(d) < 38 or d[12:14] != b"\x08\x00":
            continue
        ports = struct.unpack_from("!HH", d, 34)
        if d[23] == 17 and 53 in ports:
            dns.append(ports)
        elif d[23] == 6:
            src, dst = socket.inet_ntoa(d[26:30]), socket.inet_ntoa(d[30:34])
            tcp.append((src, ports[0], dst, ports[1]))
    return dns, tcp


def _local_end(packets, addr: str, port: int) -> list:
    return [p for p in packets if (p[0], p[1]) == (addr, port) or (p[2], p[3]) == (addr, port)]


def _start(lab: Lab, ns: str, flag: Path, script: str, *args: str) -> subprocess.Popen:
    """A Python server in namespace `ns`; returns once it has written `flag`."""
    proc = lab.popen(
        ns, sys.executable, "-c", script, *args, str(flag),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_for(lambda: flag.exists() or proc.poll() is not None, 15, f"a server in {ns}")
    assert proc.poll() is None, proc.stderr.read().decode()
    return proc


def _servers(lab: Lab, tmp: Path, gport: int) -> list[subprocess.Popen]:
    """DNS and fake-gcs-server on the peer side, the health port and an app's server."""
    peer = lab.addr(0, 2)
    resolv = lab.etc / lab.cap / "resolv.conf"  # `ip netns exec` mounts it on /etc
    resolv.parent.mkdir(parents=True, exist_ok=True)
    resolv.write_text(f"nameserver {peer}\noptions timeout:2 attempts:1\n")
    procs = [
        _start(lab, lab.peer, tmp / "dns", DNS_SERVER, peer, peer),
        _start(lab, lab.cap, tmp / "hc", LISTEN, "0.0.0.0", str(HC)),  # the sidecar's
        _start(lab, lab.peer, tmp / "far", LISTEN, peer, str(HC)),  # an app's, same port
    ]
    fake = [str(fake_gcs_binary()), "-scheme", "http", "-host", peer, "-port", str(gport)]
    fake += ["-backend", "memory", "-external-url", f"http://gcs.poi.test:{gport}"]
    procs.append(lab.popen(lab.peer, *fake, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    make = (
        f"import urllib.request as u; u.urlopen(u.Request('http://{peer}:{gport}/storage/v1/b"
        '?project=p\', data=b\'{"name": "own"}\', '
        "headers={'Content-Type': 'application/json'}), timeout=10)"
    )
    ok = lambda: lab.exec(lab.peer, sys.executable, "-c", make).returncode == 0  # noqa: E731
    wait_for(ok, 15, "fake-gcs-server and its bucket")
    return procs


def _traffic(lab: Lab, tmp: Path, gport: int) -> None:
    """An upload by name (the sidecar's), the app's lookup and connection, a probe."""
    me, peer = lab.addr(0, 1), lab.addr(0, 2)
    part = tmp / "part.pcap"
    part.write_bytes(b"\xd4\xc3\xb2\xa1" + b"x" * 3000)
    env = pcaptool_env() | {"STORAGE_EMULATOR_HOST": f"http://gcs.poi.test:{gport}"}
    env["PCAP_SELF_PORTS"] = "61000-61099"
    up = lab.exec(lab.cap, *PCAPTOOL, "upload", "--bucket", "own", str(part), env=env, timeout=60)
    assert up.returncode == 0, up.stderr.decode()
    app = (
        "import socket; socket.getaddrinfo('gcs.poi.test', 80, socket.AF_INET); "
        f"socket.create_connection(({peer!r}, {HC}), 5).close()"
    )
    assert lab.exec(lab.cap, sys.executable, "-c", app).returncode == 0
    probe = f"import socket; socket.create_connection(({me!r}, {HC}), 5).close()"
    assert lab.exec(lab.peer, sys.executable, "-c", probe).returncode == 0


@needs_root
def test_dns_lookups_and_health_probes_are_never_captured(tmp_path):
    if not fake_gcs_binary().exists() or shutil.which("tcpdump") is None:
        pytest.skip("fake-gcs-server and tcpdump are needed")
    oracle, parts, gport = tmp_path / "oracle.pcap", tmp_path / "capture.pcap", free_port()
    with Lab() as lab:
        me, peer = lab.addr(0, 1), lab.addr(0, 2)
        procs = _servers(lab, tmp_path, gport)
        dump = ["tcpdump", "-i", "eth0", "-n", "-U", "-w", str(oracle)]
        procs.append(lab.popen(lab.cap, *dump, stderr=subprocess.DEVNULL))
        cap = lab.pcaptool(
            *("capture", "-i", "eth0", "-w", str(parts), "--health-port", str(HC)),
            *("--self-ports", "61000-61099", "--ready-file", str(tmp_path / "ready")),
        )
        try:
            wait_for(lambda: (tmp_path / "ready").exists(), 30, "capture ready")
            time.sleep(0.5)  # tcpdump started with it
            _traffic(lab, tmp_path, gport)
            time.sleep(1)
        finally:
            for p in (cap, *procs):
                p.terminate()
                p.wait(30)
    o_dns, o_tcp = _dns_and_tcp(oracle)
    in_range = lambda ports: any(SELF[0] <= x <= SELF[1] for x in ports)  # noqa: E731
    ours = [p for p in o_dns if in_range(p)]
    app_dns = [p for p in o_dns if not in_range(p)]
    assert ours and app_dns, o_dns  # the upload's lookups from the range, the app's not
    c_dns, c_tcp = _dns_and_tcp(parts)
    assert sorted(c_dns) == sorted(app_dns), c_dns  # ours left out, the app's kept
    assert _local_end(o_tcp, me, HC), o_tcp  # the probe crossed the veth...
    assert not _local_end(c_tcp, me, HC), c_tcp  # ... and is not in the capture
    remote = _local_end(o_tcp, peer, HC)  # the app's connection to a remote port 12345
    assert remote and _local_end(c_tcp, peer, HC) == remote
    assert not [p for p in c_tcp if in_range((p[1], p[3]))], c_tcp  # nor the upload
