"""The shared loopback servers behave like the real services the code talks to."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest


def test_gcs_server_keeps_objects_across_restart(gcs_server):
    bucket = gcs_server.make_bucket("keep")
    bucket.blob("a/b/part.pcap").upload_from_string(b"\xd4\xc3\xb2\xa1payload")
    gcs_server.stop()
    assert not gcs_server.running
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{gcs_server.endpoint}/storage/v1/b", timeout=2)
    gcs_server.start()
    assert gcs_server.objects("keep") == {"a/b/part.pcap": b"\xd4\xc3\xb2\xa1payload"}
    assert gcs_server.env == {"STORAGE_EMULATOR_HOST": gcs_server.endpoint}


def test_metadata_server_needs_the_flavor_header(metadata_server):
    url = f"http://{metadata_server.host}/computeMetadata/v1/project/project-id"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=2)
    assert err.value.code == 403
    req = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(req, timeout=2) as resp:
        assert resp.headers["Metadata-Flavor"] == "Google"
        assert resp.read() == b"test-project"
    assert metadata_server.env == {"GCE_METADATA_HOST": metadata_server.host}
