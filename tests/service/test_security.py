"""Bearer tokens (401), data-directory confinement (422) and the body size bound (413)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from svc_helpers import make_settings, spec

from service.api.deps import token_ok
from service.api.server import ServerThread


def test_tokens(tmp_path: Path, start_server: Callable[..., ServerThread]) -> None:
    server = start_server(make_settings(tmp_path / "runs", API_TOKENS="alpha-token,beta-token"))
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/healthz").status_code == 200  # liveness stays open
        missing = http.get("/v1/experiments")
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = http.get("/v1/experiments", headers={"Authorization": "Bearer alpha-tokeN"})
        assert wrong.status_code == 401
        basic = http.get("/v1/experiments", headers={"Authorization": "Basic YWxwaGE6eA=="})
        assert basic.status_code == 401
        assert http.post("/v1/experiments", json=spec()).status_code == 401
        for token in ("alpha-token", "beta-token"):
            ok = http.get("/v1/experiments", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
        log = (tmp_path / "runs").rglob("*.log")
        assert not any("alpha-token" in p.read_text() for p in log)


def test_token_compare_checks_every_token() -> None:
    tokens = [b"one", b"two"]
    assert token_ok("two", tokens) and token_ok("one", tokens)
    assert not token_ok("tw", tokens) and not token_ok("", tokens) and not token_ok("x", [])


def test_data_root_must_be_under_data_dirs(
    tmp_path: Path, start_server: Callable[..., ServerThread]
) -> None:
    allowed = tmp_path / "data"
    (allowed / "imagenet").mkdir(parents=True)
    server = start_server(make_settings(tmp_path / "runs", DATA_DIRS=str(allowed)))
    with httpx.Client(base_url=server.url) as http:
        outside = {"kind": "imagefolder", "root": str(tmp_path / "elsewhere")}
        response = http.post("/v1/experiments", json=spec(data=outside))
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "data", "root"]
        assert "not under an allowed data directory" in error["msg"]
        sneaky = {"kind": "imagefolder", "root": str(allowed / ".." / "elsewhere")}
        assert http.post("/v1/experiments", json=spec(data=sneaky)).status_code == 422
        storage = http.post("/v1/experiments", json=spec(storage_path="/etc/bioprop"))
        assert [e["loc"] for e in storage.json()["detail"]] == [["body", "storage_path"]]
        inside = {"kind": "imagefolder", "root": str(allowed / "imagenet")}
        response = http.post("/v1/experiments", json=spec("hang", data=inside))
        assert response.status_code == 201, response.text
        http.post(f"/v1/experiments/{response.json()['id']}/cancel", params={"force": "true"})


def test_body_size_bound(tmp_path: Path, start_server: Callable[..., ServerThread]) -> None:
    server = start_server(make_settings(tmp_path / "runs", MAX_BODY_BYTES=4096))
    with httpx.Client(base_url=server.url) as http:
        big = spec(rule={"name": "bp", "params": {"pad": "x" * 8000}})
        response = http.post("/v1/experiments", json=big)
        assert response.status_code == 413

        def chunks():  # no Content-Length: the bound applies to the streamed body too
            yield b'{"name": "ok", "rule": {"params": {"pad": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}}}'

        response = http.post(
            "/v1/experiments", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert http.post("/v1/experiments", json=spec()).status_code == 201
