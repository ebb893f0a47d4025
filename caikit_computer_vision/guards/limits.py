"""The runtime's limits and switches, read from the ``caikit_computer_vision`` config section.

One reader for the front door, the guarded trainer and the runtime server, so that a key has one
meaning and one default everywhere (runtime_config.yaml documents each key).
"""

# Standard
from dataclasses import dataclass
import os

# First Party
from caikit.config import get_config
from caikit.core.exceptions import error_handler
import alog

# Local
from ..defaults import LIBRARY_CONFIG_KEY
from .paths import FILE_NAME_MAX, MAX_MODEL_ID_LENGTH

log = alog.use_channel("CCVGUARD")
error = error_handler.get(log)



# Limits where 0 would refuse every client rather than mean "the default".
_NONZERO = (
    "max_http_connections",
    "http_header_timeout_s",
    "http_body_timeout_s",
    "max_metrics_connections",
    "metrics_connection_timeout_s",
    "predict_batch_size",
)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Predictions at once a core on a CPU (max_concurrent_model_calls 0). The forward pass runs on
# the same cores as every request's decoding and post-processing, so calls beyond the cores only
# contend for the GIL; but a call holds its slot while it decodes, and with one a core a few huge
# images kept good requests waiting. Measured in docs/performance.md, "How many predictions at
# once".
CPU_MODEL_CALLS_PER_CORE = 2


def _models_run_on_a_gpu() -> bool:
    # Local
    from ..torch_device import select_device  # torch: only once limits are read

    return select_device().type == "cuda"


@dataclass(frozen=True)
class Limits:
    """What clients may ask of the runtime. Each field is the config key of the same name."""

    allow_model_deployment: bool = False
    max_model_id_length: int = MAX_MODEL_ID_LENGTH
    max_http_body_bytes: int = 32 * 1024 * 1024
    # HTTP connections and what a client may hold with them (guards/http_connections.py,
    # guards/http_door.py, guards/metrics_server.py; runtime_config.yaml says why each default).
    max_http_connections: int = 256
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    # Bodies over 1 MiB (guards/http_door.py); 0: the cores.
    max_concurrent_http_bodies: int = 0
    max_metrics_connections: int = 4
    metrics_connection_timeout_s: float = 10.0
    # 0: CPU_MODEL_CALLS_PER_CORE a core (predict_batch_size a core on a GPU).
    max_concurrent_model_calls: int = 0
    # Dynamic batching of predictions (batching.py): images per forward pass (1: off) and the
    # longest a forward pass waits for requests still preparing their image, in milliseconds.
    predict_batch_size: int = 8
    predict_batch_delay_ms: int = 2
    # torch's intra-op threads of a forward pass or training; 0: follow the load (batching.py).
    torch_threads: int = 0
    # Forward passes as a TorchScript graph, checked per input shape (traced_forward.py).
    trace_forward_pass: bool = True
    max_open_streams: int = 8
    # gRPC calls that hold a server thread while they wait for their request message, and how
    # long each may wait (guards/grpc_door.py).
    max_calls_awaiting_request: int = 8
    request_message_timeout_s: int = 10
    max_num_epochs: int = 100_000
    max_concurrent_trainings: int = 2

    @property
    def model_calls(self) -> int:
        """How many predictions (and train submissions) run at once: by default
        ``CPU_MODEL_CALLS_PER_CORE`` a core on a CPU, enough on a GPU for every core's request
        to fill a batch (a GPU pass of several images costs about what one does)."""
        if self.max_concurrent_model_calls:
            return self.max_concurrent_model_calls
        if _models_run_on_a_gpu():
            return _cores() * max(1, self.predict_batch_size)
        return _cores() * CPU_MODEL_CALLS_PER_CORE

    @property
    def http_bodies(self) -> int:
        """How many large HTTP request bodies may be read, parsed and held at once."""
        return self.max_concurrent_http_bodies or _cores()

    @classmethod
    def from_config(cls) -> "Limits":
        """The limits of the current caikit config; a wrong value fails with its key named."""
        section = get_config().get(LIBRARY_CONFIG_KEY) or {}
        values = {}
        for name, default in cls.__dataclass_fields__.items():
            value = section.get(name, default.default)
            kind = type(default.default)
            if kind is float and type(value) is int:  # YAML and the environment write 10, not 10.0
                value = float(value)
            error.value_check(
                "<CCV17730401E>",
                isinstance(value, kind) and (kind is bool or value >= 0),
                "{}.{} must be a {} >= 0, not {!r}",
                LIBRARY_CONFIG_KEY,
                name,
                kind.__name__,
                value,
            )
            values[name] = value
        error.value_check(
            "<CCV17730402E>",
            1 <= values["max_model_id_length"] <= FILE_NAME_MAX,
            "{}.max_model_id_length must be 1 to {} (a model id is a directory name)",
            LIBRARY_CONFIG_KEY,
            FILE_NAME_MAX,
        )
        for name in _NONZERO:
            error.value_check(
                "<CCV17730403E>",
                values[name] > 0,
                "{}.{} must be more than 0 (it bounds what a client may hold)",
                LIBRARY_CONFIG_KEY,
                name,
            )
        return cls(**values)
