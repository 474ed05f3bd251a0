"""`serve()`: uvicorn with the limits every cdrwatch HTTP service runs under.

- **Header-read timeout** (`header_timeout_seconds`, 10 s): a connection that has not sent
  a complete request header that long after it opened (or after it started the next
  request) is closed. uvicorn has no such setting: `GuardedH11Protocol` adds it, so 500
  half-open or byte-dribbling connections do not stay open.
- **Keep-alive timeout** (`keep_alive_seconds`, 5 s): an idle connection between requests.
- **Header size** (`max_header_bytes`, 16 KiB): a longer request line plus headers is
  answered 431 and the connection closed (uvicorn's h11 answers every parse error 400).
- **Lingering close**: every close the server makes (an answer with `connection: close`
  such as a 401 to a request whose body was never read, a 431, a timeout) first shuts the
  sending side and reads and drops what the client still sends, until the client closes,
  `LINGER_SECONDS` pass or `LINGER_BYTES` arrive. Closing a socket with unread bytes makes
  the kernel send a reset, and a reset can reach the client before it has read the
  answer, which it then never sees.

The h11 protocol is used whatever else is installed, so these hold in every deployment.
"""

from __future__ import annotations

import asyncio
import http
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
DEFAULT_KEEP_ALIVE_SECONDS = 5
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


class LingeringTransport:
    """The connection's transport, except that `close()` lingers (see the module text).
    uvicorn calls `close()` from several places; wrapping the transport covers them all."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._deadline: asyncio.TimerHandle | None = None
        self._dropped = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    @property
    def lingering(self) -> bool:
        return self._deadline is not None

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.is_closing():
            return
        if not self._transport.can_write_eof():
            self._transport.close()
            return
        self._transport.write_eof()
        self._transport.resume_reading()
        self._deadline = self._loop.call_later(LINGER_SECONDS, self._transport.close)

    def drop(self, data: bytes) -> None:
        """Bytes that arrived while lingering."""
        self._dropped += len(data)
        if self._dropped > LINGER_BYTES:
            self._transport.close()

    def closed(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header-read timeout and a 431 for oversized headers."""

    header_timeout_seconds = DEFAULT_HEADER_TIMEOUT_SECONDS
    max_header_bytes = DEFAULT_MAX_HEADER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.lingering_transport = LingeringTransport(transport, self.loop)
        super().connection_made(self.lingering_transport)  # type: ignore[arg-type]
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        self.lingering_transport.closed()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering_transport.lingering:
            self.lingering_transport.drop(data)
            return
        if self.conn.their_state is h11.IDLE and self._header_too_large(data):
            self._send_error(431, "Request header fields too large.")
            return
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            # Bytes of a request header that is not complete yet: the clock runs from the
            # first of them (the keep-alive timer stopped when they arrived).
            if self._header_timer is None and self.conn.trailing_data[0]:
                self._arm_header_timer()
        else:
            self._disarm_header_timer()

    def _header_too_large(self, data: bytes) -> bool:
        """Whether the request line and headers being received (what h11 holds plus `data`)
        pass `max_header_bytes` without ending. h11's own limit only applies while it
        waits for more bytes: a long header arriving in one read would pass it."""
        pending = self.conn.trailing_data[0]
        if len(pending) + len(data) <= self.max_header_bytes:
            return False
        head = (pending + data)[: self.max_header_bytes + 4]
        return b"\r\n\r\n" not in head

    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) > self.max_header_bytes:
            self._send_error(431, "Request header fields too large.")
            return
        super().send_400_response(msg)

    def _send_error(self, status: int, message: str) -> None:
        # Written as bytes: h11 has no request to answer yet when the header is too long.
        body = message.encode("ascii")
        self.transport.write(
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()
            + b"content-type: text/plain; charset=utf-8\r\n"
            + f"content-length: {len(body)}\r\n".encode()
            + b"connection: close\r\n\r\n"
            + body
        )
        self._disarm_header_timer()
        self._unset_keepalive_if_required()
        self.transport.close()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_seconds, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("header_read_timeout client=%s", self.client)
            self.transport.close()


def protocol_class(
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> type[GuardedH11Protocol]:
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout_seconds": header_timeout_seconds, "max_header_bytes": max_header_bytes},
    )


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS,
    keep_alive_seconds: int = DEFAULT_KEEP_ALIVE_SECONDS,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    **uvicorn_options: Any,
) -> uvicorn.Config:
    """The uvicorn configuration `serve` runs (tests start a `uvicorn.Server` from it)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(header_timeout_seconds, max_header_bytes),
        timeout_keep_alive=keep_alive_seconds,
        h11_max_incomplete_event_size=max_header_bytes,
        server_header=False,
        **uvicorn_options,
    )


def serve(
    app: Any,
    *,
    host: str,
    port: int,
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS,
    keep_alive_seconds: int = DEFAULT_KEEP_ALIVE_SECONDS,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> None:
    """Serve `app` on host:port until interrupted, with the limits above."""
    config = server_config(
        app,
        host=host,
        port=port,
        header_timeout_seconds=header_timeout_seconds,
        keep_alive_seconds=keep_alive_seconds,
        max_header_bytes=max_header_bytes,
    )
    uvicorn.Server(config).run()
