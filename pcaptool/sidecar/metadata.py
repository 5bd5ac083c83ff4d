"""Where this instance runs: project, region, instance id, service, revision, start time.

On Google Cloud (Cloud Run, GKE, App Engine Flex, GCE) the metadata server answers
``http://metadata.google.internal/computeMetadata/v1/...`` when asked with the header
``Metadata-Flavor: Google``; its host can be moved with ``GCE_METADATA_HOST`` (or the older
``GCE_METADATA_ROOT``) exactly as google-auth does. Off Google Cloud the lookups fail fast
(short timeouts, and the first refused connection skips the rest) and each value falls back
to the environment, then to a fixed word, so object names still have every level.

Object names follow the reference sidecar's hierarchy
``PROJECT_ID/SERVICE/REGION/REVISION/INSTANCE_STARTUP_TIMESTAMP/INSTANCE_ID/<part>``, where
the timestamp is ``%Y/%m/%d/%H-%M`` in UTC (gchux/cloud-run-tcpdump ``scripts/init``).
On GKE (``PCAP_EXEC_ENV=gke``) the first levels are
``PROJECT_ID/CLUSTER/NAMESPACE/POD`` instead: the cluster from the metadata server's
``instance/attributes/cluster-name``, the namespace and pod from the downward API's
``POD_NAMESPACE`` and ``POD_NAME`` (examples/gke-pod.yaml).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from pcaptool.sidecar import selfport

DEFAULT_METADATA_HOST = "metadata.google.internal"
METADATA_HEADERS = {"Metadata-Flavor": "Google"}
DEFAULT_TIMEOUT = 1.0  # seconds per lookup; the metadata server answers in milliseconds
STARTUP_FORMAT = "%Y/%m/%d/%H-%M"

# Fallback words when neither the metadata server nor the environment says.
UNKNOWN_PROJECT = "unknown-project"
UNKNOWN_SERVICE = "pcaptool"
UNKNOWN_REGION = "unknown-region"
UNKNOWN_REVISION = "unknown-revision"
UNKNOWN_CLUSTER = "unknown-cluster"
UNKNOWN_NAMESPACE = "default"
EXEC_ENVS = ("run", "gae", "gke")
TRUE_WORDS = {"1", "t", "T", "TRUE", "true", "True"}  # Go's strconv.ParseBool, as PCAP_GAE


def exec_env(env: dict[str, str] | None = None) -> str:
    """PCAP_EXEC_ENV (run, gae or gke); unset, PCAP_GAE=true means gae, else run."""
    env = os.environ if env is None else env
    value = env.get("PCAP_EXEC_ENV", "").strip().lower()
    if not value:
        return "gae" if env.get("PCAP_GAE", "") in TRUE_WORDS else "run"
    if value not in EXEC_ENVS:
        from pcaptool.errors import UsageError

        raise UsageError(f"PCAP_EXEC_ENV={value!r}: use run, gae or gke")
    return value


def metadata_host(env: dict[str, str] | None = None) -> str:
    """The metadata server's host[:port], as google-auth picks it."""
    env = os.environ if env is None else env
    return env.get("GCE_METADATA_HOST") or env.get("GCE_METADATA_ROOT") or DEFAULT_METADATA_HOST


class MetadataClient:
    """Reads values from the metadata server; after one unreachable answer it stops asking."""

    def __init__(self, host: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.host = host or metadata_host()
        self.timeout = timeout
        self.reachable: bool | None = None  # None: not asked yet

    def get(self, path: str) -> str | None:
        """The text at computeMetadata/v1/PATH, or None when absent or unreachable."""
        if self.reachable is False:
            return None
        url = f"http://{self.host}/computeMetadata/v1/{path}"
        request = urllib.request.Request(url, headers=METADATA_HEADERS)
        # An explicit empty proxy map: the metadata server is link-local, never proxied.
        # Connections leave from PCAP_SELF_PORTS (when set): the capture never sees them.
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), selfport.HTTPHandler(selfport.configured())
        )
        try:
            with opener.open(request, timeout=self.timeout) as resp:
                # Something that answers without the flavor header is not a metadata server
                # (a captive portal, a proxy): treat it as absent.
                if resp.headers.get("Metadata-Flavor") != "Google":
                    self.reachable = False
                    return None
                self.reachable = True
                return resp.read().decode("utf-8", "replace").strip() or None
        except urllib.error.HTTPError:
            self.reachable = True  # it answered; this path is just not there
            return None
        except (OSError, ValueError):
            # URLError (DNS failure, refused), timeouts, a malformed host.
            self.reachable = False
            return None


