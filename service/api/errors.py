"""Error answers that always render: 422 bodies made JSON-safe, 503 when the job store is
saturated, a 405's ``Allow`` complete.

FastAPI's own 422 handler echoes each error's ``input``; an input holding ``NaN``, a lone
surrogate or a 500-level nesting cannot be encoded as JSON, and the refusal itself became a
500. :func:`json_safe` bounds and cleans what is echoed (non-finite numbers as strings,
unencodable characters escaped, long strings and deep or wide containers cut), so a 422
stays a 422 whatever was sent.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from service.core.db import StoreBusy

__all__ = ["install", "json_safe"]

MAX_DEPTH = 6
MAX_ITEMS = 50
MAX_TEXT = 200


def _text(value: str, cut: bool = True) -> str:
    if cut and len(value) > MAX_TEXT:
        value = value[:MAX_TEXT] + "..."
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` reduced to what strict JSON (UTF-8, no NaN) encodes, bounded in size
    (strings cut at :data:`MAX_TEXT`, containers at :data:`MAX_ITEMS` and :data:`MAX_DEPTH`)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else _text(f"<integer of {value.bit_length()} bits>")
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _text(value)
    if depth >= MAX_DEPTH:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())[:MAX_ITEMS]
        return {_text(str(k)): json_safe(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in list(value)[:MAX_ITEMS]]
    return _text(str(value))


def _plain(value: Any) -> Any:
    """``loc``, ``msg``, ``type``: ours, kept whole, unencodable characters escaped."""
    if isinstance(value, str):
        return _text(value, cut=False)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    invalid = [e for e in exc.errors() if e.get("type") == "json_invalid"]
    if invalid:  # not a spec at all: 400, as documented (a spec that is JSON but wrong: 422)
        reason = (invalid[0].get("ctx") or {}).get("error") or "JSON decode error"
        return JSONResponse(
            {"detail": f"the body is not valid JSON: {_text(str(reason))}"},
            status.HTTP_400_BAD_REQUEST,
        )
    errors = []
    for error in exc.errors():
        safe = {
            key: json_safe(value) if key == "input" else _plain(value)
            for key, value in error.items()
            if key != "ctx"
        }
        if "ctx" in error:
            safe["ctx"] = json_safe(jsonable_encoder(error["ctx"], custom_encoder={}))
        errors.append(safe)
    return JSONResponse({"detail": errors}, status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _store_busy(request: Request, exc: Exception) -> JSONResponse:
    detail = str(exc) if isinstance(exc, StoreBusy) else "the job store is busy; retry later"
    return JSONResponse(
        {"detail": detail}, status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "1"}
    )


def _documented_methods(app: FastAPI, path: str) -> set[str]:
    """The methods the OpenAPI schema documents for ``path`` (a concrete request path).

    Read from the schema rather than the router: Starlette names only the methods of the
    last route that matched, and FastAPI's included routers do not expose their routes."""
    allowed: set[str] = set()
    for template, operations in app.openapi().get("paths", {}).items():
        regex, _, _ = compile_path(template)
        if regex.match(path):
            allowed |= {m.upper() for m in operations if m.upper() in _HTTP_METHODS}
    if "GET" in allowed:
        allowed.add("HEAD")
    return allowed


_HTTP_METHODS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer, but a 405's ``Allow`` lists every documented method of the path
    (``/v1/experiments`` has a GET route and a POST route)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        allowed = _documented_methods(request.app, request.url.path)
        if allowed:
            exc = HTTPException(exc.status_code, exc.detail, {"Allow": ", ".join(sorted(allowed))})
    return await http_exception_handler(request, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StoreBusy, _store_busy)
    app.add_exception_handler(PoolTimeout, _store_busy)
