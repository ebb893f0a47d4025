"""Start caikit's gRPC and HTTP servers behind the front door, on a chosen interface.

caikit 0.29 hard-codes where it listens (every interface) and offers no hook to put checks in
front of its servers. A runtime example is copied into real services, so ours listens on
loopback unless told otherwise (as TorchServe does), and every call passes the front door
(guards/front_door.py) first: a gRPC interceptor and ASGI middleware on caikit's own servers.
How they are slotted in is in caikit_workarounds.py.
"""

# Standard
from typing import Dict
import functools

# First Party
from caikit.config import get_config
from caikit.core import MODEL_MANAGER
from caikit.core.exceptions import error_handler
from caikit.runtime.names import get_http_route_name
from caikit.runtime.service_generation.rpcs import ModuleClassTrainRPC, TaskPredictRPC
import alog

# Local
from .caikit_workarounds import (
    bound_http_connections,
    build_servers_with,
    cancel_running_trainings,
    decode_http_base64_in_c,
    http_route_request_model,
    listen_http_on,
    log_http_client_errors_briefly,
    run_http_calls_in_the_callers_context,
    take_validated_http_requests,
)
from .guards.front_door import FrontDoor, grpc_allowlist
from .guards.grpc_door import GrpcFrontDoor
from .guards.http_connections import http_protocol
from .guards.http_door import VALIDATED_REQUEST, HttpFrontDoor, http_allowlist
from .defaults import LIBRARY_CONFIG_KEY
from .guards import log_lines
from .guards.limits import Limits
from .guards.metrics_server import start_metrics_server
from .guards.open_files import check_open_files

log = alog.use_channel("CCVSERVE")
error = error_handler.get(log)

LOOPBACK = "127.0.0.1"
# Threads the gRPC server keeps besides model calls and open streams (health checks, status).
SPARE_THREADS = 2

__all__ = ["LIBRARY_CONFIG_KEY", "LOOPBACK", "serve"]


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
    limits = Limits.from_config()
    _check_thread_pool(limits)
    check_open_files(limits)
    door = FrontDoor(limits, runtime.local_models_dir, lambda: MODEL_MANAGER.get_trainer("default"))
    grpc_door = GrpcFrontDoor(door)
    grpc_server = http_server = None
    metrics_server = functools.partial(start_metrics_server, limits=limits)
    with build_servers_with(host, interceptors=[grpc_door], metrics_server=metrics_server):
        if runtime.grpc.enabled:
            grpc_server = RuntimeGRPCServer()
        if runtime.http.enabled:
            decode_http_base64_in_c()  # before the server builds its request models
            http_server = RuntimeHTTPServer()
            listen_http_on(http_server, host)
            bound_http_connections(http_server, http_protocol(limits))
            log_http_client_errors_briefly(http_server)
            run_http_calls_in_the_callers_context(http_server)
            take_validated_http_requests(VALIDATED_REQUEST)
    if grpc_server is None and http_server is None:
        raise ValueError("both runtime.grpc.enabled and runtime.http.enabled are false")
    # After the servers are built: each one (re)configures caikit's logging when it is.
    log_lines.install()
    if grpc_server is not None:
        grpc_door.allowed = grpc_allowlist(
            _service_name(grpc_server.inference_service),
            _service_name(grpc_server.training_service),
            lambda service: _methods(grpc_server, service),
        )
        grpc_server.start(blocking=http_server is None)
    if http_server is not None:
        predict_models, train_models = _http_request_models(http_server)
        http_server.app.add_middleware(
            HttpFrontDoor, door=door, allowed=http_allowlist(predict_models, train_models)
        )
        http_server.start(blocking=True)
    if grpc_server is not None and http_server is not None:
        # The HTTP server returned because of a signal, which caikit also sent to gRPC.
        grpc_server.server.wait_for_termination(
            timeout=runtime.grpc.server_shutdown_grace_period_seconds + 5
        )
    cancelled = cancel_running_trainings(MODEL_MANAGER.get_trainer("default"))
    log.info("<CCV84210377I>", "runtime stopped (%d running trainings cancelled)", cancelled)


def _check_thread_pool(limits: Limits) -> None:
    """The gRPC thread pool holds every open stream, every call still waiting for its request
    message and every model call, with room to spare."""
    runtime = get_config().runtime
    pool = runtime.grpc.server_thread_pool_size or runtime.server_thread_pool_size
    needed = (
        limits.max_open_streams
        + limits.max_calls_awaiting_request
        + limits.model_calls
        + SPARE_THREADS
    )
    error.value_check(
        "<CCV84210379E>",
        pool >= needed,
        "runtime.server_thread_pool_size is {}: it must be at least {} ({}.max_open_streams {} + "
        "max_calls_awaiting_request {} + max_concurrent_model_calls {} + {} spare), or open "
        "streams and slow clients could starve predictions",
        pool,
        needed,
        LIBRARY_CONFIG_KEY,
        limits.max_open_streams,
        limits.max_calls_awaiting_request,
        limits.model_calls,
        SPARE_THREADS,
    )


def _service_name(service_package) -> str:
    return service_package.descriptor.full_name if service_package is not None else ""


def _methods(grpc_server, service: str):
    for package in (grpc_server.inference_service, grpc_server.training_service):
        if package is not None and package.descriptor.full_name == service:
            return [method.name for method in package.descriptor.methods]
    return []


def _http_request_models(http_server):
    """Route path -> the pydantic model caikit validates its body with, predict and train."""
    predict: Dict[str, type] = {}
    train: Dict[str, type] = {}
    packages = ((http_server.inference_service, predict), (http_server.training_service, train))
    for package, routes in packages:
        for rpc in (package.caikit_rpcs.values() if package is not None else ()):
            streaming = getattr(rpc, "input_streaming", False) or getattr(
                rpc, "output_streaming", False
            )
            if not isinstance(rpc, (TaskPredictRPC, ModuleClassTrainRPC)) or streaming:
                continue
            path = get_http_route_name(rpc.name)
            model = http_route_request_model(http_server, path)
            error.value_check(
                "<CCV84210380E>",
                model is not None,
                "caikit's HTTP route {} keeps no request model where "
                "caikit_workarounds.http_route_request_model reads it: update that function for "
                "this caikit version",
                path,
            )
            routes[path] = model
    return predict, train
