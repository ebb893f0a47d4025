"""One log line per client error: what the runtime's log keeps while a client's request is served.

A client's mistake (a threshold out of range, bytes that are not an image, a label file line)
was logged four times over gRPC: the library's input check at ERROR (caikit's ``error_handler``
logs ``exception raised: ValueError(...)`` before it raises), then caikit's predict or train
servicer twice and its server wrapper once, at WARN. The doors log the refusal once, at WARN,
with the status the client got (``grpc_door``, and for HTTP ``caikit_workarounds``), so while a
request is being served (``serving_a_client``) this filter drops the other lines of that error:

* the library's ``exception raised`` lines, on its ``CCV`` channels: caikit's ``error_handler``
  writes them for the checks of what a caller passed (a value, a type, a file it names), whose
  errors the runtime answers as the client's (a server fault is caikit's line, with traceback);
* caikit's WARN lines of the servicers that answer the request (``CAIKIT_REQUEST_CHANNELS``).

Everything else passes: a server fault is logged at ERROR by caikit, traceback included; the
same input check failing outside a request (a model loaded by the poller, a background
training) is logged as before.
"""

# Standard
from contextlib import contextmanager
from typing import Iterator
import contextvars
import logging

# The channels of caikit's request handling whose WARN lines repeat a client's error.
CAIKIT_REQUEST_CHANNELS = frozenset({"GP-SERVICR-I", "GT-SERVICR-I", "SERVER-WRAPR"})
# This library's channels (``alog.use_channel("CCV...")``).
LIBRARY_CHANNEL_PREFIX = "CCV"

_serving = contextvars.ContextVar("ccv_serving_a_client", default=False)


@contextmanager
def serving_a_client() -> Iterator[None]:
    """Mark the work done inside as the answer to one client request (threads started by
    ``asyncio``/``anyio`` for it inherit the mark)."""
    token = _serving.set(True)
    try:
        yield
    finally:
        _serving.reset(token)


class RepeatedClientErrorLines(logging.Filter):
    """Drops, during a client request, the lines that repeat the door's one line (see above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _serving.get():
            return True
        if record.levelno == logging.WARNING and record.name in CAIKIT_REQUEST_CHANNELS:
            return False
        if record.levelno == logging.ERROR and record.name.startswith(LIBRARY_CHANNEL_PREFIX):
            message = record.msg.get("message", "") if isinstance(record.msg, dict) else str(record.msg)
            return not (isinstance(message, str) and message.startswith("exception raised: "))
        return True


def install() -> None:
    """Put the filter on caikit's request channels and on every handler of the root logger
    (where alog writes this library's channels, whose names are not known in advance)."""
    line_filter = RepeatedClientErrorLines()
    filtered = [logging.getLogger(name) for name in sorted(CAIKIT_REQUEST_CHANNELS)]
    for target in (*filtered, *logging.getLogger().handlers):
        if not any(isinstance(f, RepeatedClientErrorLines) for f in target.filters):
            target.addFilter(line_filter)
