"""Instance facts from a (fake) metadata server, and the fallbacks off Google Cloud."""

from __future__ import annotations

import calendar
import http.server
import socket
import threading
import time

import pytest
from gcs_fixtures import DEFAULT_METADATA, closed_port_host

from pcaptool.errors import UsageError
from pcaptool.sidecar import metadata

# 2026-01-02 03:04:05.678 UTC
STARTUP_NS = calendar.timegm((2026, 1, 2, 3, 4, 5, 0, 0, 0)) * 1_000_000_000 + 678_000_000


def test_hierarchy_from_metadata_server(metadata_server):
    env = {**metadata_server.env, "K_SERVICE": "frontend", "K_REVISION": "frontend-00042-xyz"}
    info = metadata.discover(env=env, startup_ns=STARTUP_NS)
    project = DEFAULT_METADATA["project/project-id"]
    instance = DEFAULT_METADATA["instance/id"]
    # instance/region is "projects/NUM/regions/REGION": only the last level is the region.
    assert info.region == "us-central1"
    assert info.prefix == (
        f"{project}/frontend/us-central1/frontend-00042-xyz/2026/01/02/03-04/{instance}"
    )
    assert info.object_name("part__eth0__20260102T030405.pcap.gz") == (
        f"{info.prefix}/part__eth0__20260102T030405.pcap.gz"
    )
    assert info.sources["project_id"] == "metadata"
    assert {"/computeMetadata/v1/project/project-id", "/computeMetadata/v1/instance/id"} <= set(
        metadata_server.requests
    )


def test_metadata_values_win_over_environment(metadata_server):
    env = {**metadata_server.env, "PROJECT_ID": "from-env", "REGION": "europe-west1"}
    info = metadata.discover(env=env, startup_ns=STARTUP_NS)
    assert (info.project_id, info.region) == ("test-project", "us-central1")


def test_missing_metadata_path_falls_back_per_value(metadata_server):
    del metadata_server.values["instance/region"]
    env = {**metadata_server.env, "GOOGLE_CLOUD_REGION": "asia-east1"}
    info = metadata.discover(env=env, startup_ns=STARTUP_NS)
    assert info.project_id == "test-project"
    assert (info.region, info.sources["region"]) == ("asia-east1", "GOOGLE_CLOUD_REGION")


def test_off_google_cloud_uses_environment_then_fixed_words():
    client = metadata.MetadataClient(closed_port_host(), timeout=0.5)
    env = {"GOOGLE_CLOUD_PROJECT": "my-proj", "GAE_SERVICE": "default", "GAE_VERSION": "v7"}
    info = metadata.discover(env=env, client=client, startup_ns=STARTUP_NS)
    assert client.reachable is False
    assert info.project_id == "my-proj"
    assert (info.service, info.revision) == ("default", "v7")
    assert info.region == metadata.UNKNOWN_REGION
    assert info.instance_id == socket.gethostname()
    assert info.sources == {
        "project_id": "GOOGLE_CLOUD_PROJECT",
        "region": "default",
        "instance_id": "hostname",
        "service": "GAE_SERVICE",
        "revision": "GAE_VERSION",
    }


def test_unreachable_server_is_asked_only_once(metadata_server):
    client = metadata.MetadataClient(closed_port_host(), timeout=0.5)
    assert client.get("project/project-id") is None
    # Now point the same client at a live server: it no longer asks anyone.
    client.host = metadata_server.host
    assert client.get("project/project-id") is None
    assert metadata_server.requests == []


def test_gce_metadata_host_and_legacy_root_like_google_auth():
    assert metadata.metadata_host({}) == "metadata.google.internal"
    assert metadata.metadata_host({"GCE_METADATA_ROOT": "10.0.0.1:80"}) == "10.0.0.1:80"
    both = {"GCE_METADATA_HOST": "127.0.0.1:1", "GCE_METADATA_ROOT": "10.0.0.1:80"}
    assert metadata.metadata_host(both) == "127.0.0.1:1"


def test_startup_timestamp_is_utc_minutes_and_can_be_shared(metadata_server):
    env = {**metadata_server.env, "INSTANCE_STARTUP_TIMESTAMP": "2025/12/31/23-59"}
    info = metadata.discover(env=env)
    assert info.startup_timestamp == "2025/12/31/23-59"
    now = metadata.discover(env=metadata_server.env)
    assert now.startup_timestamp == time.strftime(
        "%Y/%m/%d/%H-%M", time.gmtime(now.startup_ns / 1e9)
    )
    with pytest.raises(UsageError, match="INSTANCE_STARTUP_TIMESTAMP"):
        metadata.discover(env={**metadata_server.env, "INSTANCE_STARTUP_TIMESTAMP": "yesterday"})


