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
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Deque, Dict, Iterable, Iterator, Optional
import asyncio
import collections
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

    One queue, first come first served, of two kinds of waiter: a gRPC call waits in its server
    thread, an HTTP request as a future on the event loop. A release hands its slot straight to
    the oldest waiter. An HTTP request therefore never takes a thread to wait, and a slot
    released on the event loop for a request waiting there costs no thread switch: under load
    that hop (a waiter thread per request, woken through a condition and waking the loop back)
    was the event loop's largest single cost, an eighth of its time with the GIL
    (docs/performance.md, "A gate without waiter threads").
    """

    def __init__(self, slots: int):
        self.slots = slots
        self._free = slots
        self._lock = threading.Lock()
        # Each waiter: a held ``threading.Lock`` that a release unlocks (a gRPC thread), or
        # (event loop, future) that a release resolves (an HTTP request).
        self._waiters: Deque[object] = collections.deque()

    @property
    def free(self) -> int:
        """Slots no call holds."""
        return self._free

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot."""
        return len(self._waiters)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold a slot for the block, waiting in this thread for one if none is free."""
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def acquire(self) -> None:
        """Take a slot, waiting in this thread for one if none is free (a gRPC call)."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            handed_over = threading.Lock()
            handed_over.acquire()
            self._waiters.append(handed_over)
        handed_over.acquire()  # unlocked by the release that hands this thread its slot

    async def acquire_async(self) -> None:
        """Wait for a slot without blocking the event loop; a cancelled wait takes none."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            waiter = (loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter[1]
        except asyncio.CancelledError:
            with self._lock:
                still_queued = waiter in self._waiters
                if still_queued:
                    self._waiters.remove(waiter)
            if not still_queued:
                self.release()  # a release had already handed this request its slot: pass it on
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest waiter if there is one."""
        with self._lock:
            if not self._waiters:
                if self._free >= self.slots:
                    raise ValueError("ModelCallGate released more often than acquired")
                self._free += 1
                return
            waiter = self._waiters.popleft()
        if isinstance(waiter, tuple):
            loop, future = waiter
            if _running_loop() is loop:
                _settle(future)
            else:
                try:
                    loop.call_soon_threadsafe(_settle, future)
                except RuntimeError:  # its loop has closed (shutdown): nobody awaits it
                    self.release()
        else:
            waiter.release()


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle(future: "asyncio.Future[None]") -> None:
    # A future cancelled meanwhile: its request's ``acquire_async`` passes the slot on.
    if not future.done():
        future.set_result(None)


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
