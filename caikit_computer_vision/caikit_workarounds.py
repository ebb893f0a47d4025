"""Every place where this library works around caikit 0.29.0, and nothing else.

Each workaround names the caikit behaviour it replaces (file and function, as of caikit 0.29.0)
so that it can be deleted once caikit offers the hook or the fix. Everything else in the library
uses caikit's public extension points (model finder and trainer in the config, the FastAPI app of
``RuntimeHTTPServer``). tests/test_caikit_workarounds.py checks what each workaround relies on,
and fails when a caikit upgrade changes it.

Relied on, not replaced: ``caikit_computer_vision/__init__.py`` registers the data model and
modules only when its ``data_model`` attribute is first read (PEP 562 ``__getattr__``), so that
pure helpers import without caikit. caikit 0.29 reads that attribute right after importing
``runtime.library`` (``caikit/runtime/utils/import_util.py``, ``UnifiedDataModel.add_library``
via ``get_data_model``); tests/test_imports.py fails if it stops.
"""

# Standard
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Sequence
import asyncio
import concurrent.futures
import contextvars
import functools
import os
import uuid

# Third Party
import grpc

# First Party
from caikit.core.model_management.job_base import JobFutureBase
from caikit.core.model_management.local_job_base import LocalJobBase
from caikit.core.model_management.local_model_trainer import LocalModelTrainer
from caikit.core.toolkit.reversible_hasher import ReversibleHasher
import alog

# Local
from .guards.paths import client_safe

log = alog.use_channel("CCVWORK")

_CAIKIT_GRPC_ADDRESS_PREFIX = "[::]:"


@contextmanager
def build_servers_with(
    host: str,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    metrics_server: Optional[Callable[..., object]] = None,
) -> Iterator[None]:
    """While caikit builds its servers: bind ``host``, put ``interceptors`` in front, and start
    ``metrics_server`` (called as prometheus_client's ``start_http_server(port, addr=host)``)
    instead of prometheus_client's.

    Replaces, in caikit/runtime/grpc_server.py ``RuntimeGRPCServer.__init__``:
    ``grpc.server(..., interceptors=(PROMETHEUS_METRICS_INTERCEPTOR,))`` (no way to add an
    interceptor) and ``add_insecure_port`` / ``add_secure_port(f"[::]:{port}")`` (every
    interface); in caikit/runtime/server_base.py ``RuntimeServerBase._start_metrics_server``:
    ``start_http_server(port)`` (every interface, a thread per connection, no timeout). Our
    interceptors go first, so a call they refuse never reaches the Prometheus interceptor, and
    leaves no metric label behind.
    """
    # First Party
    import caikit.runtime.server_base as server_base

    original_grpc_server = grpc.server
    original_metrics_server = server_base.start_http_server

    def grpc_server_on_host(*args, **kwargs):
        kwargs["interceptors"] = (*interceptors, *(kwargs.get("interceptors") or ()))
        server = original_grpc_server(*args, **kwargs)
        for method_name in ("add_insecure_port", "add_secure_port"):
            setattr(server, method_name, _rebind(getattr(server, method_name), host))
        return server

    grpc.server = grpc_server_on_host
    server_base.start_http_server = functools.partial(
        metrics_server or original_metrics_server, addr=host
    )
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


def cancel_running_trainings(trainer) -> int:
    """Cancel ``trainer``'s trainings that still run, wait for them, return how many.

    Replaces the missing shutdown step of caikit/runtime/grpc_server.py
    ``RuntimeGRPCServer.stop`` and http_server.py ``RuntimeHTTPServer.stop``: caikit 0.29
    trains in non-daemon threads (core/model_management/local_model_trainer.py) and does not
    stop them, so SIGTERM during a training leaves the process running until it ends.
    """
    running = running_trainings(trainer)
    for future in running:
        log.info("<CCV84210378I>", "cancelling training %s at shutdown", future.id)
        future.cancel()
    for future in running:
        future.wait()
    return len(running)


def running_trainings(trainer) -> List[JobFutureBase]:
    """The trainings ``trainer`` runs now (neither completed, failed nor cancelled).

    Reads caikit/core/model_management/local_job_base.py ``LocalJobBase._futures``, the dict
    (training id -> future) that ``LocalJobBase.__init__`` creates and
    local_model_trainer.py ``LocalModelTrainer.train`` fills: caikit lists no trainings
    publicly. A trainer that is not a ``LocalJobBase`` has no trainings we can see.
    """
    if not isinstance(trainer, LocalJobBase):
        return []
    futures = list(trainer._futures.values())  # pylint: disable=protected-access
    return [future for future in futures if not future.get_info().status.is_terminal]


