"""The open-files budget: every connection the servers may hold must fit in the process's limit.

Each connection holds a file descriptor. When they ran out (1100 half-open HTTP connections
under the usual limit of 1024), gRPC, HTTP, the models poller ("Too many open files: 'models'")
and training all failed at once. The servers' bounds make the total finite; ``check_open_files``
checks at start-up that it fits: the descriptors open now, HTTP and metrics connections, gRPC
connections, and headroom. It raises the soft limit up to the hard one when that is enough, and
otherwise refuses to start, naming the settings.
"""

# Standard
from typing import List, Tuple
import os
import resource

# First Party
from caikit.config import get_config
from caikit.core.exceptions import error_handler
import alog

# Local
from ..defaults import LIBRARY_CONFIG_KEY
from .limits import Limits

log = alog.use_channel("CCVFILES")
error = error_handler.get(log)

# Descriptors beside the servers' connections: model files being loaded or saved, the models
# poller's directory scans, a training's data and checkpoints, logs, the servers' own sockets.
HEADROOM = 128
GRPC_CONNECTIONS_OPTION = "grpc.max_allowed_incoming_connections"


def open_files_needed(limits: Limits) -> List[Tuple[str, int]]:
    """(what, how many descriptors) of everything the runtime may hold open at once."""
    runtime = get_config().runtime
    needed = [("open now", _open_now())]
    if runtime.http.enabled:
        needed.append((f"{LIBRARY_CONFIG_KEY}.max_http_connections", limits.max_http_connections))
    if runtime.metrics.enabled:
        needed.append(
            (f"{LIBRARY_CONFIG_KEY}.max_metrics_connections", limits.max_metrics_connections)
        )
    if runtime.grpc.enabled:
        grpc_connections = (runtime.grpc.options or {}).get(GRPC_CONNECTIONS_OPTION)
        if isinstance(grpc_connections, int):
            needed.append((f"runtime.grpc.options.{GRPC_CONNECTIONS_OPTION}", grpc_connections))
        else:
            log.warning(
                "<CCV61170101W>",
                "runtime.grpc.options.%s is not set: gRPC connections are not bounded, nor "
                "counted in the open-files budget",
                GRPC_CONNECTIONS_OPTION,
            )
    needed.append(("headroom", HEADROOM))
    return needed


def check_open_files(limits: Limits) -> None:
    """Fit the runtime's connections in RLIMIT_NOFILE, raising the soft limit if that is enough;
    refuse to start (ValueError) when even the hard limit is too small."""
    needed = open_files_needed(limits)
    total = sum(count for _, count in needed)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= total:
        return
    if hard == resource.RLIM_INFINITY or hard >= total:
        raised = total if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        log.info("<CCV61170102I>", "raised the open-files limit from %d to %d", soft, raised)
        return
    error.value_check(
        "<CCV61170103E>",
        False,
        "the open-files limit (ulimit -n) is {} and cannot go above {}, but the runtime may "
        "need {}: {}; raise the limit, or lower these settings",
        soft,
        hard,
        total,
        " + ".join(f"{what} {count}" for what, count in needed),
    )


def _open_now() -> int:
    for listing in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(listing):
            return len(os.listdir(listing))
    return 0
