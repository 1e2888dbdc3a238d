"""Python client for the control plane's REST API (used by the ``bioprop`` CLI)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from trainers import contracts
from trainers.spec import parse_yaml

__all__ = ["ApiError", "Client", "FINAL_STATES", "ServiceUnreachable"]

FINAL_STATES = tuple(state.value for state in contracts.FINAL_STATES)  # as the API spells them


class ApiError(RuntimeError):
    """A non-2xx answer: ``status`` and the server's ``detail``."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"HTTP {status}: {_format_detail(detail)}")


class ServiceUnreachable(ApiError):
    """No service answers at the client's URL (connection refused, name or network
    error): the message says how to start one or point the client elsewhere."""

    def __init__(self, url: str, cause: Exception) -> None:
        self.status, self.detail = 0, str(cause)
        RuntimeError.__init__(
            self,
            f"no bioprop service answers at {url} ({cause}); start one with `bioprop serve`, "
            "or give its URL with --server or BIOPROP_SERVER (`bioprop run SPEC` trains "
            "without a service)",
        )


class _Transport(httpx.HTTPTransport):
    """httpx's transport, a failed connection raised as :class:`ServiceUnreachable`."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except httpx.ConnectError as exc:
            raise ServiceUnreachable(str(request.url.copy_with(path="", query=None)), exc) from exc


def _format_detail(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', [])[1:]) or 'body'}: {e.get('msg')}"
            for e in detail
            if isinstance(e, dict)
        )
    return str(detail)


def _spec_dict(spec: dict[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(spec, dict):
        return spec
    text = str(spec)
    path = Path(text)
    if "\n" not in text and path.exists():
        text = path.read_text()
    elif "\n" not in text and not text.lstrip().startswith("{"):
        raise FileNotFoundError(f"spec file not found: {path}")
    data = parse_yaml(text)
    if not isinstance(data, dict):
        raise ValueError(f"spec must be a mapping, got {type(data).__name__}")
    return data


class Client:
    """``Client(base_url, token=None)``: submit, get, list, cancel, logs, metrics, report,
    wait."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=_Transport()
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response

    def health(self) -> dict[str, Any]:
        return self._check(self._http.get("/healthz")).json()

    def submit(
        self,
        spec: dict[str, Any] | str | Path,
        *,
        idempotency_key: str | None = None,
        priority: int = 0,
    ) -> dict[str, Any]:
        """Submit a spec (dict, YAML/JSON file path or text); returns the job. ``priority``
        orders it among the caller's own PENDING jobs (higher first)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        params = {"priority": priority} if priority else {}
        return self._check(
            self._http.post(
                "/v1/experiments", json=_spec_dict(spec), headers=headers, params=params
            )
        ).json()

    def get(self, job_id: str, *, progress: bool = True) -> dict[str, Any]:
        params = {} if progress else {"progress": "false"}
        return self._check(self._http.get(f"/v1/experiments/{job_id}", params=params)).json()

    def list(
        self,
        *,
        state: str | list[str] | None = None,
        name: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        offset: int = 0,
        include_spec: bool = False,
    ) -> dict[str, Any]:
        """A page of jobs; their specs only with ``include_spec`` (then at most 20 a page)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if include_spec:
            params["include"] = "spec"
        if state:
            params["state"] = [state] if isinstance(state, str) else state
        if name:
            params["name"] = name
        if owner:
            params["owner"] = owner
        return self._check(self._http.get("/v1/experiments", params=params)).json()

    def cancel(self, job_id: str, *, force: bool = False) -> dict[str, Any]:
        params = {"force": "true"} if force else {}
        return self._check(
            self._http.post(f"/v1/experiments/{job_id}/cancel", params=params)
        ).json()

    def logs(self, job_id: str, *, tail: int | None = None) -> str:
        params = {"tail": tail} if tail else {}
        return self._check(self._http.get(f"/v1/experiments/{job_id}/logs", params=params)).text

    def follow_logs(self, job_id: str, *, tail: int | None = None) -> Iterator[str]:
        """Yield log text as the driver writes it, until the job ends."""
        params: dict[str, Any] = {"follow": "true"}
        if tail:
            params["tail"] = tail
        with self._http.stream(
            "GET", f"/v1/experiments/{job_id}/logs", params=params, timeout=None
        ) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            yield from response.iter_text()

    def metrics(self, job_id: str) -> dict[str, Any]:
        return self._check(self._http.get(f"/v1/experiments/{job_id}/metrics")).json()

    def report(self, job_id: str) -> str:
        """The job's comparison report, a self-contained HTML page."""
        return self._check(self._http.get(f"/v1/experiments/{job_id}/report")).text

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 2.0,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job reaches a final state; returns the job. ``TimeoutError`` past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_update is not None:
                on_update(job)
            if job["state"] in FINAL_STATES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s")
            time.sleep(poll)
