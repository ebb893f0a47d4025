"""The runtime's front door: what every gRPC call and HTTP request is checked against, once.

caikit 0.29 serves more than this example needs and acts on what clients send before any of our
extension points sees it: a path sent as a model id is sized, unzipped or walked by its model
manager, an unknown id becomes a permanent Prometheus label, ``mmesh.ModelRuntime`` loads any
path. So the door sits in front of caikit (``grpc_door`` as the first gRPC interceptor,
``http_door`` as ASGI middleware of caikit's FastAPI app) and decides, from the request alone
and a ``stat`` of ``models/<id>``:

* whether the call is served at all: an explicit allowlist of RPCs and routes; model
  deployment (DeployModel / UndeployModel, ``mmesh.ModelRuntime``) only when
  ``allow_model_deployment`` is on;
* whether the model id is a plain name of bounded length that exists directly in ``models/``;
* for model deployment, that ids and paths stay inside ``models/<id>`` and do not take the
  name of a model being trained;
* how many model calls run at once, and how many streams may hold a server thread.

A refusal is one short log line and a status that says what to fix; caikit never sees it.
"""

# Standard
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Dict, Iterable, Iterator, Optional
import asyncio
import os
import stat
import threading

# Third Party
import grpc

# First Party
from caikit.runtime import names
import alog

# Local
from ..caikit_workarounds import trainer_name_of
from ..defaults import LIBRARY_CONFIG_KEY
from .limits import Limits
from .paths import is_inside, model_dir_problem, model_id_problem

log = alog.use_channel("CCVDOOR")

DEPLOYMENT_KEY = f"{LIBRARY_CONFIG_KEY}.allow_model_deployment"
# Longer than any training id caikit or our trainer issues (a hashed name, ":" and a uuid).
MAX_TRAINING_ID_LENGTH = 128
# How much of a refused id a log line or an answer quotes.
_QUOTE_CHARS = 64

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNIMPLEMENTED: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}


class Kind(Enum):
    """What the door does with a served RPC or route."""

    PLAIN = "plain"  # served as is: health, info, reflection
    PREDICT = "predict"  # model id checked, runs under the model-call limit
    TRAIN = "train"  # submission runs under the model-call limit; the trainer checks the rest
    TRAINING = "training"  # training status / cancel: the training id is checked
    DEPLOY = "deploy"  # DeployModel: off unless allowed; id and file names confined
    UNDEPLOY = "undeploy"  # UndeployModel: off unless allowed; id checked
    MODEL_RUNTIME = "model_runtime"  # mmesh.ModelRuntime: off unless allowed; ids and paths


GATED = (Kind.DEPLOY, Kind.UNDEPLOY, Kind.MODEL_RUNTIME)


@dataclass(frozen=True)
class Refusal:
    """Why a call is not served: a gRPC status and a message that says what to fix."""

    code: grpc.StatusCode
    message: str

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)


def quote(value: object) -> str:
    """``value`` as a short repr, for a log line or a message."""
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else f"{text[:_QUOTE_CHARS]}... ({len(text)} chars)"


def grpc_allowlist(inference_service: Optional[str], training_service: Optional[str],
                   methods_of: Callable[[str], Iterable[str]]) -> Dict[str, Kind]:
    """Full gRPC method name -> Kind of everything this runtime serves over gRPC.

    Not listed, hence UNIMPLEMENTED: caikit's ``processproto.Process/Run`` (a training door
    that takes client paths and training ids), prediction jobs, and anything added later.
    """
    allowed = {
        f"/{names.TRAINING_MANAGEMENT_SERVICE_PACKAGE}.{names.TRAINING_MANAGEMENT_SERVICE_NAME}"
        f"/{method}": Kind.TRAINING
        for method in ("GetTrainingStatus", "CancelTraining")
    }
    allowed.update(
        {
            f"/{names.INFO_SERVICE_PACKAGE}.{names.INFO_SERVICE_NAME}/{method}": Kind.PLAIN
            for method in ("GetRuntimeInfo", "GetModelsInfo")
        }
    )
    model_management = f"/{names.MODEL_MANAGEMENT_SERVICE_PACKAGE}.{names.MODEL_MANAGEMENT_SERVICE_NAME}"
    allowed[f"{model_management}/DeployModel"] = Kind.DEPLOY
    allowed[f"{model_management}/UndeployModel"] = Kind.UNDEPLOY
    for method in ("loadModel", "unloadModel", "predictModelSize", "modelSize", "runtimeStatus"):
        allowed[f"/mmesh.ModelRuntime/{method}"] = Kind.MODEL_RUNTIME
    allowed["/grpc.health.v1.Health/Check"] = Kind.PLAIN
    allowed["/grpc.health.v1.Health/Watch"] = Kind.PLAIN
    allowed["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"] = Kind.PLAIN
    for service, kind in ((inference_service, Kind.PREDICT), (training_service, Kind.TRAIN)):
        if service:
            allowed.update({f"/{service}/{method}": kind for method in methods_of(service)})
    return allowed


