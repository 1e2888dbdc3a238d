"""Issue 22 over real HTTP against a real ``bioprop serve``: a service a lab shares.

One module-wide server with two users (``ann``, ``bob``), an admin and a legacy plain
token, ``DATA_DIRS`` set and ``MAX_CONCURRENT_JOBS=0`` (jobs stay PENDING: no driver per
submission); tests that need drivers or settings of their own start their own server.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from svc_helpers import ServeProcess, spec

ANN = {"Authorization": "Bearer ann-secret"}
BOB = {"Authorization": "Bearer bob-secret"}
ADMIN = {"Authorization": "Bearer root-secret"}
LEGACY = {"Authorization": "Bearer plain-legacy"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    base = tmp_path_factory.mktemp("tenancy")
    (base / "data").mkdir()
    proc = ServeProcess(
        base / "runs",
        API_TOKENS="ann-secret",
        DATA_DIRS=str(base / "data"),
        MAX_CONCURRENT_JOBS=0,
    ).start()
    yield proc
    try:
        proc.stop()
    except AssertionError:
        pass


def client(svc: ServeProcess, headers: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=svc.url, headers=headers, timeout=30)


def refused(response: httpx.Response) -> list[str]:
    """The ``loc`` paths a 422 names, as dotted strings."""
    assert response.status_code == 422, response.text
    return [".".join(map(str, e["loc"][1:])) for e in response.json()["detail"]]


def test_encoded_storage_escapes_and_endpoint_override_are_refused(lab: ServeProcess) -> None:
    data = lab.run_dir.parent / "data"
    run_dir = lab.run_dir
    with client(lab, ANN) as http:
        victim = http.post("/v1/experiments", json=spec()).json()["id"]
        for storage in (
            f"file://{data}/%2e%2e/x",  # decodes to <data>/../x: outside DATA_DIRS
            f"local://{data}/..%2f..%2fx",
            f"file://{run_dir}/%6aobs/{victim}",  # decodes to another job's folder
            "s3://bucket/x?endpoint_override=attacker.example:9000",
            "s3:///x",  # no bucket
            "s3://../../etc",
            "hdfs://namenode/x",  # a scheme this service does not enable
        ):
            response = http.post("/v1/experiments", json=spec(storage_path=storage))
            assert refused(response) == ["storage_path"], storage
        query = http.post("/v1/experiments", json=spec(storage_path="s3://b1/x?scheme=http"))
        assert "endpoint_override" in query.json()["detail"][0]["msg"]
        # what is admitted is stored in the form that was checked: no escapes left
        ok = http.post("/v1/experiments", json=spec(storage_path=f"file://{data}/ck%70ts/a/../b"))
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["storage_path"] == str(data / "ckpts" / "b")
        s3 = http.post("/v1/experiments", json=spec(storage_path="s3://lab-ckpts/ann/run1"))
        assert s3.json()["spec"]["storage_path"] == "s3://lab-ckpts/ann/run1"
