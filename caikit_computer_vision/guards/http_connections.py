"""HTTP connections: how many may be open, how long a request head may take, how big it may be.

uvicorn, as caikit 0.29 configures it, bounds none of these: a connection that never finishes
its request head stays open for good with its file descriptor (1100 of them broke gRPC, HTTP
and the models poller under a 1024 open-files limit), and its httptools parser buffers a head of
any size (200 MiB of headers: +200 MB). ``BoundedHttpProtocol`` is uvicorn's httptools protocol
(what its ``http="auto"`` picks) with those three bounds; caikit_workarounds.py
``bound_http_connections`` puts it on the uvicorn config caikit built. What happens once the
head is in (the body's timeout and size) is the HTTP door's (http_door.py).
"""

# Standard
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple
import asyncio
import functools
import time

# Third Party
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# First Party
import alog

# Local
from ..defaults import LIBRARY_CONFIG_KEY
from .limits import Limits

log = alog.use_channel("CCVCONN")

# The largest request head (request line and headers); a bigger one gets 431 and is closed.
# uvicorn's other parser, h11, stops at 16 KiB; 64 KiB leaves room for big cookies and tokens.
MAX_HEAD_BYTES = 64 * 1024
# Under a flood, what the bounds did is logged once a minute, not once per connection.
_WARNING_INTERVAL_S = 60.0
_last_warnings: Dict[Tuple[str, str], float] = {}


@dataclass(frozen=True)
class ConnectionBounds:
    """The config's bounds of one server, as ``BoundedHttpProtocol`` uses them."""

    # Which server, and the config keys of its bounds, for log lines.
    server: str
    max_connections: int
    max_connections_key: str
    header_timeout_s: float
    # From a complete head to a complete response; None: as long as the app takes.
    request_timeout_s: Optional[float] = None
    # The config key of the timeouts above.
    timeout_key: str = ""
    # Whether requests go to uvicorn's access log (uvicorn's own switch for it is global).
    access_log: bool = True


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size bound for each request head, and
    at most ``bounds.max_connections`` connections open.

    A connection beyond the bound closes the open connection that has waited longest without a
    request in progress (one that has not finished its head, or an idle keep-alive one), or
    itself when every connection has a request in progress: clients that open connections and
    never finish a request cannot lock others out, and the process holds at most that many.
    uvicorn builds one per connection: ``functools.partial(BoundedHttpProtocol, bounds=...)``.
    """

    def __init__(self, *args, bounds: ConnectionBounds, **kwargs):
        super().__init__(*args, **kwargs)
        self.bounds = bounds
        self.access_log = self.access_log and bounds.access_log
        self._head_deadline: Optional[asyncio.TimerHandle] = None
        self._request_deadline: Optional[asyncio.TimerHandle] = None
        # True from the end of a request (or the connection's start) to the end of the next head.
        self._head_open = True
        self._whole_piece_is_head = True
        self._head_bytes = 0
        self._idle_since = time.monotonic()

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()
        if len(self.connections) > self.bounds.max_connections:
            self._make_room()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm_head_deadline()
        self._disarm_request_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # When the head was open before this piece and still is after it, the whole piece is
        # head. A piece where a head ends (or a pipelined one starts) is not counted: at most
        # one piece (asyncio reads 256 KiB at a time) goes uncounted per head.
        self._whole_piece_is_head = self._head_open
        super().data_received(data)
        if self._whole_piece_is_head and self._head_open and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                message = f"the request head is over {MAX_HEAD_BYTES} bytes"
                log.warning("<CCV40518102W>", "%s server: refused a request: %s", self.bounds.server, message)
                self._close_with(431, f"{message}: send smaller headers")

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        self._head_open = False
        self._whole_piece_is_head = False
        self._head_bytes = 0
        if self.bounds.request_timeout_s is not None:
            self._request_deadline = self.loop.call_later(
                self.bounds.request_timeout_s, self._request_timed_out
            )
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open = True
        self._whole_piece_is_head = False

    def on_response_complete(self) -> None:
        self._disarm_request_deadline()
        super().on_response_complete()
        self._idle_since = time.monotonic()

    # -- the bounds ---------------------------------------------------------------------------

    def _arm_head_deadline(self) -> None:
        """From the connection's start, or the first byte of a later head (idle keep-alive
        connections are uvicorn's ``timeout_keep_alive``); never pushed back once armed."""
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(
                self.bounds.header_timeout_s, self._head_timed_out
            )

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _disarm_request_deadline(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        self._warn(
            "closed a connection whose request head was not complete within %s s (%s)",
            self.bounds.header_timeout_s,
            self.bounds.timeout_key,
        )
        self._close_with(
            408, f"the request head was not complete within {self.bounds.header_timeout_s} s"
        )

    def _request_timed_out(self) -> None:
        """The app did not answer in time, or the client did not read the answer: close."""
        self._request_deadline = None
        if not self.transport.is_closing():
            self._warn(
                "closed a connection whose request was not answered within %s s (%s)",
                self.bounds.request_timeout_s,
                self.bounds.timeout_key,
            )
            self.transport.close()

    def _is_idle(self) -> bool:
        """No request in progress: waiting for a head, or for the next one (keep-alive)."""
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    def _make_room(self) -> None:
        open_connections = [c for c in self.connections if not c.transport.is_closing()]
        if len(open_connections) <= self.bounds.max_connections:
            return  # the ones over the bound are closing already
        idle = [c for c in open_connections if c is not self and c._is_idle()]
        closed = min(idle, key=lambda c: c._idle_since, default=self)
        self._warn(
            "%d connections open (%s): closed %s",
            self.bounds.max_connections,
            self.bounds.max_connections_key,
            "the one idle longest" if closed is not self else "a new one (all were busy)",
        )
        closed.transport.close()

    def _close_with(self, status: int, message: str) -> None:
        """Answer ``status`` with a one-line text body and close, when no response has begun."""
        if self.cycle is None or self.cycle.response_complete:
            body = f"{message}\n".encode()
            self.transport.write(
                b"".join([
                    STATUS_LINE[status],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ])
            )
        self.transport.close()

    def _warn(self, message: str, *args) -> None:
        """``message`` at most once a minute for each kind of event and server: a flood of
        connections must not flood the log."""
        key = (self.bounds.server, message)
        now = time.monotonic()
        if now - _last_warnings.get(key, -_WARNING_INTERVAL_S) >= _WARNING_INTERVAL_S:
            _last_warnings[key] = now
            log.warning(
                "<CCV40518101W>",
                "%s server: " + message + "; more of these are not logged for a minute",
                self.bounds.server,
                *args,
            )


def http_protocol(limits: Limits) -> Callable[..., BoundedHttpProtocol]:
    """The protocol factory of the HTTP port, bounded by ``limits``, for uvicorn's config."""
    bounds = ConnectionBounds(
        server="HTTP",
        max_connections=limits.max_http_connections,
        max_connections_key=f"{LIBRARY_CONFIG_KEY}.max_http_connections",
        header_timeout_s=limits.http_header_timeout_s,
        timeout_key=f"{LIBRARY_CONFIG_KEY}.http_header_timeout_s",
    )
    return functools.partial(BoundedHttpProtocol, bounds=bounds)