def test_levels_cannot_add_or_remove_hierarchy_levels(metadata_server):
    env = {**metadata_server.env, "K_SERVICE": "a/b", "K_REVISION": ".."}
    info = metadata.discover(env=env, startup_ns=STARTUP_NS)
    levels = info.prefix.split("/")
    assert len(levels) == 4 + 4 + 1  # project/service/region/revision, Y/m/d/H-M, instance
    assert levels[1] == "a_b" and levels[3] == "_"


def test_a_metadata_server_that_never_answers_means_fallbacks():
    # Accepts the connection (the kernel does, from the backlog) and never replies.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        client = metadata.MetadataClient(host, timeout=0.3)
        info = metadata.discover(env={"PROJECT_ID": "p1"}, client=client, startup_ns=STARTUP_NS)
    assert client.reachable is False
    assert (info.project_id, info.sources["instance_id"]) == ("p1", "hostname")


def test_an_answer_without_the_flavor_header_is_not_trusted():
    # A captive portal or proxy answering 200 to anything is not a metadata server.
    class Portal(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "12")
            self.end_headers()
            self.wfile.write(b"evil-project")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        client = metadata.MetadataClient(f"127.0.0.1:{httpd.server_address[1]}", timeout=1)
        info = metadata.discover(env={}, client=client, startup_ns=STARTUP_NS)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert client.reachable is False
    assert info.project_id == metadata.UNKNOWN_PROJECT


GKE_ENV = {"PCAP_EXEC_ENV": "gke", "POD_NAME": "web-7d4b9c-x2x9q", "POD_NAMESPACE": "shop"}


def test_gke_hierarchy_from_metadata_server_and_downward_api(metadata_server):
    env = {**metadata_server.env, **GKE_ENV, "K_SERVICE": "ignored-on-gke"}
    info = metadata.discover(env=env, startup_ns=STARTUP_NS)
    instance = DEFAULT_METADATA["instance/id"]
    assert info.exec_env == "gke"
    assert info.prefix == (
        f"test-project/test-cluster/shop/web-7d4b9c-x2x9q/2026/01/02/03-04/{instance}"
    )
    assert "/computeMetadata/v1/instance/attributes/cluster-name" in metadata_server.requests
    assert (info.sources["cluster"], info.sources["namespace"], info.sources["pod"]) == (
        "metadata",
        "POD_NAMESPACE",
        "POD_NAME",
    )


def test_gke_fallbacks_without_cluster_name_or_downward_api(metadata_server):
    del metadata_server.values["instance/attributes/cluster-name"]
    info = metadata.discover(env={**metadata_server.env, "PCAP_EXEC_ENV": "GKE"}, startup_ns=0)
    levels = info.prefix.split("/")
    assert levels[:4] == ["test-project", metadata.UNKNOWN_CLUSTER, "default", socket.gethostname()]
    assert len(levels) == 9
    env = {**metadata_server.env, "PCAP_EXEC_ENV": "gke", "CLUSTER_NAME": "c-env"}
    assert metadata.discover(env=env, startup_ns=0).cluster == "c-env"


def test_cloud_run_does_not_ask_for_the_cluster(metadata_server):
    info = metadata.discover(env=metadata_server.env, startup_ns=STARTUP_NS)
    assert info.exec_env == "run"
    assert not any("cluster-name" in r for r in metadata_server.requests)


def test_exec_env_names_and_pcap_gae():
    assert metadata.exec_env({}) == "run"
    assert metadata.exec_env({"PCAP_GAE": "true"}) == "gae"
    assert metadata.exec_env({"PCAP_GAE": "true", "PCAP_EXEC_ENV": "gke"}) == "gke"
    assert metadata.exec_env({"PCAP_EXEC_ENV": " Run "}) == "run"
    with pytest.raises(UsageError, match="PCAP_EXEC_ENV='k8s': use run, gae or gke"):
        metadata.exec_env({"PCAP_EXEC_ENV": "k8s"})


def test_pcap_instance_id_overrides_metadata(metadata_server):
    env = {**metadata_server.env, "PCAP_INSTANCE_ID": "replica-3"}
    info = metadata.discover(env=env, startup_ns=STARTUP_NS)
    assert info.prefix.endswith("/2026/01/02/03-04/replica-3")
    assert info.sources["instance_id"] == "PCAP_INSTANCE_ID"
