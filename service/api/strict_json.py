"""Request bodies parsed strictly: a JSON object with a key twice is refused (400), not
silently reduced to its last value (which of two ``"rule"`` keys a client meant is
anyone's guess)."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

__all__ = ["StrictJSONRoute", "loads_strict"]


class _Duplicate(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


def loads_strict(body: bytes | str) -> Any:
    """``json.loads`` that raises :class:`json.JSONDecodeError` on a duplicate key."""
    try:
        return json.loads(body, object_pairs_hook=_no_duplicates)
    except _Duplicate as exc:
        key = str(exc.args[0])
        raise json.JSONDecodeError(f"duplicate key {key[:100]!r}", "", 0) from None


class _StrictRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An ``APIRoute`` whose request bodies are parsed by :func:`loads_strict` (FastAPI
    answers its ``JSONDecodeError`` as ``json_invalid``, which :mod:`service.api.errors` makes a
    400)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictRequest(request.scope, request.receive))

        return strict
