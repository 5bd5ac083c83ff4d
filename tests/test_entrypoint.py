"""entrypoint.sh end to end on the host: settings validation, a capture in a network
namespace uploaded to fake-gcs-server with the metadata hierarchy, and scheduled mode.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from netns import Lab, http_requests_with_traceparent

from conftest import PCAPTOOL, needs_root, pcaptool_env

REPO = Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO / "entrypoint.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def sidecar_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in pcaptool_env().items() if not k.startswith(("PCAP_", "GCS_", "K_"))}
    env |= {
        "PCAPTOOL": f"{sys.executable} -m pcaptool",
        "PCAP_READY_FILE": str(tmp_path / "ready"),
        "TMPDIR": str(tmp_path),
    }
    return env | settings


def run_entrypoint(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_entrypoint_is_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    for script in (ENTRYPOINT, REPO / "scripts" / "make-base-image.sh"):
        r = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def test_every_bad_setting_is_one_line_and_exit_2(tmp_path):
    env = sidecar_env(
        tmp_path,
        PCAP_IFACE="lo",
        PCAP_TCPDUMP="yes",
        PCAP_SNAPSHOT_LENGTH="-5",
        PCAP_HC_PORT="http",
        PCAP_FILE_EXT="../x",
        GCS_MOUNT="relative/dir",
        PCAP_GCS_BUCKET="Not_A_Bucket!",
        PCAP_USE_CRON="true",
        PCAP_TIMEOUT_SECS="1.5",
    )
    r = run_entrypoint(env)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    names = [
        "PCAP_TCPDUMP='yes'",
        "PCAP_SNAPSHOT_LENGTH='-5'",
        "PCAP_HC_PORT='http'",
        "PCAP_FILE_EXT='../x'",
        "GCS_MOUNT='relative/dir'",
        "PCAP_GCS_BUCKET='Not_A_Bucket!'",
        "PCAP_USE_CRON=true needs PCAP_CRON_EXP",
        "PCAP_TIMEOUT_SECS='1.5'",
    ]
    assert len(lines) == len(names), r.stderr
    for name in names:
        assert sum(name in line for line in lines) == 1, (name, r.stderr)
    assert all(line.startswith("pcaptool-sidecar: error: ") for line in lines)


def test_filter_and_cron_values_are_judged_by_pcaptool(tmp_path):
    env = sidecar_env(
        tmp_path,
        PCAP_IFACE="lo",
        PCAP_PORTS="22 or host evil",
        PCAP_USE_CRON="true",
        PCAP_CRON_EXP="*/5 * * * * * *",
    )
    r = run_entrypoint(env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    assert "capture settings:" in lines[0]
    assert "schedule settings:" in lines[1] and "7 fields" in lines[1]


def test_an_interface_prefix_that_matches_nothing_is_refused(tmp_path):
    r = run_entrypoint(sidecar_env(tmp_path, PCAP_IFACE="ptscnone"))
    assert r.returncode == 2
    assert (
        r.stderr.splitlines() == [r.stderr.splitlines()[0]]
        and "PCAP_IFACE='ptscnone' matches no interface (there are: " in r.stderr
    )
    assert " lo" in r.stderr or "(there are: lo" in r.stderr


def test_nothing_to_capture_is_refused(tmp_path):
    env = sidecar_env(
        tmp_path, PCAP_IFACE="lo", PCAP_TCPDUMP="false", PCAP_JSON="0", PCAP_JSON_LOG="False"
    )
    r = run_entrypoint(env)
    assert r.returncode == 2
    assert "nothing would be captured" in r.stderr


class Sidecar:
    """entrypoint.sh as a background process, stdout and stderr to files."""

    def __init__(self, env: dict[str, str], tmp_path: Path, ignored: tuple[int, ...] = ()):
        """`ignored`: signals the sidecar starts with ignored, as `cmd &` in a
        non-interactive shell starts it with SIGINT and SIGQUIT ignored."""
        self.out = tmp_path / "stdout.log"
        self.err = tmp_path / "stderr.log"

        def ignore() -> None:
            for sig in ignored:
                signal.signal(sig, signal.SIG_IGN)

        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            # Own session: on failure the whole tree goes with one killpg.
            self.proc = subprocess.Popen(
                ["bash", str(ENTRYPOINT)],
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=ignore if ignored else None,
            )

    def stop(self, timeout: float = 30) -> tuple[int, float]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL to every process of the sidecar's session: its stages run in process
        groups of their own, which a killpg of the script's group would leave running."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        session = subprocess.run(
            ["pgrep", "-s", str(self.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        for pid in session:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        self.proc.wait()

    def stderr_json(self) -> list[dict]:
        return [json.loads(x) for x in self.err.read_text().splitlines() if x.startswith("{")]

    def stdout_json(self) -> list[dict]:
        return [json.loads(x) for x in self.out.read_text().splitlines() if x.startswith("{")]


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def count_packets(data: bytes, tmp_path: Path) -> int:
    f = tmp_path / "count.pcap"
    f.write_bytes(data)
    r = subprocess.run(
        ["tshark", "-r", str(f), "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return len(r.stdout.split())


@needs_root
def test_end_to_end_to_the_bucket_with_trace_logs(tmp_path, gcs_server, metadata_server):
    if shutil.which("tshark") is None:
        pytest.skip("tshark is the oracle")
    bucket = "ptsc-pcaps"
    gcs_server.make_bucket(bucket)
    hc_port = free_port()
    with Lab(root=True) as veth:
        env = sidecar_env(
            tmp_path,
            PCAP_IFACE=veth.host_if,
            PCAP_GCS_BUCKET=bucket,
            GCS_MOUNT=str(tmp_path / "pcap"),
            PCAP_L4_PROTOS="tcp",
            PCAP_ROTATE_SECS="2",
            PCAP_JSON="true",
            PCAP_JSON_LOG="true",
            PCAP_HC_PORT=str(hc_port),
            K_SERVICE="ptsc-svc",
            K_REVISION="ptsc-svc-00001-abc",
        )
        env |= gcs_server.env | metadata_server.env
        sidecar = Sidecar(env, tmp_path)
        try:
            wait_for(lambda: port_open(hc_port), 30, "the health port")
            # The port stays open while the traffic flows.
            seen_open: list[bool] = []
            stop_probe = threading.Event()

            def probe():
                while not stop_probe.is_set():
                    seen_open.append(port_open(hc_port))
                    time.sleep(0.5)

            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            trace_ids = http_requests_with_traceparent(veth, 8080, count=25, seconds=5)
            stop_probe.set()
            prober.join()
            rc, stop_secs = sidecar.stop()
        finally:
            sidecar.kill()
    err = sidecar.err.read_text()
    assert rc == 0, err[-4000:]
    assert stop_secs < 10, "Cloud Run allows 10 s after SIGTERM"
    assert seen_open and all(seen_open)
    assert not port_open(hc_port)
    assert "PCAP files available at: gs://ptsc-pcaps/" in err

    objects = gcs_server.objects(bucket)
    hierarchy = re.compile(
        r"^test-project/ptsc-svc/us-central1/ptsc-svc-00001-abc/[^/]+(/[^/]+)*/"
        r"00f1e2d3c4b5a6978877665544332211/part__[^/]+\.(pcap|json)\.gz$"
    )
    assert objects and all(hierarchy.match(name) for name in objects), sorted(objects)
    assert all(data[:2] == b"\x1f\x8b" for data in objects.values())  # compressed
    pcap_parts = sorted(n for n in objects if n.endswith(".pcap.gz"))
    json_parts = sorted(n for n in objects if n.endswith(".json.gz"))
    assert len(pcap_parts) >= 2 and json_parts

    # Every packet capture reported is in the bucket: merge the parts and count.
    merged = tmp_path / "merged.pcap"
    part_files = []
    for i, name in enumerate(pcap_parts):
        f = tmp_path / f"part{i}.pcap"
        f.write_bytes(gzip.decompress(objects[name]))
        part_files.append(str(f))
    subprocess.run(["mergecap", "-F", "pcap", "-w", str(merged), *part_files], check=True)
    stats = [e for e in sidecar.stderr_json() if "packets_written" in e]
    assert len(stats) == 1, err[-3000:]
    assert count_packets(merged.read_bytes(), tmp_path) == stats[0]["packets_written"] > 0
    # The NDJSON parts hold one record per packet too.
    json_records = sum(len(gzip.decompress(objects[n]).splitlines()) for n in json_parts)
    assert json_records >= stats[0]["packets_written"]

    # docs/sidecar.md's download and merge, from the URL of the NOTICE line.
    notice = [e for e in sidecar.stderr_json() if e.get("severity") == "NOTICE"]
    url = next(
        e["message"].split(": ", 1)[1] for e in notice if "PCAP files available at" in e["message"]
    )
    fetch_env = pcaptool_env() | gcs_server.env | {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    run_pcap, run_json = tmp_path / "run.pcap", tmp_path / "run.json"
    for args in ([url, "-o", str(run_pcap)], [url, "--format", "ndjson", "-o", str(run_json)]):
        r = subprocess.run(
            [*PCAPTOOL, "merge", *args], env=fetch_env, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
    assert count_packets(run_pcap.read_bytes(), tmp_path) == stats[0]["packets_written"]
    assert len(run_json.read_bytes().splitlines()) == json_records

    # JSON lines on stdout for Cloud Logging, with the requests' trace ids.
    lines = sidecar.stdout_json()
    assert lines and all("severity" in x for x in lines)
    traced = {
        x["logging.googleapis.com/trace"].rsplit("/", 1)[-1]
        for x in lines
        if "logging.googleapis.com/trace" in x
    }
    assert set(trace_ids) <= traced
    # Qualified with the project the metadata server gave, as Cloud Logging links traces.
    assert all(
        x["logging.googleapis.com/trace"].startswith("projects/test-project/traces/")
        for x in lines
        if "logging.googleapis.com/trace" in x
    )
    assert not list((tmp_path / "pcap-tmp").rglob("*.gz"))  # nothing left behind

    # The jq recipes of docs/sidecar.md, run as written on this run's NDJSON.
    if shutil.which("jq") is None:
        return
    recipes = jq_recipes()
    by_time = [json.loads(x) for x in run_recipe(recipes["every record in time order"], tmp_path)]
    dates = [r["pcap"]["date"] for r in by_time]
    assert dates == sorted(dates) and len(dates) == json_records
    slow = [
        json.loads(x)
        for x in run_recipe(recipes["HTTP requests that took more than 1 s"], tmp_path)
    ]
    assert [r["url"].rsplit("/", 2)[-2] for r in slow] == ["slow"]
    assert float(slow[0]["latency"].rstrip("s")) > 1.0
    trace = trace_ids[len(trace_ids) // 2]
    packets = [
        json.loads(x)
        for x in run_recipe(
            recipes["every packet of one trace (of the connections that carried it)"],
            tmp_path,
            trace,
        )
    ]
    assert len({p["flow"]["id"] for p in packets}) == 1
    flags = [p["tcp"]["flags_str"] for p in packets]
    assert (
        "S" in flags and "S." in flags and len(packets) >= 6
    )  # handshake, request, response, close
    assert any(p.get("logging.googleapis.com/trace", "").endswith(trace) for p in packets)


def jq_recipes() -> dict[str, str]:
    """{comment: command} from the jq block of docs/sidecar.md (after 'jq on the NDJSON')."""
    text = (REPO / "docs" / "sidecar.md").read_text()
    block = text[text.index("jq on the NDJSON") :]
    block = block[block.index("```sh") + 5 : block.index("```", block.index("```sh") + 5)]
    recipes: dict[str, str] = {}
    name = None
    for line in block.strip().splitlines():
        if line.startswith("# "):
            name = line[2:].strip()
            recipes[name] = ""
        elif name is not None:
            recipes[name] += line + "\n"
    return recipes


def run_recipe(script: str, cwd: Path, trace: str | None = None) -> list[str]:
    if trace is not None:
        script = re.sub(r"^TRACE=\S+$", f"TRACE={trace}", script, flags=re.M)
    r = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


@needs_root
def test_scheduled_mode_two_runs_within_a_minute(tmp_path):
    if shutil.which("tshark") is None:
        pytest.skip("tshark is the oracle")
    hc_port = free_port()
    out = tmp_path / "pcap"
    with Lab(root=True) as veth:
        env = sidecar_env(
            tmp_path,
            PCAP_IFACE=veth.host_if,
            GCS_MOUNT=str(out),
            PCAP_L4_PROTOS="udp",
            PCAP_ROTATE_SECS="60",
            PCAP_USE_CRON="true",
            PCAP_CRON_EXP="*/10 * * * * *",  # the reference's form: seconds first
            PCAP_TIMEZONE="Europe/Paris",
            # Each run starts half a dozen Python stages before capture: under load that
            # has taken over 4 s, and a run stopped before capture started holds nothing.
            PCAP_TIMEOUT_SECS="7",
            PCAP_HC_PORT=str(hc_port),
        )
        sidecar = Sidecar(env, tmp_path)
        try:
            wait_for(lambda: port_open(hc_port), 30, "the health port (scheduler ready)")
            t0 = time.monotonic()
            while True:
                veth.send_udp(count=40, seconds=1)
                starts = [e for e in sidecar.stderr_json() if e.get("event") == "end"]
                if len(starts) >= 2 or time.monotonic() - t0 > 50:
                    break
            rc, _ = sidecar.stop()
        finally:
            sidecar.kill()
    err = sidecar.err.read_text()
    assert rc == 0, err[-4000:]
    events = sidecar.stderr_json()
    ends = [e for e in events if e.get("component") == "schedule" and e.get("event") == "end"]
    assert len(ends) >= 2, err[-4000:]
    assert all(e["timed_out"] and e["severity"] == "INFO" for e in ends[:2])
    starts = [e for e in events if e.get("event") == "start"]
    assert all(e["scheduled"].endswith(("0.000+01:00", "0.000+02:00")) for e in starts)
    # Each finished run's packets are in its own parts, whole.
    written = sum(e["packets_written"] for e in events if "packets_written" in e)
    parts = sorted(out.rglob("*.pcap.gz"))
    assert len(parts) >= 2
    # One instance, one hierarchy: every run's parts under the same prefix.
    assert len({p.parent for p in parts}) == 1
    counted = sum(count_packets(gzip.decompress(p.read_bytes()), tmp_path) for p in parts)
    assert counted == written > 0
    assert os.path.exists(tmp_path / "ready") is False


# The reference sidecar's settings (issue 7), every one read by the entrypoint or passed
# through to the command that reads it, and documented.
REFERENCE_SETTINGS = [
    "PCAP_IFACE",
    "PCAP_GCS_BUCKET",
    "GCS_MOUNT",
    "PCAP_FILTER",
    "PCAP_L3_PROTOS",
    "PCAP_L4_PROTOS",
    "PCAP_IPV4",
    "PCAP_IPV6",
    "PCAP_HOSTS",
    "PCAP_PORTS",
    "PCAP_TCP_FLAGS",
    "PCAP_SNAPSHOT_LENGTH",
    "PCAP_ROTATE_SECS",
    "PCAP_FILE_EXT",
    "PCAP_COMPRESS",
    "PCAP_TCPDUMP",
    "PCAP_JSON",
    "PCAP_JSON_LOG",
    "PCAP_ORDERED",
    "PCAP_HC_PORT",
    "PCAP_USE_CRON",
    "PCAP_CRON_EXP",
    "PCAP_TIMEZONE",
    "PCAP_TIMEOUT_SECS",
    "PCAP_COMPAT",
    "PCAP_GAE",
]


def documented_settings() -> dict[str, str]:
    """{variable: default} from the settings table of docs/sidecar.md."""
    text = (REPO / "docs" / "sidecar.md").read_text()
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]+) \|", text, flags=re.M)
    return {name: default.strip() for name, default in rows}


def test_settings_table_lists_every_setting_the_entrypoint_reads():
    table = documented_settings()
    assert set(REFERENCE_SETTINGS) <= set(table)
    script = ENTRYPOINT.read_text()
    read_here = set(re.findall(r"\$\{((?:PCAP|GCS)_[A-Z0-9_]+)[:}]", script))
    read_here |= set(re.findall(r"parse_(?:bool|uint) ((?:PCAP|GCS)_[A-Z0-9_]+)", script))
    assert read_here - {"PCAP_READY_FILE"} <= set(table)
    # The filter settings are read by `pcaptool capture` itself (its options' env vars).
    from pcaptool.commands import capture

    capture_src = Path(capture.__file__).read_text()
    for name in ("PCAP_L3_PROTOS", "PCAP_L4_PROTOS", "PCAP_IPV4", "PCAP_IPV6", "PCAP_HOSTS",
                 "PCAP_PORTS", "PCAP_TCP_FLAGS", "PCAP_COMPAT"):  # fmt: skip
        assert name in capture_src or name in script, name


@pytest.mark.parametrize(
    "name, default",
    [("PCAP_SNAPSHOT_LENGTH", "`0`"), ("PCAP_ROTATE_SECS", "`60`"), ("PCAP_HC_PORT", "`12345`"),
     ("PCAP_COMPRESS", "`true`"), ("PCAP_TCPDUMP", "`true`"), ("PCAP_JSON", "`false`"),
     ("PCAP_TIMEZONE", "`UTC`"), ("PCAP_TIMEOUT_SECS", "`0`"), ("GCS_MOUNT", "`/pcap`"),
     ("PCAP_IFACE", "`eth`"), ("PCAP_FILE_EXT", "`pcap`")],
)  # fmt: skip
def test_documented_defaults_are_the_entrypoints(name, default):
    assert documented_settings()[name] == default
    script = ENTRYPOINT.read_text()
    value = default.strip("`")
    assert re.search(rf"{name}=\"\$\{{{name}:-{re.escape(value)}\}}\"", script) or re.search(
        rf"parse_(?:bool|uint) {name} {re.escape(value)}\b", script
    ), name


class FakeDockerSocket:
    """The Docker Engine API's GET /containers/gaeapp/json on a unix socket."""

    def __init__(self, path: Path, env: list[str]):
        import http.server
        import socketserver

        body = json.dumps({"Name": "/gaeapp", "Config": {"Env": env}}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                ok = self.path.split("?")[0] == "/containers/gaeapp/json"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if ok else 0))
                self.end_headers()
                if ok:
                    self.wfile.write(body)

            def address_string(self):
                return "docker"

            def log_message(self, *a):
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(str(path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@needs_root
def test_app_engine_flex_names_parts_after_the_app_container(tmp_path):
    out = tmp_path / "pcap"
    sock = tmp_path / "docker.sock"
    gae_env = ["PATH=/usr/bin", "GAE_SERVICE=ptsc-gae-svc", "GAE_VERSION=20250101t000000",
               "GOOGLE_CLOUD_PROJECT=ptsc-gae-project", "UNRELATED=1"]  # fmt: skip
    with FakeDockerSocket(sock, gae_env), Lab(root=True) as veth:
        env = sidecar_env(
            tmp_path,
            PCAP_GAE="true",
            PCAP_GAE_DOCKER_SOCK=str(sock),
            PCAP_IFACE=veth.host_if,
            PCAP_L4_PROTOS="udp",
            GCS_MOUNT=str(out),
            PCAP_HC_PORT=str(free_port()),
            GCE_METADATA_HOST=f"127.0.0.1:{free_port()}",  # nobody there: off Google Cloud
        )
        sidecar = Sidecar(env, tmp_path)
        try:
            wait_for(lambda: (tmp_path / "ready").exists(), 30, "capture to be ready")
            veth.send_udp(count=20, seconds=0.5)
            rc, _ = sidecar.stop()
        finally:
            sidecar.kill()
    assert rc == 0, sidecar.err.read_text()[-3000:]
    parts = list(out.rglob("*.pcap.gz"))
    assert parts
    rel = parts[0].relative_to(out).parts
    assert rel[0] == "ptsc-gae-project" and rel[1] == "ptsc-gae-svc"
    assert "20250101t000000" in rel


@needs_root
def test_a_failing_stage_is_named_and_the_exit_status_is_1(tmp_path, gcs_server, metadata_server):
    """The bucket goes away after the sidecar is ready: upload fails; the run says which
    stage and exits 1."""
    gcs_server.make_bucket("ptsc-gone")
    with Lab(root=True) as veth:
        env = sidecar_env(
            tmp_path,
            PCAP_IFACE=veth.host_if,
            PCAP_GCS_BUCKET="ptsc-gone",
            GCS_MOUNT=str(tmp_path / "pcap"),
            PCAP_L4_PROTOS="udp",
            PCAP_HC_PORT=str(free_port()),
        )
        env |= gcs_server.env | metadata_server.env
        sidecar = Sidecar(env, tmp_path)
        try:
            wait_for(lambda: (tmp_path / "ready").exists(), 30, "capture to be ready")
            gcs_server.client().bucket("ptsc-gone").delete()
            veth.send_udp(count=20, seconds=0.5)
            rc, _ = sidecar.stop()
        finally:
            sidecar.kill()
    assert rc == 1
    errors = [
        e
        for e in sidecar.stderr_json()
        if e.get("component") == "sidecar" and e["severity"] == "ERROR"
    ]
    assert [e.get("stage") for e in errors][0] == "upload"
    assert errors[-1]["message"].startswith("pcaptool sidecar finished with failures")
    # The part was not lost: it waits in the temporary directory for a later sweep.
    assert list((tmp_path / "pcap-tmp").rglob("*.pcap.gz"))


@needs_root
def test_a_missing_bucket_fails_before_the_sidecar_goes_ready(tmp_path, gcs_server):
    env = sidecar_env(
        tmp_path, PCAP_IFACE="lo", PCAP_GCS_BUCKET="ptsc-no-such-bucket",
        GCS_MOUNT=str(tmp_path / "pcap"), PCAP_HC_PORT=str(free_port()),
    )  # fmt: skip
    r = run_entrypoint(env | gcs_server.env, timeout=60)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("pcaptool: error:")]
    assert errors == ["pcaptool: error: gs://ptsc-no-such-bucket: no such bucket"], r.stderr
    assert not (tmp_path / "ready").exists()


def test_example_service_yaml_wires_the_sidecar():
    yaml = pytest.importorskip("yaml")
    svc = yaml.safe_load((REPO / "examples" / "service.yaml").read_text())
    template = svc["spec"]["template"]
    deps = json.loads(
        template["metadata"]["annotations"]["run.googleapis.com/container-dependencies"]
    )
    containers = {c["name"]: c for c in template["spec"]["containers"]}
    (app,) = [c for c in containers.values() if c.get("ports")]  # one ingress container
    sidecar = containers["pcap-sidecar"]
    assert deps == {app["name"]: ["pcap-sidecar"]}
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert set(env) <= set(documented_settings())
    port = int(env.get("PCAP_HC_PORT", "12345"))
    assert sidecar["startupProbe"]["tcpSocket"]["port"] == port == 12345
    assert "ports" not in sidecar


def test_newer_reference_settings_are_checked_one_line_each(tmp_path):
    env = sidecar_env(
        tmp_path,
        PCAP_IFACE="lo",
        PCAP_VERBOSITY="LOUD",
        PCAP_EXEC_ENV="k8s",
        PCAP_INSTANCE_ID="a/b",
        PCAP_DEBUG="maybe",
    )
    r = run_entrypoint(env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        "pcaptool-sidecar: error: PCAP_DEBUG='maybe' is not a boolean: use true or false",
        "pcaptool-sidecar: error: PCAP_VERBOSITY='LOUD' must be INFO or DEBUG",
        "pcaptool-sidecar: error: PCAP_EXEC_ENV='k8s' must be run, gae or gke",
        "pcaptool-sidecar: error: PCAP_INSTANCE_ID='a/b' must be letters, digits, '.', '_' "
        "or '-' (up to 128)",
    ]
    r = run_entrypoint(sidecar_env(tmp_path, PCAP_IFACE="lo", PCAP_L3_PROTOS="arp,ipx"))
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.splitlines()
    assert "capture settings:" in line and "'ipx' (use ipv4, ipv6, arp or ALL)" in line


def test_example_gke_pod_wires_the_sidecar():
    yaml = pytest.importorskip("yaml")
    docs = list(yaml.safe_load_all((REPO / "examples" / "gke-pod.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    account, pod = kinds["ServiceAccount"], kinds["Pod"]
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert "iam.gke.io/gcp-service-account" in account["metadata"]["annotations"]
    # one pod: one network namespace for both containers (no hostNetwork, no second pod)
    assert not pod["spec"].get("hostNetwork")
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    (app,) = [c for c in containers.values() if c.get("ports")]
    sidecar = containers["pcap-sidecar"]
    assert app is not sidecar and "ports" not in sidecar
    caps = sidecar["securityContext"]["capabilities"]["add"]
    assert {"NET_RAW", "NET_ADMIN"} <= set(caps)
    env = {e["name"]: e for e in sidecar["env"]}
    assert set(env) - {"POD_NAME", "POD_NAMESPACE"} <= set(documented_settings())
    assert env["PCAP_EXEC_ENV"]["value"] == "gke"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    port = int(env["PCAP_HC_PORT"]["value"])
    assert sidecar["startupProbe"]["tcpSocket"]["port"] == port
    # every setting value the example gives passes the entrypoint's checks
    from pcaptool.record.verbosity import parse_level

    parse_level(env["PCAP_VERBOSITY"]["value"])