class KeepSavedModelFuture(LocalModelTrainer.LocalModelTrainFuture):
    """caikit's training future, except that forgetting a training keeps what it saved.

    Replaces caikit/core/model_management/local_job_base.py ``LocalJobFuture._delete_result``,
    which ``LocalJobBase._purge_old_futures`` calls for every training older than the trainer's
    ``retention_duration`` (a day by default) on the next status or Train call: it runs
    ``shutil.rmtree(save_path)``. A training's save path is ``models/<model_name>``, the model
    being served, and for a save refused because the name was taken (a second runtime on the
    same models/), another runtime's model. The record may go; the model stays.
    """

    def _delete_result(self) -> None:
        log.debug("<CCV84210380D>", "training %s forgotten; its saved model is kept", self.id)

    def cancel(self) -> None:
        """caikit's cancel, except that the training stops itself at its next check.

        Replaces caikit/core/model_management/local_job_base.py ``LocalJobFuture.cancel``, which
        calls toolkit/concurrency/destroyable_thread.py ``DestroyableThread.destroy``: that
        raises an exception into the training's thread with ``PyThreadState_SetAsyncExc``, at
        whatever it is running. CPython hands the exception to every thread state with that
        thread's id, and a thread that the training is starting has it until it runs: while
        transformers started a thread to load weights, the new thread died before it said it
        had started, and the training waited for it for ever, holding concurrent.futures'
        process-wide lock; every thread-pool submission after it waited too, gRPC's included
        (the runtime stopped answering gRPC; seen in tests/test_newcomer.py's Ctrl-C test).

        Here only the flag that ``destroy`` sets first is set (``DestroyableThread.__destroyed``:
        its ``run`` then does not start the work, its ``canceled`` reads it, and the thread's
        ``destroyed`` says so), and the training (``TransformersObjectDetector.train``) raises
        caikit's ``ThreadDestroyedException`` at its next check: before and after loading its
        base model, before every step and before it is saved. caikit then reports CANCELED as
        before.
        """
        log.debug("<CCV84210382D>", "cancelling training %s at its next step", self.id)
        self._worker._DestroyableThread__destroyed = True  # pylint: disable=protected-access

    def get_info(self):
        """caikit's info, with each error's text as a client may read it.

        Replaces what caikit/runtime/servicers/training_management_servicer.py
        ``TrainingManagementServicerImpl.GetTrainingStatus`` sends as an ERRORED training's
        ``reasons``: ``str(error)`` of whatever the training raised, which can name absolute
        server paths and a save's staging directory (process id and host name). The runtime's
        log keeps the full error (caikit logs it when the training fails).
        """
        info = super().get_info()
        if info.errors:
            info.errors = [TrainingError(client_safe(str(err))) for err in info.errors]
        return info


class TrainingError(Exception):
    """A training's error as its client reads it (``KeepSavedModelFuture.get_info``)."""


class KeepSavedModelsTrainer(LocalModelTrainer):
    """caikit's local trainer, whose trainings are ``KeepSavedModelFuture``s.

    Relies on caikit/core/model_management/local_model_trainer.py ``LocalModelTrainer.train``
    building every training's future from the class attribute ``LocalModelFuture`` (caikit's
    ``LocalModelTrainFuture``): ``self.LocalModelFuture(self._instance_name, module_class,
    save_path=..., future_id=..., ...)``. caikit's config names a trainer class, not a future
    class, so the class is swapped here.
    """

    LocalModelFuture = KeepSavedModelFuture


def routable_training_id(trainer: LocalJobBase) -> str:
    """A new training id for ``trainer`` that caikit's ``ModelManager.get_model_future`` can
    route.

    caikit/core/model_management/local_model_trainer.py ``LocalModelTrainer.train`` always
    passes ``future_id`` to its future, and local_job_base.py ``LocalJobFuture.__init__`` then
    leaves out the reversible hash of the trainer's name (``use_reversible_hash=future_id is
    None``). core/model_manager.py ``get_model_future`` un-hashes the id's first part as a
    trainer name, which fails (``error.value_check`` logs an ERRR line with a stack trace) before
    it falls back to the default trainer: one error line per GetTrainingStatus poll. An id in the
    format caikit expects, passed as ``external_training_id``, routes without an error. The
    trainer's name is ``LocalJobBase._instance_name`` (set by ``LocalJobBase.__init__``; caikit
    has no public accessor).
    """
    instance_name = trainer._instance_name  # pylint: disable=protected-access
    return JobFutureBase.ID_DELIMITER.join(
        [ReversibleHasher.hash(instance_name), str(uuid.uuid4())]
    )