class ModelCallGate:
    """At most ``slots`` model calls (predictions, train submissions) at once, gRPC and HTTP.

    Separate from the server's thread pool on purpose: the pool must be big enough that streams
    and health checks always get a thread, while model work, which holds the GIL and the cores,
    is better queued than run 32 at a time.
    """

    def __init__(self, slots: int):
        self.slots = slots
        self._semaphore = threading.BoundedSemaphore(slots)
        # Threads that wait for a slot on behalf of HTTP requests, off the event loop.
        self._waiters = ThreadPoolExecutor(max_workers=64, thread_name_prefix="ccv-gate")

    @contextmanager
    def held(self) -> Iterator[None]:
        self._semaphore.acquire()
        try:
            yield
        finally:
            self._semaphore.release()

    async def acquire_async(self) -> None:
        """Wait for a slot without blocking the event loop; a cancelled wait takes none."""
        if self._semaphore.acquire(blocking=False):
            return  # a free slot: no hop to a waiter thread
        waiting = asyncio.get_running_loop().run_in_executor(self._waiters, self._semaphore.acquire)
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            waiting.add_done_callback(
                lambda done: self.release() if not done.cancelled() and not done.exception() else None
            )
            raise

    def release(self) -> None:
        self._semaphore.release()


class StreamGate:
    """At most ``limit`` open streams (reflection, health Watch): each holds a server thread."""

    def __init__(self, limit: int):
        self.limit = limit
        self._open = 0
        self._lock = threading.Lock()

    def try_open(self) -> bool:
        with self._lock:
            if self._open >= self.limit:
                return False
            self._open += 1
            return True

    def close(self) -> None:
        with self._lock:
            self._open -= 1


