"""`pcaptool translate` with the TCP analysis, on conversations the test builds: trace
fields on every later packet, httpRequest, tcp.gap, --flows, --workers/--ordered."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import orjson
import pytest
from tcpconv import Capture, Conn

from conftest import REPO, pcaptool_env, run_pcaptool
from pcaptool.tcp.analyzer import format_latency

SCHEMA = json.loads((REPO / "pcaptool" / "schema" / "record.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

TRACE1 = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE2 = "105445aa7843bc8bf206b12000100000"
T = "logging.googleapis.com/trace"
SPAN = "logging.googleapis.com/spanId"
SAMPLED = "logging.googleapis.com/trace_sampled"


def translate(path: Path, *args: str, env: dict | None = None) -> list[dict]:
    r = run_pcaptool("translate", *args, str(path), env=env)
    assert r.returncode == 0, r.stderr
    recs = [orjson.loads(x) for x in r.stdout.splitlines()]
    for rec in recs:
        errs = [e.message for e in VALIDATOR.iter_errors(rec)]
        assert not errs, errs
    return recs


def packets(recs: list[dict]) -> dict[int, dict]:
    return {r["pcap"]["num"]: r for r in recs if "pcap" in r}


@pytest.fixture
def traced(tmp_path: Path) -> tuple[Path, dict]:
    """Two keep-alive exchanges: traceparent, then X-Cloud-Trace-Context; requests and
    responses split over segments; ACKs between."""
    cap = Capture()
    c = Conn(cap)
    c.handshake()
    n = {}
    req1 = (
        "POST /api/items?id=7 HTTP/1.1\r\nHost: svc.example\r\nUser-Agent: curl/8.0\r\n"
        f"traceparent: 00-{TRACE1}-00f067aa0ba902b7-01\r\nContent-Length: 10\r\n\r\n0123456789"
    ).encode()
    n["req1a"] = c.client(req1[:30])  # request line only: no trace known yet
    n["req1b"] = c.client(req1[30:-4])  # headers complete here
    n["req1ack"] = c.server_ack()
    n["req1c"] = c.client(req1[-4:])  # end of body: the request completes
    body = b"x" * 3000
    resp1 = b"HTTP/1.1 201 Created\r\nContent-Length: 3000\r\n\r\n" + body
    n["resp1a"] = c.server(resp1[:1000], dt=5_000_000)
    n["ack1a"] = c.client_ack()
    n["resp1b"] = c.server(resp1[1000:2000])
    n["resp1c"] = c.server(resp1[2000:])
    n["ack1b"] = c.client_ack()
    req2 = (
        "GET /two HTTP/1.1\r\nHost: svc.example\r\n"
        f"X-Cloud-Trace-Context: {TRACE2}/12345678901234567890;o=0\r\n\r\n"
    ).encode()
    n["req2a"] = c.client(req2[:10], dt=1_000_000)
    n["req2b"] = c.client(req2[10:])
    n["resp2"] = c.server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", dt=2_000_000)
    n["ack2"] = c.client_ack()
    n["fin"], n["finack"], n["last"] = c.close()
    return cap.write(tmp_path / "traced.pcap"), n


def test_trace_fields_on_every_later_packet_of_request_and_response(traced):
    path, n = traced
    recs = packets(translate(path, "--project", "my-proj"))
    full1 = f"projects/my-proj/traces/{TRACE1}"
    full2 = f"projects/my-proj/traces/{TRACE2}"
    assert T not in recs[n["req1a"]]
    for key in ("req1b", "req1ack", "req1c", "resp1a", "ack1a", "resp1b", "resp1c", "ack1b"):
        assert recs[n[key]][T] == full1, key
        assert recs[n[key]][SPAN] == "00f067aa0ba902b7"
        assert recs[n[key]][SAMPLED] is True
    # a new request starts: the old trace stops, the new one begins with its headers
    assert T not in recs[n["req2a"]]
    for key in ("req2b", "resp2", "ack2", "fin", "finack", "last"):
        assert recs[n[key]][T] == full2, key
        assert recs[n[key]][SPAN] == f"{12345678901234567890:016x}"
        assert recs[n[key]][SAMPLED] is False
    assert all(T not in recs[i] for i in (1, 2, 3))  # the handshake precedes any request


def test_project_from_environment(traced):
    path, n = traced
    env = pcaptool_env()
    env.pop("PROJECT_ID", None)
    env["GOOGLE_CLOUD_PROJECT"] = "from-env"
    recs = packets(translate(path, env=env))
    assert recs[n["resp2"]][T] == f"projects/from-env/traces/{TRACE2}"
    env.pop("GOOGLE_CLOUD_PROJECT")
    recs = packets(translate(path, env=env))
    assert recs[n["resp2"]][T] == TRACE2


def test_http_request_and_latency_on_response_records(traced):
    path, n = traced
    recs = packets(translate(path))
    req = recs[n["req1c"]]["http"]
    assert (req["method"], req["target"], req["host"], req["body_size"]) == (
        "POST",
        "/api/items?id=7",
        "svc.example",
        10,
    )
    resp_rec = recs[n["resp1c"]]
    resp = resp_rec["http"]
    assert resp["status"] == 201 and resp["body_size"] == 3000
    assert resp["request"]["num"] == n["req1c"]
    first_ts = recs[n["req1a"]]["timestamp"]
    end_ts = resp_rec["timestamp"]
    latency = (
        (end_ts["seconds"] - first_ts["seconds"]) * 10**9 + end_ts["nanos"] - first_ts["nanos"]
    )
    assert resp["latency"] == latency
    hr = resp_rec["httpRequest"]
    assert hr == {
        "requestMethod": "POST",
        "requestUrl": "http://svc.example/api/items?id=7",
        "status": 201,
        "latency": format_latency(latency),
        "protocol": "HTTP/1.1",
        "userAgent": "curl/8.0",
        "remoteIp": "10.0.0.1",
        "serverIp": "10.0.0.9",
        "requestSize": str(len(req["headers"]) and req["header_size"] + 10),
        "responseSize": str(resp["header_size"] + 3000),
    }
    assert "HTTP 201 (POST /api/items?id=7)" in resp_rec["message"]
    assert "httpRequest" not in recs[n["resp1b"]]


def test_format_latency():
    assert format_latency(12_345_000) == "0.012345s"
    assert format_latency(2_000_000_000) == "2s"
    assert format_latency(1) == "0.000000001s"


def _latency_by_the_definition(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    frac = f"{abs(ns) % 1_000_000_000:09d}".rstrip("0")
    return f"{sign}{abs(ns) // 1_000_000_000}{'.' + frac if frac else ''}s"


def test_format_latency_fast_path_and_memo_agree_with_the_definition():
    # sub-second values take a short path and the last answer is remembered: both must
    # give what the definition gives, for every sign, size and run of trailing zeros
    rnd = random.Random(7)
    edge = [0, 1, -1, 10, 999_999_999, 1_000_000_000, -1_000_000_000, 1_000_000_001, 10**20 + 7]
    values = edge + [rnd.randint(-(10**12), 10**12) for _ in range(3000)]
    values += [rnd.randint(0, 10**9) // 10 ** rnd.randint(0, 9) for _ in range(3000)]
    for ns in values:
        assert format_latency(ns) == _latency_by_the_definition(ns), ns
        assert format_latency(ns) == _latency_by_the_definition(ns), ns  # remembered


def test_retransmission_out_of_order_and_gap(tmp_path):
    cap = Capture()
    c = Conn(cap)
    c.handshake()
    req = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
    c.client(req)
    base = c.sseq
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n" + b"a" * 10 + b"b" * 10 + b"c" * 10
    head = len(resp) - 30
    c.raw(False, base + head + 10, resp[head + 10 : head + 20])  # early
    c.raw(False, base, resp[:head])
    c.raw(False, base, resp[:head])  # retransmission
    done = c.raw(False, base + head, resp[head : head + 10])  # fills the hole
    c.sseq = base + len(resp) - 10
    c.server(resp[-10:])
    # second response: its middle segment is never captured, the client ACKs past it
    c.client(req)
    base = c.sseq
    resp2 = b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n" + b"d" * 30
    h2 = len(resp2) - 30
    c.raw(False, base, resp2[: h2 + 10])
    c.raw(False, base + h2 + 20, resp2[h2 + 20 :])
    c.sseq = base + len(resp2)
    gap_at = c.client_ack()
    c.close()
    recs = translate(cap.write(tmp_path / "g.pcap"), "--flows")
    pk = packets(recs)
    assert "http" not in pk[done]
    completed = [r for r in pk.values() if r.get("http", {}).get("type") == "response"]
    assert [r["http"]["body_size"] for r in completed] == [30, 30]
    assert completed[0]["http"]["body_sample"] == "a" * 10 + "b" * 10 + "c" * 10
    assert pk[gap_at]["tcp"]["gap"] == {"bytes": 10, "reason": "lost"}
    assert completed[1]["http"]["gap"] == 10
    (conn,) = [r["conn"] for r in recs if "conn" in r]
    assert conn["state"] == "SF" and conn["end"] == "closed"
    assert conn["resp"]["retransmissions"] == 1 and conn["resp"]["gaps"] == 1
    assert conn["orig"] == {
        "ip": "10.0.0.1",
        "port": 40000,
        "packets": conn["orig"]["packets"],
        "bytes": 2 * len(req),
        "retransmissions": 0,
        "gaps": 0,
        # the TCP analysis (issue 15): the client ACKs the server's retransmission again
        "duplicate_acks": 1,
        "retransmitted_bytes": 0,
        "retransmitted_segments": 0,
        "zero_window_time": 0,
    }
    assert conn["service"] == "http" and conn["http_requests"] == 2
    # the record is written with the FIN that completes the close: the last ACK comes after
    assert conn["orig"]["packets"] + conn["resp"]["packets"] == len(pk) - 1
    assert conn["last_num"] == len(pk) - 1


def many_connections(path: Path, conns: int = 60) -> Path:
    """Interleaved connections over several seconds: some close, some idle out, some are
    still open at the end; pipelined requests and HTTP errors among them."""
    cap = Capture()
    open_ = []
    for i in range(conns):
        c = Conn(
            cap,
            client=(f"10.1.{i // 200}.{i % 200 + 1}", 30000 + i),
            server=("10.0.0.9", 80 + i % 3),
        )
        c.handshake()
        open_.append(c)
        for j, k in enumerate(open_[-4:]):
            k.client(
                f"GET /{i}/{j} HTTP/1.1\r\nHost: h\r\ntraceparent: 00-{TRACE1}-00f067aa0ba902b7-01\r\n\r\n".encode(),
                dt=300_000_000,
            )
            k.server(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
            if (i + j) % 7 == 0:
                k.client(b"garbage\r\n\r\n")
        if i % 3 == 0:
            open_.pop(0).close()
    return cap.write(path)


def test_workers_ordered_equals_one_worker_record_for_record(tmp_path):
    path = many_connections(tmp_path / "many.pcap")
    args = ("--flows", "--flow-timeout", "2")
    one = run_pcaptool("translate", *args, str(path))
    assert one.returncode == 0, one.stderr
    recs = [orjson.loads(x) for x in one.stdout.splitlines()]
    ends = {r["conn"]["end"] for r in recs if "conn" in r}
    assert ends == {"closed", "timeout", "end"}  # every way a connection record is made
    for workers in ("2", "3"):
        par = run_pcaptool("translate", *args, "--workers", workers, "--ordered", str(path))
        assert par.returncode == 0, par.stderr
        assert par.stdout.splitlines() == one.stdout.splitlines()
    env = pcaptool_env()
    env["PCAP_ORDERED"] = "true"
    env["PCAP_WORKERS"] = "2"
    par = run_pcaptool("translate", *args, str(path), env=env)
    assert par.stdout == one.stdout
    un = run_pcaptool("translate", *args, "--workers", "2", str(path))
    assert un.returncode == 0, un.stderr
    assert sorted(un.stdout.splitlines()) == sorted(one.stdout.splitlines())


def test_workers_on_stdin_and_broken_input(tmp_path):
    path = many_connections(tmp_path / "m.pcap", conns=10)
    data = path.read_bytes()
    one = run_pcaptool("translate", "-", input=data)
    par = run_pcaptool("translate", "--workers", "2", "--ordered", "-", input=data)
    assert par.returncode == 0 and par.stdout == one.stdout
    cut = data[: len(data) - 7]
    one = run_pcaptool("translate", "-", input=cut)
    par = run_pcaptool("translate", "--workers", "2", "--ordered", "-", input=cut)
    assert one.returncode == par.returncode == 1
    assert par.stdout == one.stdout
    assert par.stderr.count(b"\n") == 1 and b"Traceback" not in par.stderr


def test_no_http_and_flows_conflict(tmp_path):
    path = many_connections(tmp_path / "m.pcap", conns=3)
    r = run_pcaptool("translate", "--no-http", "--flows", str(path))
    assert r.returncode == 2 and b"--flows" in r.stderr
    r = run_pcaptool("translate", "--no-http", str(path))
    assert r.returncode == 0 and b'"http"' not in r.stdout


def test_memcap_gap_reported_through_the_cli(tmp_path):
    cap = Capture()
    c = Conn(cap)
    c.handshake()
    c.client(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
    base = c.sseq
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n"
    # the first 1000 body bytes never arrive; 19 KB arrive behind the hole
    nums = [c.raw(False, base + len(head) + 1000 + k * 1000, b"z" * 1000) for k in range(19)]
    c.raw(False, base, head)
    path = cap.write(tmp_path / "cap.pcap")
    recs = translate(path, "--tcp-flow-memory", "4096")
    pk = packets(recs)
    r = run_pcaptool("translate", "--tcp-flow-memory", "4096", str(path))
    (warning,) = [orjson.loads(x) for x in r.stderr.splitlines()]
    assert warning["severity"] == "WARNING" and warning["memcap_hits"] >= 1
    gaps = [pk[n]["tcp"]["gap"] for n in nums if "gap" in pk[n].get("tcp", {})]
    assert gaps and all(g["reason"] == "memcap" for g in gaps)
    assert sum(g["bytes"] for g in gaps) >= 1000 + len(head)


def test_corpus_http_captures_ordered_workers_equal_one(corpus):
    names = [
        "zeek-http-1000-requests-ipv6.pcap.gz",
        "sv-http2-prior-knowledge-goaway.pcap",
        "sv-http2-upgrade-rst-null.pcap",
        "zeek-http-chunked.pcapng",
    ]
    for name in names:
        path = corpus / name
        one = run_pcaptool("translate", "--flows", str(path))
        two = run_pcaptool("translate", "--flows", "--workers", "2", "--ordered", str(path))
        assert one.returncode == two.returncode == 0
        assert two.stdout == one.stdout, name


@pytest.mark.parametrize("args", [[], ["--workers", "2"], ["--workers", "2", "--ordered"]])
def test_live_pipe_records_appear_before_end_of_input(tmp_path, args):
    import select
    import subprocess

    from conftest import PCAPTOOL

    path = many_connections(tmp_path / "live.pcap", conns=2)
    data = path.read_bytes()
    first = 24 + sum(16 + len(frame) for _, frame in capture_frames(path)[:5])
    proc = subprocess.Popen(
        [*PCAPTOOL, "translate", *args, "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=pcaptool_env(),
    )
    try:
        proc.stdin.write(data[:first])
        proc.stdin.flush()
        got = b""
        deadline = 30
        while got.count(b"\n") < 5 and deadline > 0:
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            deadline -= 1
            if ready:
                got += proc.stdout.read1(65536)
        assert got.count(b"\n") >= 5, got  # five packets in, five records out, input open
        proc.stdin.write(data[first:])
        proc.stdin.close()
        rest = proc.stdout.read()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    one = run_pcaptool("translate", "-", input=data)
    if "--ordered" in args or not args:
        assert got + rest == one.stdout
    else:
        assert sorted((got + rest).splitlines()) == sorted(one.stdout.splitlines())


def capture_frames(path: Path) -> list[tuple[int, bytes]]:
    from pcaptool.capfile.reader import CaptureReader, open_input

    with open_input(str(path)) as f:
        return [(p.ts_ns, p.data) for p in CaptureReader(f, "x")]


def test_workers_closed_stdout_is_quiet(tmp_path):
    import subprocess

    from conftest import PCAPTOOL

    path = many_connections(tmp_path / "m.pcap", conns=40)
    for extra in ([], ["--ordered"]):
        proc = subprocess.Popen(
            [*PCAPTOOL, "translate", "--workers", "2", *extra, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=pcaptool_env(),
        )
        proc.stdout.readline()
        proc.stdout.close()  # like `| head -1`
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, err
        assert b"Traceback" not in err and err == b""


def test_snaplen_cut_payload_is_a_gap_at_once(tmp_path):
    cap = Capture()
    c = Conn(cap)
    c.handshake()
    c.client(b"GET /s HTTP/1.1\r\nHost: h\r\n\r\n")
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n"
    c.server(head)
    cap.snaplen = 14 + 20 + 20 + 100  # 100 payload bytes of each segment survive
    cut = c.server(b"a" * 1000)
    cap.snaplen = 0
    c.server(b"b" * 1000)
    done = c.server(b"c" * 1000)
    pk = packets(translate(cap.write(tmp_path / "s.pcap")))
    assert pk[cut]["pcap"]["truncated"]
    assert pk[cut]["tcp"]["gap"] == {"bytes": 900, "reason": "snaplen"}
    resp = pk[done]["http"]
    assert resp["body_size"] == 3000 and resp["gap"] == 900
    assert resp["body_sample"] == "a" * 100 + "b" * 28