def save_path_for(output_dir: str, model_name: str) -> str:
    """The ``save_path`` to hand caikit's trainer so that a training saves to
    ``<output_dir>/<model_name>`` exactly.

    caikit/core/model_management/local_job_base.py ``LocalJobFuture._save_path_with_id`` appends
    ``model_name`` to ``save_path`` only when it is not already a substring of it: with
    ``save_path=output_dir``, a model named "model" would be saved over ``models/`` itself. A
    path that already ends in the name is kept as it is.
    """
    return os.path.join(output_dir, model_name)


def trainer_name_of(training_id: str) -> str:
    """The trainer instance name that ``ModelManager.get_model_future`` will look up.

    Mirrors caikit/core/model_management/job_base.py ``JobBase.get_job_name``, so that the
    front door refuses ids naming no configured trainer before caikit logs an error for them.
    """
    return ReversibleHasher.reverse_hash(training_id.split(JobFutureBase.ID_DELIMITER)[0])


def http_route_request_model(http_server, path: str) -> Optional[type]:
    """The pydantic model that caikit's POST route at ``path`` validates its JSON body with, or
    None when there is no such route.

    caikit/runtime/http_server/http_server.py builds that model in the method that adds the
    route (``pydantic_request = dataobject_to_pydantic(...)``: ``_get_request_dataobject``'s
    ``<request name>HttpRequest`` for a predict route, the RPC's own request for a train route)
    and keeps it only in the route handler's closure, read here. By name it cannot be found:
    the prediction-job routes (``runtime.service_generation.enable_inference_jobs``, on by
    default) build a second ``<request name>HttpRequest`` afterwards, which takes the name, so
    the front door validated predict bodies with a model that was not the route's, and caikit
    parsed each of them again on the event loop (``take_validated_http_requests`` takes only a
    model of the route's own type).
    """
    for route in http_server.app.routes:
        methods = getattr(route, "methods", None) or ()
        if getattr(route, "path", None) != path or "POST" not in methods:
            continue
        handler = route.endpoint
        cells = dict(zip(handler.__code__.co_freevars, handler.__closure__ or ()))
        if "pydantic_request" in cells:
            return cells["pydantic_request"].cell_contents
    return None


def listen_http_on(http_server, host: str) -> None:
    """caikit's HTTP server listens on ``host`` instead of every interface.

    Replaces ``"host": "0.0.0.0"`` in caikit/runtime/http_server/http_server.py
    ``RuntimeHTTPServer.__init__``, which builds and loads its ``uvicorn.Config`` itself and
    refuses a ``host`` in ``runtime.http.server_config`` (RUN99488934E). uvicorn reads the
    config's ``host`` only when the server starts (uvicorn/config.py ``Config.bind_socket``,
    server.py ``Server.startup``), so it is set here, in between.
    """
    http_server.server.config.host = host


def bound_http_connections(http_server, protocol_factory: Callable[..., object]) -> None:
    """Serve ``http_server``'s connections with ``protocol_factory`` (a uvicorn HTTP protocol).

    caikit/runtime/http_server/http_server.py ``RuntimeHTTPServer.__init__`` builds and loads
    its ``uvicorn.Config`` itself, from ``runtime.http.server_config``, which can name a
    protocol class (``http``) but cannot hand it our bounds. uvicorn reads the loaded config's
    ``http_protocol_class`` when the server starts, so it is set here, in between.
    """
    # First Party
    from caikit.config import get_config

    chosen = (get_config().runtime.http.server_config or {}).get("http")
    if chosen is not None:
        raise ValueError(
            f"runtime.http.server_config.http is {chosen!r}: remove it, this runtime serves "
            "HTTP with its own bounded protocol (caikit_computer_vision/guards/http_connections.py)"
        )
    http_server.server.config.http_protocol_class = protocol_factory