class FrontDoor:
    """The checks shared by the gRPC and the HTTP door."""

    def __init__(self, limits: Limits, models_dir: str, trainer_lookup: Callable[[], object]):
        self.limits = limits
        self.models_dir = models_dir
        # The guarded trainer, looked up when first needed (caikit builds it lazily).
        self._trainer_lookup = trainer_lookup
        self.model_calls = ModelCallGate(limits.model_calls)
        self.streams = StreamGate(limits.max_open_streams)

    # -- the checks -------------------------------------------------------------------------

    def gate_refusal(self, kind: Kind, what: str) -> Optional[Refusal]:
        """Model deployment is off unless the config turns it on."""
        if kind in GATED and not self.limits.allow_model_deployment:
            return Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{what} is disabled on this runtime; to allow it, set {DEPLOYMENT_KEY}: true "
                "in the runtime config",
            )
        return None

    def id_refusal(self, model_id: object, field: str = "model id") -> Optional[Refusal]:
        """A plain name of bounded length; looks at the string only, never the disk."""
        if not isinstance(model_id, str) or not model_id:
            return Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"no {field}: name the model (a directory in models/), as mm-model-id metadata "
                "over gRPC or model_id over HTTP",
            )
        problem = model_id_problem(model_id, self.limits.max_model_id_length)
        return None if problem is None else Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {problem}")

    def served_model_refusal(self, model_id: object) -> Optional[Refusal]:
        """The id names a model directory directly inside models/ (symlinks resolved).

        Too long or missing: INVALID_ARGUMENT. Anything else that is not such a directory (a
        path, ``my_model/.``, an unknown name): NOT_FOUND. Only a plain name reaches ``stat``.
        """
        if not isinstance(model_id, str) or not model_id or (
            len(model_id) > self.limits.max_model_id_length
        ):
            return self.id_refusal(model_id)
        if model_id_problem(model_id, self.limits.max_model_id_length) is None and (
            self._is_model_dir(os.path.join(self.models_dir, model_id))
        ):
            return None
        return Refusal(
            grpc.StatusCode.NOT_FOUND,
            f"model {quote(model_id)} not found: a model id is the name of a directory in "
            "the runtime's models directory",
        )

    def _is_model_dir(self, path: str) -> bool:
        """``models/<plain name>`` is a directory there, or a symlink that resolves to one.

        One ``lstat`` for the usual case (this runs on every prediction); only a symlink is
        resolved, and it must stay directly inside the models directory.
        """
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return False
        if stat.S_ISDIR(mode):
            return True
        return stat.S_ISLNK(mode) and model_dir_problem(path, self.models_dir) is None and (
            os.path.isdir(path)
        )

    def training_id_refusal(self, training_id: object) -> Optional[Refusal]:
        """A training id issued by one of the configured trainers, of bounded length."""
        # First Party
        from caikit.config import get_config

        trainers = get_config().model_management.trainers or {}
        if (
            not isinstance(training_id, str)
            or not training_id
            or len(training_id) > MAX_TRAINING_ID_LENGTH
            or trainer_name_of(training_id) not in trainers
        ):
            return Refusal(
                grpc.StatusCode.NOT_FOUND,
                f"training {quote(training_id)} not found: use the training_id a Train call "
                "answered",
            )
        return None

    def deploy_refusal(self, model_id: object, file_names: Iterable[str]) -> Optional[Refusal]:
        """DeployModel: a plain new id, every file inside models/<id>/."""
        refusal = self.id_refusal(model_id) or self.training_refusal(model_id)
        if refusal is not None:
            return refusal
        model_dir = os.path.join(self.models_dir, model_id)
        for file_name in file_names:
            name = file_name.strip()
            parts = name.replace("\\", "/").split("/")
            if not name or os.path.isabs(name) or ".." in parts:
                return Refusal(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"model file name {quote(file_name)} must be a relative path without '..' parts",
                )
            if not is_inside(os.path.join(model_dir, name), model_dir):
                return Refusal(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"model file name {quote(file_name)} resolves outside the model's directory",
                )
        return None

    def model_runtime_refusal(self, method: str, request) -> Optional[Refusal]:
        """mmesh.ModelRuntime, as ModelMesh drives it: ids plain, paths inside models/<id>."""
        if method == "runtimeStatus":
            return None
        refusal = self.id_refusal(request.modelId, "modelId")
        if refusal is not None or method not in ("loadModel", "predictModelSize"):
            return refusal
        if method == "loadModel":
            refusal = self.training_refusal(request.modelId)
            if refusal is not None:
                return refusal
        model_dir = os.path.join(self.models_dir, request.modelId)
        path = request.modelPath
        if not path or not is_inside(path, model_dir):
            return Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"modelPath {quote(request.modelPath)} must be {model_dir} or lie inside it",
            )
        if not os.path.isdir(path):
            return Refusal(
                grpc.StatusCode.NOT_FOUND, f"modelPath {quote(request.modelPath)} is not a directory"
            )
        return None

    def training_refusal(self, model_id: str) -> Optional[Refusal]:
        """A model being trained under this name may not be deployed or loaded by another door."""
        trainer = self._trainer_lookup()
        running = getattr(trainer, "running_training_for", lambda _name: None)(model_id)
        if running:
            return Refusal(
                grpc.StatusCode.ALREADY_EXISTS,
                f"a training for {quote(model_id)} is running ({running}): it will save a model "
                "of that name; choose another id",
            )
        return None

    # -- reporting ------------------------------------------------------------------------

    @staticmethod
    def refused(transport: str, what: str, refusal: Refusal) -> Refusal:
        """Log one short line for ``refusal`` and return it."""
        log.warning("<CCV30941100W>", "refused %s %s: %s", transport, what, refusal.message)
        return refusal
