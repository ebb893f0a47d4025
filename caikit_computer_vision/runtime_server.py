"""Start caikit's gRPC and HTTP servers on a chosen interface and run until SIGINT/SIGTERM.

caikit 0.29 hard-codes where it listens: gRPC on ``[::]``, HTTP and Prometheus metrics on
``0.0.0.0``, i.e. every interface of the machine. A runtime example is copied into real
services, so ours listens on loopback unless told otherwise (as TorchServe does). The servers
are caikit's own; only the address they bind is replaced, while they are being built.
"""

# Standard
from contextlib import contextmanager
from typing import Iterator
import functools

# Third Party
import grpc

# First Party
from caikit.config import get_config
from caikit.runtime.model_management.model_manager import ModelManager
import alog

# Local
from .guards.deployment import guard_model_deployment

log = alog.use_channel("CCVSERVE")

LOOPBACK = "127.0.0.1"
# Section of the caikit config with this library's runtime settings.
LIBRARY_CONFIG_KEY = "caikit_computer_vision"
_CAIKIT_GRPC_ADDRESS_PREFIX = "[::]:"


def serve(host: str = LOOPBACK) -> None:
    """Run the runtime in the foreground until it is interrupted; return after a clean stop.

    caikit's servers install SIGINT/SIGTERM handlers that stop them (in-flight gRPC calls get
    ``runtime.grpc.server_shutdown_grace_period_seconds``), after which this returns.
    """
    # First Party
    # Imported here: building the services imports the configured library, so the caller
    # must have configured caikit first.
    from caikit.runtime.grpc_server import RuntimeGRPCServer
    from caikit.runtime.http_server import RuntimeHTTPServer

    runtime = get_config().runtime
    grpc_server = http_server = None
    with _listen_on(host):
        if runtime.grpc.enabled:
            grpc_server = RuntimeGRPCServer()
        if runtime.http.enabled:
            http_server = RuntimeHTTPServer()
            # uvicorn binds at start-up from its config, so the address can be changed here.
            http_server.server.config.host = host
    if grpc_server is None and http_server is None:
        raise ValueError("both runtime.grpc.enabled and runtime.http.enabled are false")
    library_config = get_config().get(LIBRARY_CONFIG_KEY) or {}
    guard_model_deployment(
        ModelManager.get_instance(),
        allowed=bool(library_config.get("allow_model_deployment", False)),
        models_dir=runtime.local_models_dir,
    )

    if grpc_server is not None:
        grpc_server.start(blocking=http_server is None)
    if http_server is not None:
        http_server.start(blocking=True)
    if grpc_server is not None and http_server is not None:
        # The HTTP server returned because of a signal, which caikit also sent to gRPC.
        grpc_server.server.wait_for_termination(
            timeout=runtime.grpc.server_shutdown_grace_period_seconds + 5
        )
    cancelled = _cancel_running_trainings()
    log.info("<CCV84210377I>", "runtime stopped (%d running trainings cancelled)", cancelled)


def _cancel_running_trainings() -> int:
    """Cancel trainings still running, so that the process can exit.

    caikit 0.29 trains in non-daemon threads and does not stop them on shutdown: without this,
    SIGTERM during a training leaves the process running until the training ends. A cancelled
    training writes nothing (models are only saved, atomically, after the last epoch).
    """
    # First Party
    from caikit.core import MODEL_MANAGER

    futures = getattr(MODEL_MANAGER.get_trainer("default"), "_futures", {})
    running = [f for f in list(futures.values()) if not f.get_info().status.is_terminal]
    for future in running:
        log.info("<CCV84210378I>", "cancelling training %s at shutdown", future.id)
        future.cancel()
    for future in running:
        future.wait()
    return len(running)


@contextmanager
def _listen_on(host: str) -> Iterator[None]:
    """While caikit builds its servers, make their listening sockets bind ``host``."""
    # First Party
    import caikit.runtime.server_base as server_base

    original_grpc_server = grpc.server
    original_metrics_server = server_base.start_http_server

    def grpc_server_on_host(*args, **kwargs):
        server = original_grpc_server(*args, **kwargs)
        for method_name in ("add_insecure_port", "add_secure_port"):
            setattr(server, method_name, _rebind(getattr(server, method_name), host))
        return server

    grpc.server = grpc_server_on_host
    server_base.start_http_server = functools.partial(original_metrics_server, addr=host)
    try:
        yield
    finally:
        grpc.server = original_grpc_server
        server_base.start_http_server = original_metrics_server


def _rebind(add_port, host: str):
    grpc_host = f"[{host}]" if ":" in host else host

    def add_port_on_host(address: str, *args):
        if address.startswith(_CAIKIT_GRPC_ADDRESS_PREFIX):
            address = f"{grpc_host}:{address[len(_CAIKIT_GRPC_ADDRESS_PREFIX):]}"
        return add_port(address, *args)

    return add_port_on_host