def log_http_client_errors_briefly(http_server) -> None:
    """One WARN line, without a traceback, for each client error (4xx) that caikit's HTTP routes
    answer; a server fault (5xx) is still logged as caikit logs it, traceback included.

    Replaces caikit/runtime/http_server/http_server.py ``RuntimeHTTPServer._handle_exception``
    (a staticmethod that every route handler calls as ``self._handle_exception``), which logs
    every caikit error at ERROR with its traceback (32 lines for a threshold out of range), and
    the ``RequestValidationError`` handler that ``RuntimeHTTPServer.__init__`` registers
    (``request_validation_exception_handler``: ERROR with a traceback, and the client's input).
    The answers stay caikit's: ``{"details", "code", "id"}`` (and ``additional_info``).
    """
    # Third Party
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    # First Party
    from caikit.core.exceptions.caikit_core_exception import CaikitCoreException
    from caikit.runtime.names import STATUS_CODE_TO_HTTP
    from caikit.runtime.types.caikit_runtime_exception import CaikitRuntimeException

    caikit_handle_exception = http_server._handle_exception

    def handle_exception(err: Exception) -> Optional[dict]:
        if isinstance(err, (CaikitCoreException, CaikitRuntimeException)):
            status = STATUS_CODE_TO_HTTP.get(err.status_code, 500)
            if status < 500:
                _log_client_error(status, err.id, err.message)
                return {"details": err.message, "code": status, "id": err.id}
        return caikit_handle_exception(err)

    async def request_validation_error(_request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        details = errors[0]["msg"] if errors and "msg" in errors[0] else errors
        content = {"details": details, "additional_info": errors, "code": 422, "id": uuid.uuid4().hex}
        _log_client_error(422, content["id"], str(details))
        return JSONResponse(content=jsonable_encoder(content), status_code=422)

    http_server._handle_exception = handle_exception
    http_server.app.add_exception_handler(RequestValidationError, request_validation_error)


def run_http_calls_in_the_callers_context(http_server) -> None:
    """caikit's HTTP routes run their model call with the context variables of the request.

    Replaces the executors of caikit/runtime/http_server/http_server.py's route handlers:
    predict routes call ``loop.run_in_executor(self.thread_pool, call)`` and train routes
    ``loop.run_in_executor(None, call)`` (the event loop's default executor), and unlike
    asyncio's ``to_thread`` neither carries ``contextvars`` into the thread. Both become the same
    pools behind an executor that does: the server's at once, the loop's default one when the
    loop runs (the front door calls ``carry_context_into_default_executor`` on its first
    request). The door marks the work it lets in through a context variable (guards/log_lines.py).
    """
    http_server.thread_pool = _ContextCarryingExecutor(http_server.thread_pool)


def carry_context_into_default_executor() -> None:
    """Give the running event loop a default executor that carries ``contextvars`` (see
    ``run_http_calls_in_the_callers_context``); idempotent."""
    loop = asyncio.get_running_loop()
    if id(loop) not in _CONTEXT_CARRYING_LOOPS:
        loop.set_default_executor(_ContextCarryingThreadPool(thread_name_prefix="ccv-http-default"))
        _CONTEXT_CARRYING_LOOPS.add(id(loop))


# The event loops (by id; uvloop's take no attributes) whose default executor is ours.
_CONTEXT_CARRYING_LOOPS: set = set()


class _ContextCarryingExecutor(concurrent.futures.Executor):
    """``pool``, running each call in a copy of the submitter's ``contextvars`` context."""

    def __init__(self, pool: concurrent.futures.Executor):
        self._pool = pool
        self._max_workers = getattr(pool, "_max_workers", None)

    def submit(self, fn, /, *args, **kwargs):
        return self._pool.submit(contextvars.copy_context().run, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


class _ContextCarryingThreadPool(concurrent.futures.ThreadPoolExecutor):
    """A thread pool running each call in a copy of the submitter's ``contextvars`` context
    (asyncio takes only a ThreadPoolExecutor as a loop's default executor)."""

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def _log_client_error(status: int, error_id: str, message: str) -> None:
    # Local
    from .guards.http_door import printable  # the door imports this module

    log.warning("<CCV84210381W>", "HTTP %d (error %s): %s", status, error_id, printable(message))


def take_validated_http_requests(scope_key: str) -> None:
    """caikit's HTTP routes take the request model that the front door left in the request's
    ASGI scope under ``scope_key``, instead of parsing the body again on the event loop.

    Replaces caikit/runtime/http_server/pydantic_wrapper.py ``pydantic_from_request`` where
    caikit/runtime/http_server/http_server.py's route handlers call it (a global of that
    module): ``pydantic_model.model_validate_json(await request.body())``, on the event loop, a
    second copy of a body of up to 32 MiB. The door (guards/http_door.py) validated the same body
    with the same pydantic model, strictly, on a thread; a request it left no model for goes to
    caikit's function as before.
    """
    # First Party
    import caikit.runtime.http_server.http_server as caikit_http_server

    caikit_pydantic_from_request = caikit_http_server.pydantic_from_request

    async def pydantic_from_request(pydantic_model, request):
        validated = request.scope.get(scope_key)
        if type(validated) is pydantic_model:
            return validated
        return await caikit_pydantic_from_request(pydantic_model, request)

    caikit_http_server.pydantic_from_request = pydantic_from_request


def decode_http_base64_in_c() -> None:
    """The pydantic models that caikit's HTTP routes validate JSON bodies with decode base64
    ``bytes`` fields (the image) with pybase64's C decoder where the text is plain base64.

    Replaces caikit/runtime/http_server/pydantic_wrapper.py ``_from_base64``, the validator that
    ``_get_pydantic_type`` attaches to every ``bytes`` field of the models it builds. It is a
    global of that module, read when a model is built, so this runs before
    ``RuntimeHTTPServer()`` builds its routes. caikit's function is the standard library's
    ``base64.b64decode``, about 2.5x slower, with the GIL held, and for bodies up to 64 KiB on
    the event loop (guards/http_door.py validates them there): the image of a JSON predict is
    most of an HTTP request's extra cost over gRPC (docs/performance.md).

    pybase64 takes only what its validating decoder accepts: the alphabet, padding at the end,
    ASCII. Anything else (whitespace, other characters, padding inside, bytes) goes to caikit's
    own function, so every body decodes, or fails, exactly as caikit decodes it.
    """
    # Third Party
    import pybase64

    # First Party
    import caikit.runtime.http_server.pydantic_wrapper as pydantic_wrapper

    caikit_from_base64 = pydantic_wrapper._from_base64  # pylint: disable=protected-access
    if getattr(caikit_from_base64, "decodes_in_c", False):
        return

    def _from_base64(data):
        if isinstance(data, str):
            try:
                return pybase64.b64decode(data, validate=True)
            except ValueError:  # binascii.Error included: not plain base64
                pass
        return caikit_from_base64(data)

    _from_base64.decodes_in_c = True
    _from_base64.caikit_function = caikit_from_base64
    pydantic_wrapper._from_base64 = _from_base64  # pylint: disable=protected-access


def openapi_document(http_server) -> dict:
    """The OpenAPI document that ``http_server`` (a caikit ``RuntimeHTTPServer``, never started)
    would serve once started.

    caikit 0.29's caikit/runtime/dump_services.py ``dump_http_services`` reads ``/openapi.json``
    from a server it never starts; caikit/runtime/http_server/http_server.py
    ``RuntimeHTTPServer.start`` adds the request and response schemas by calling
    ``RuntimeHTTPServer._patch_openapi_spec``, which stores the whole document in
    ``app.openapi_schema``. Without that step the document refers to ``#/$defs/...`` schemas it
    does not contain, so it is run here, without starting the server.
    """
    http_server._patch_openapi_spec()  # pylint: disable=protected-access
    return http_server.app.openapi_schema


def current_model_manager():
    """The runtime's ``ModelManager`` singleton if one was built, without building it.

    caikit/runtime/model_management/model_manager.py ``ModelManager.get_instance`` builds the
    singleton on first use and keeps it in the private class attribute ``__instance`` (mangled:
    ``_ModelManager__instance``); caikit has no public way to ask whether it exists.
    """
    # First Party
    from caikit.runtime.model_management.model_manager import ModelManager

    return ModelManager._ModelManager__instance  # pylint: disable=protected-access


def forget_model_manager() -> None:
    """Forget the runtime's ``ModelManager`` singleton, so that the next
    ``ModelManager.get_instance()`` builds a new one from the config then in force.

    caikit has no public reset of it (caikit/runtime/model_management/model_manager.py
    ``ModelManager.get_instance`` and ``ModelManager.__init__``, which asserts that none exists).
    Shut the old one down first (``ModelManager.shut_down``).
    """
    # First Party
    from caikit.runtime.model_management.model_manager import ModelManager

    ModelManager._ModelManager__instance = None  # pylint: disable=protected-access