def _segment(value: str) -> str:
    """One level of an object name: no slashes, no empty string, no dot-only names."""
    cleaned = value.strip().replace("/", "_")
    return cleaned if cleaned.strip(".") else "_"


@dataclass(frozen=True)
class InstanceInfo:
    project_id: str
    service: str
    region: str
    revision: str
    instance_id: str
    startup_ns: int  # integer nanoseconds since the epoch, UTC
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    exec_env: str = "run"
    cluster: str = UNKNOWN_CLUSTER  # the levels of exec_env "gke"
    namespace: str = UNKNOWN_NAMESPACE
    pod: str = ""

    @property
    def startup_timestamp(self) -> str:
        """INSTANCE_STARTUP_TIMESTAMP as the reference writes it (UTC, minute resolution)."""
        return time.strftime(STARTUP_FORMAT, time.gmtime(self.startup_ns // 1_000_000_000))

    @property
    def prefix(self) -> str:
        """PROJECT_ID/SERVICE/REGION/REVISION/INSTANCE_STARTUP_TIMESTAMP/INSTANCE_ID, or on
        GKE PROJECT_ID/CLUSTER/NAMESPACE/POD/INSTANCE_STARTUP_TIMESTAMP/INSTANCE_ID."""
        levels = [self.project_id, self.service, self.region, self.revision]
        if self.exec_env == "gke":
            levels = [self.project_id, self.cluster, self.namespace, self.pod]
        head = "/".join(_segment(v) for v in levels)
        return f"{head}/{self.startup_timestamp}/{_segment(self.instance_id)}"

    def object_name(self, part: str) -> str:
        return f"{self.prefix}/{_segment(part)}"


def _first(*candidates: tuple[str, str | None]) -> tuple[str, str]:
    for source, value in candidates:
        if value:
            return value, source
    raise AssertionError("the last candidate is always a fixed word")


def discover(
    env: dict[str, str] | None = None,
    client: MetadataClient | None = None,
    startup_ns: int | None = None,
) -> InstanceInfo:
    """Ask the metadata server once, fall back to the environment, then to fixed words.

    Project: metadata ``project/project-id``, then ``PROJECT_ID``, ``GOOGLE_CLOUD_PROJECT``,
    ``GCLOUD_PROJECT``. Region: metadata ``instance/region`` (last path level), then
    ``REGION``, ``GOOGLE_CLOUD_REGION``, ``CLOUDSDK_COMPUTE_REGION``. Instance id: metadata
    ``instance/id``, then the host name (``PCAP_INSTANCE_ID`` overrides both). Service: ``K_SERVICE``, ``GAE_SERVICE``. Revision:
    ``K_REVISION``, ``GAE_VERSION``. Startup time: ``INSTANCE_STARTUP_TIMESTAMP`` (already
    formatted ``YYYY/MM/DD/HH-MM``, so several processes of one instance can share it) or now.
    GKE (see exec_env): cluster from metadata ``instance/attributes/cluster-name``, then
    ``CLUSTER_NAME``; namespace ``POD_NAMESPACE``; pod ``POD_NAME``, then the host name.
    """
    env = os.environ if env is None else env
    where = exec_env(env)
    client = client or MetadataClient(metadata_host(env))
    paths = ("project/project-id", "instance/region", "instance/id")
    if where == "gke":
        paths += ("instance/attributes/cluster-name",)
    md_project, md_region, md_instance, *md_gke = _ask_all(client, paths)
    if md_region:
        md_region = md_region.rsplit("/", 1)[-1]

    project, project_src = _first(
        ("metadata", md_project),
        ("PROJECT_ID", env.get("PROJECT_ID")),
        ("GOOGLE_CLOUD_PROJECT", env.get("GOOGLE_CLOUD_PROJECT")),
        ("GCLOUD_PROJECT", env.get("GCLOUD_PROJECT")),
        ("default", UNKNOWN_PROJECT),
    )
    region, region_src = _first(
        ("metadata", md_region),
        ("REGION", env.get("REGION")),
        ("GOOGLE_CLOUD_REGION", env.get("GOOGLE_CLOUD_REGION")),
        ("CLOUDSDK_COMPUTE_REGION", env.get("CLOUDSDK_COMPUTE_REGION")),
        ("default", UNKNOWN_REGION),
    )
    instance, instance_src = _first(
        ("PCAP_INSTANCE_ID", env.get("PCAP_INSTANCE_ID", "").strip()),
        ("metadata", md_instance),
        ("hostname", socket.gethostname()),
        ("default", "unknown-instance"),
    )
    service, service_src = _first(
        ("K_SERVICE", env.get("K_SERVICE")),
        ("GAE_SERVICE", env.get("GAE_SERVICE")),
        ("default", UNKNOWN_SERVICE),
    )
    revision, revision_src = _first(
        ("K_REVISION", env.get("K_REVISION")),
        ("GAE_VERSION", env.get("GAE_VERSION")),
        ("default", UNKNOWN_REVISION),
    )
    if startup_ns is None:
        startup_ns = _startup_from_env(env.get("INSTANCE_STARTUP_TIMESTAMP"))
    gke = _gke_levels(env, md_gke[0] if md_gke else None) if where == "gke" else {}
    sources = gke.pop("sources", {})
    return InstanceInfo(
        exec_env=where,
        **gke,
        project_id=project,
        service=service,
        region=region,
        revision=revision,
        instance_id=instance,
        startup_ns=startup_ns,
        sources={
            "project_id": project_src,
            "region": region_src,
            "instance_id": instance_src,
            "service": service_src,
            "revision": revision_src,
            **sources,
        },
    )


def _gke_levels(env, md_cluster: str | None) -> dict:
    """cluster, namespace and pod of a GKE pod, with where each came from."""
    cluster, cluster_src = _first(
        ("metadata", md_cluster),
        ("CLUSTER_NAME", env.get("CLUSTER_NAME")),
        ("default", UNKNOWN_CLUSTER),
    )
    namespace, namespace_src = _first(
        ("POD_NAMESPACE", env.get("POD_NAMESPACE")), ("default", UNKNOWN_NAMESPACE)
    )
    pod, pod_src = _first(
        ("POD_NAME", env.get("POD_NAME")),
        ("hostname", socket.gethostname()),
        ("default", "unknown-pod"),
    )
    return {
        "cluster": cluster,
        "namespace": namespace,
        "pod": pod,
        "sources": {"cluster": cluster_src, "namespace": namespace_src, "pod": pod_src},
    }


def _ask_all(client: MetadataClient, paths: tuple[str, ...]) -> list[str | None]:
    """Ask for each path, never waiting much past the timeout in all.

    Socket timeouts do not cover name resolution: off Google Cloud a slow resolver could
    hold ``metadata.google.internal`` for seconds. Daemon threads let us stop waiting.
    """
    answers: list[str | None] = [None] * len(paths)

    def ask() -> None:
        for i, path in enumerate(paths):
            answers[i] = client.get(path)

    worker = threading.Thread(target=ask, name="metadata", daemon=True)
    worker.start()
    worker.join(client.timeout * (len(paths) + 1))
    if worker.is_alive():
        client.reachable = False
        return [None] * len(paths)
    return answers


def _startup_from_env(value: str | None) -> int:
    if value:
        import calendar

        try:
            parsed = time.strptime(value, STARTUP_FORMAT)
        except ValueError:
            from pcaptool.errors import UsageError

            raise UsageError(
                f"INSTANCE_STARTUP_TIMESTAMP={value!r} is not YYYY/MM/DD/HH-MM (UTC)"
            ) from None
        return calendar.timegm(parsed) * 1_000_000_000
    return time.time_ns()
