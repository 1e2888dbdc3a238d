"""Bounded connections: what ``bioprop serve`` allows a client before its app sees a request.

- :func:`bounded_protocol`: uvicorn's h11 protocol with a **header read timeout** (a request's
  line and headers must arrive within ``HEADER_TIMEOUT_S`` of its first byte, or of the
  connection's opening), a **body read timeout** (its body within ``BODY_TIMEOUT_S`` of its
  headers), each answered ``408 Request Timeout`` and closed, and a cap of
  ``MAX_CONNECTIONS_PER_CLIENT`` open connections per client address (more are answered
  ``429`` at once, their side closed, what they still send dropped, the socket closed when
  they close theirs or after ``REFUSED_LINGER_S``: a lingering close, so no reset destroys
  the answer). Slow or endless requests cannot hold sockets and file
  descriptors for ever.
- :class:`RequestBounds`: ASGI middleware refusing a request line plus headers over
  ``MAX_HEADER_BYTES`` (431; h11's own bound only holds for headers that arrive in pieces)
  and, while the API is open (no tokens), a ``Host`` outside ``ALLOWED_HOSTS`` (400: a page
  on another site cannot reach a local service by DNS rebinding).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.core.settings import Settings

__all__ = ["RequestBounds", "bounded_protocol", "host_name"]

REFUSED_LINGER_S = 2.0  # how long a refused (429) connection is drained before it is closed


def _raw_response(status: int, reason: str, message: str, *extra: str) -> bytes:
    body = json.dumps({"detail": message}).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def bounded_protocol(settings: Settings) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with this service's read timeouts and per-client cap."""
    header_s = settings.HEADER_TIMEOUT_S
    body_s = settings.BODY_TIMEOUT_S
    per_client = settings.MAX_CONNECTIONS_PER_CLIENT
    open_by_host: Counter[str] = Counter()

    class BoundedH11Protocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _phase = ""
        _host = ""
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._host = self.client[0] if self.client else ""
            open_by_host[self._host] += 1
            if open_by_host[self._host] > per_client:
                self._refused = True
                transport.write(
                    _raw_response(
                        429,
                        "Too Many Requests",
                        f"more than {per_client} open connections from this address "
                        "(BIOPROP_MAX_CONNECTIONS_PER_CLIENT)",
                        "retry-after: 1",
                    )
                )
                # a lingering close: closing a socket whose client has sent bytes we never
                # read makes the kernel send a reset, which can destroy the 429 on its way;
                # end our side instead, drop what still comes, and close once the client
                # has (or after REFUSED_LINGER_S)
                if transport.can_write_eof():
                    transport.write_eof()
                self.loop.call_later(REFUSED_LINGER_S, transport.close)
                return
            self._arm("headers", header_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            open_by_host[self._host] -= 1
            if open_by_host[self._host] <= 0:
                del open_by_host[self._host]
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # a refused client's request: read and dropped
            if self.conn.their_state is h11.IDLE and self._timer is None:
                self._arm("headers", header_s)  # a new request on a kept-alive connection
            super().data_received(data)
            self._follow_state()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow_state()

        def _follow_state(self) -> None:
            state = self.conn.their_state
            if state is h11.SEND_BODY:
                if self._phase != "body":
                    self._arm("body", body_s)
            elif state is not h11.IDLE:  # the request is in (DONE), or the connection ends
                self._disarm()

        def _arm(self, phase: str, seconds: float) -> None:
            self._disarm()
            self._phase = phase
            self._timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._phase = ""

        def _expired(self) -> None:
            phase, self._timer = self._phase, None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            # a response already on the wire for this request (or, while headers of a next
            # request trickle in, for the one before) is not interrupted by a 408
            answered = (
                cycle is not None
                and cycle.response_started
                and (phase == "body" or not cycle.response_complete)
            )
            if not answered:
                limit, name = (
                    (header_s, "HEADER_TIMEOUT_S")
                    if phase == "headers"
                    else (body_s, "BODY_TIMEOUT_S")
                )
                message = f"the request {phase} did not arrive within {limit:g} s (BIOPROP_{name})"
                self.transport.write(_raw_response(408, "Request Timeout", message))
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # the app reading the body sees a disconnect
                cycle.message_event.set()
            self.transport.close()

    return BoundedH11Protocol


def host_name(host: str) -> str:
    """The name of a ``Host`` header, without its port (``[::1]:8000`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class RequestBounds:
    """ASGI middleware: 431 past ``MAX_HEADER_BYTES`` of request line and headers; on an
    open API (no tokens), 400 unless ``Host`` is one of ``ALLOWED_HOSTS``."""

    def __init__(self, app: Any, *, max_header_bytes: int, allowed_hosts: list[str] | None):
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.allowed = {host_name(h) for h in allowed_hosts} if allowed_hosts else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        size += sum(len(k) + len(v) + 4 for k, v in scope["headers"])
        if size > self.max_header_bytes:
            return await self._refuse(
                send,
                431,
                f"request line and headers exceed {self.max_header_bytes} bytes "
                "(BIOPROP_MAX_HEADER_BYTES)",
            )
        if self.allowed is not None:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if host_name(host) not in self.allowed:
                return await self._refuse(
                    send,
                    400,
                    "this Host is not served: an open API answers only BIOPROP_ALLOWED_HOSTS",
                )
        return await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(send: Any, status: int, message: str) -> None:
        body = json.dumps({"detail": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
