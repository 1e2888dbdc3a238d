"""Schema-driven fuzzing of the control plane: schemathesis against the app's own OpenAPI,
every check, as a user, as an admin and without a token, then a restart on the same store
that must list (to the admin) exactly the jobs answered 201."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from svc_helpers import ServeProcess

TOKEN = "fuzz-token"  # principal ann, a user
ADMIN_TOKEN = "fuzz-admin"  # principal root, an admin
SETTINGS = {
    "API_TOKENS": f"ann:{TOKEN},root:admin:{ADMIN_TOKEN}",
    "MAX_CONCURRENT_JOBS": 0,  # the jobs stay PENDING: no driver per fuzzed submission
    "FOLLOW_HEARTBEAT_S": 0.5,
    "FOLLOW_IDLE_S": 1,  # a followed log of a job that never starts ends after a second
}


def schemathesis(
    url: str, har: Path, max_time: int, *options: str
) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("schemathesis")
    return subprocess.run(
        [
            str(cli),
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--max-time",
            str(max_time),
            "--request-timeout",
            "20",
            "--seed",
            "12",
            "--report",
            "har",
            "--report-har-path",
            str(har),
            "--no-color",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=har.parent,  # schemathesis keeps its example cache in ./.schemathesis
    )


def created_ids(har: Path) -> set[str]:
    """Ids of the jobs a HAR recording shows answered 201."""
    entries = json.loads(har.read_text())["log"]["entries"]
    return {
        json.loads(e["response"]["content"]["text"])["id"]
        for e in entries
        if e["response"]["status"] == 201
    }


def listed_ids(url: str) -> set[str]:
    ids: set[str] = set()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        while True:
            page = http.get("/v1/experiments", params={"limit": 500, "offset": len(ids)}).json()
            ids |= {item["id"] for item in page["items"]}
            if not page["items"] or len(ids) >= page["total"]:
                return ids


@pytest.mark.timeout(400)
def test_fuzzing_finds_no_server_error_nor_undocumented_status(
    tmp_path: Path, start_serve: Callable[..., ServeProcess]
) -> None:
    run_dir = tmp_path / "runs"
    svc = start_serve(run_dir, **SETTINGS)
    created: set[str] = set()
    for who, seconds, options in (  # without a token every answer is a 401: a short run
        ("user", 15, ("--header", f"Authorization: Bearer {TOKEN}")),
        ("admin", 15, ("--header", f"Authorization: Bearer {ADMIN_TOKEN}")),
        ("anonymous", 5, ()),
    ):
        har = tmp_path / f"{who}.har"
        result = schemathesis(svc.url, har, seconds, *options)
        assert result.returncode == 0, f"{who}:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
        created |= created_ids(har)
    assert created  # the runs with a token did store jobs
    assert "Traceback" not in svc.log()

    svc.stop()
    again = start_serve(run_dir, **SETTINGS)
    assert listed_ids(again.url) == created
