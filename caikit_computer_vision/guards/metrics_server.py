"""The metrics port: Prometheus' exposition behind the same connection bounds as the HTTP port.

caikit 0.29 serves metrics with prometheus_client's ``start_http_server``: a thread for every
connection and no timeout, so 500 idle connections held 500 more threads, for good. Here the
same registry is served (prometheus_client's ASGI app, with its content negotiation) by a
uvicorn server of its own, on one thread with its own event loop, through
``BoundedHttpProtocol``: at most ``max_metrics_connections`` open (a new one closes the one idle
longest) and each request, head to last byte of the answer, within
``metrics_connection_timeout_s``. caikit_workarounds.py ``build_servers_with`` starts it where
caikit would start its own.
"""

# Standard
import functools
import threading
import time

# Third Party
from prometheus_client import REGISTRY, make_asgi_app
import uvicorn

# Local
from ..defaults import LIBRARY_CONFIG_KEY
from .http_connections import BoundedHttpProtocol, ConnectionBounds
from .limits import Limits

# How long start-up waits for the port to be bound before it gives up.
_START_TIMEOUT_S = 30.0


def start_metrics_server(port: int, addr: str, limits: Limits) -> uvicorn.Server:
    """Serve Prometheus metrics on ``addr:port`` from a daemon thread; return once it listens.

    Called as caikit calls prometheus_client's ``start_http_server(port, addr=...)``.
    """
    timeout_s = limits.metrics_connection_timeout_s
    bounds = ConnectionBounds(
        server="metrics",
        max_connections=limits.max_metrics_connections,
        max_connections_key=f"{LIBRARY_CONFIG_KEY}.max_metrics_connections",
        header_timeout_s=timeout_s,
        request_timeout_s=timeout_s,
        timeout_key=f"{LIBRARY_CONFIG_KEY}.metrics_connection_timeout_s",
        # A scrape is not worth a log line.
        access_log=False,
    )
    config = uvicorn.Config(
        _metrics_app(make_asgi_app(REGISTRY)),
        host=addr,
        port=port,
        http=functools.partial(BoundedHttpProtocol, bounds=bounds),
        ws="none",
        lifespan="off",
        # Logging stays as caikit configured it (uvicorn's access_log=False would silence the
        # HTTP port's access log too: it empties the shared logger).
        log_config=None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="ccv-metrics", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the metrics server could not listen on {addr}:{port}")
        time.sleep(0.01)
    return server


def _metrics_app(prometheus_app):
    """prometheus_client's app, with a header it cannot decode as a client error (400)."""

    async def app(scope, receive, send) -> None:
        try:
            await prometheus_app(scope, receive, send)
        except UnicodeDecodeError:
            body = b"send the Accept headers and the query as UTF-8\n"
            await send({
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
            })
            await send({"type": "http.response.body", "body": body})

    return app
