"""What each workaround of caikit_workarounds.py relies on in caikit 0.29 (and uvicorn) still holds.

One test per workaround, each failing when a caikit upgrade changes what the workaround relies
on: an attribute gone or of another type, another signature, or a line of caikit that the
workaround replaces written differently. Where caikit's behaviour can be exercised without a
runtime process it is (a real LocalModelTrainer, a real uvicorn config); where only a running
server would show it, the test reads caikit's source for the line the workaround names. That
the ports end up on loopback in a real runtime is tests/test_request_costs.py's
``test_no_port_is_reachable_on_another_address_of_the_machine``.
"""

# Standard
from concurrent.futures import ThreadPoolExecutor
import asyncio
import base64
import contextvars
import inspect
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time
import typing

# Third Party
import aconfig
import grpc
import numpy as np
import prometheus_client
import pydantic
import pytest
import uvicorn

# First Party
from caikit.core.exceptions.caikit_core_exception import CaikitCoreException
from caikit.core.model_management.job_base import JobBase, JobStatus
from caikit.core.model_management.local_job_base import LocalJobBase
from caikit.core.model_management.local_model_trainer import LocalModelTrainer
from caikit.core.model_management.model_trainer_base import ModelTrainerBase
from caikit.core.toolkit.concurrency import destroyable_thread
from caikit.core.toolkit.concurrency.destroyable_thread import ThreadDestroyedException
from caikit.runtime.grpc_server import RuntimeGRPCServer
from caikit.runtime.http_server import RuntimeHTTPServer
from caikit.runtime.model_management.model_manager import ModelManager
import caikit.runtime.grpc_server as caikit_grpc_server
import caikit.runtime.http_server.http_server as caikit_http_server
import caikit.runtime.http_server.pydantic_wrapper as pydantic_wrapper
import caikit.runtime.server_base as server_base

# Local
from caikit_computer_vision import caikit_workarounds, runtime_server
from caikit_computer_vision.caikit_workarounds import (
    KeepSavedModelFuture,
    KeepSavedModelsTrainer,
    build_servers_with,
    cancel_running_trainings,
    current_model_manager,
    decode_http_base64_in_c,
    forget_model_manager,
    listen_http_on,
    routable_training_id,
    running_trainings,
    save_path_for,
    trainer_name_of,
)

from .conftest import REPO_ROOT

TRAINER_NAME = "workarounds_test"


def _code(function) -> str:
    """caikit's source of ``function`` with its whitespace collapsed (reformatting is no change)."""
    return re.sub(r"\s+", " ", inspect.getsource(function))


def _trainer(trainer_class=KeepSavedModelsTrainer, **config) -> LocalModelTrainer:
    return trainer_class(aconfig.Config(config), TRAINER_NAME)


class _SavesADirectory:
    """A module for caikit's trainer: trains at once, saves a directory."""

    @classmethod
    def train(cls):
        return cls()

    def save(self, path: str) -> None:
        pathlib.Path(path).mkdir(parents=True)
        (pathlib.Path(path) / "config.yml").write_text("module_id: test\n")


class _TrainsUntilReleased:
    """A module whose training runs until ``release`` is set, or it finds itself cancelled (the
    check ``TransformersObjectDetector.train`` makes before each step)."""

    release = threading.Event()

    @classmethod
    def train(cls):
        while not cls.release.is_set():
            if threading.current_thread().destroyed:
                raise ThreadDestroyedException()
            time.sleep(0.01)
        return cls()


class _StartsThreadsUntilCancelled:
    """A training that keeps starting threads, as transformers' weight loading does."""

    @classmethod
    def train(cls):
        while not threading.current_thread().destroyed:
            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(abs, range(4)))
        raise ThreadDestroyedException()


# -- the trainer ------------------------------------------------------------------------------


def test_the_trainer_builds_its_futures_from_the_class_attribute():
    """KeepSavedModelsTrainer swaps LocalModelTrainer.LocalModelFuture; train must use it."""
    assert LocalModelTrainer.LocalModelFuture is LocalModelTrainer.LocalModelTrainFuture
    future = _trainer().train(_SavesADirectory)
    future.wait()
    assert type(future) is KeepSavedModelFuture
    assert future.get_info().status == JobStatus.COMPLETED


def test_a_forgotten_training_keeps_its_saved_model(tmp_path):
    """caikit purges a training older than retention_duration on the next lookup and deletes its
    save path (LocalJobFuture._delete_result); with KeepSavedModelFuture the model stays."""
    for trainer_class, kept in ((LocalModelTrainer, False), (KeepSavedModelsTrainer, True)):
        output_dir = tmp_path / trainer_class.__name__
        trainer = _trainer(trainer_class, retention_duration="0s")
        future = trainer.train(
            _SavesADirectory, save_path=save_path_for(str(output_dir), "model"), model_name="model"
        )
        future.wait()
        assert future.save_path == str(output_dir / "model")
        assert (output_dir / "model" / "config.yml").is_file()
        with pytest.raises(CaikitCoreException):  # purged: caikit forgot the training
            trainer.get_model_future(future.id)
        # caikit's own future deletes the model (if this fails, caikit stopped deleting saved
        # models when it forgets a training: KeepSavedModelFuture can go).
        assert (output_dir / "model").exists() is kept, trainer_class.__name__


def test_save_path_for_is_kept_as_given_where_the_output_dir_would_not_be():
    """caikit appends model_name to save_path only when it is not a substring of it."""
    save_path_with_id = LocalModelTrainer.LocalModelTrainFuture._save_path_with_id
    assert save_path_with_id("/srv/models", False, "id", "model", None) == "/srv/models"
    assert save_path_with_id("/srv/models", False, "id", "cat", None) == "/srv/models/cat"
    for name in ("model", "cat", "models"):
        path = save_path_for("/srv/models", name)
        assert save_path_with_id(path, False, "id", name, None) == f"/srv/models/{name}"


def test_a_routable_training_id_is_kept_and_names_its_trainer():
    trainer = _trainer()
    training_id = routable_training_id(trainer)
    future = trainer.train(_SavesADirectory, external_training_id=training_id)
    future.wait()
    assert future.id == training_id
    assert trainer.get_model_future(training_id) is future
    # What ModelManager.get_model_future looks the trainer up by, and the front door's mirror.
    assert ModelTrainerBase.get_trainer_name(training_id) == TRAINER_NAME
    assert JobBase.get_job_name(training_id) == TRAINER_NAME
    assert trainer_name_of(training_id) == TRAINER_NAME


def test_running_trainings_are_listed_and_cancelled_at_shutdown():
    trainer = _trainer()
    _TrainsUntilReleased.release.clear()
    try:
        running = trainer.train(_TrainsUntilReleased)
        done = trainer.train(_SavesADirectory)
        done.wait()
        assert running_trainings(trainer) == [running]
        assert cancel_running_trainings(trainer) == 1
        assert running.get_info().status == JobStatus.CANCELED
        assert running_trainings(trainer) == []
    finally:
        _TrainsUntilReleased.release.set()
    assert running_trainings(object()) == []  # not a local trainer: nothing we can see


def test_a_cancelled_training_stops_itself_and_nothing_is_raised_into_a_thread(monkeypatch):
    raised_into = []

    def set_async_exc(thread_id, exception):
        raised_into.append(thread_id)
        return 0

    monkeypatch.setattr(destroyable_thread.ctypes.pythonapi, "PyThreadState_SetAsyncExc", set_async_exc)
    trainer = _trainer()
    training = trainer.train(_StartsThreadsUntilCancelled)
    time.sleep(0.2)
    training.cancel()
    wait_until_done = time.monotonic() + 10
    while not training.get_info().status.is_terminal and time.monotonic() < wait_until_done:
        time.sleep(0.01)
    assert training.get_info().status == JobStatus.CANCELED
    assert raised_into == []
    # No thread was left waiting for another with concurrent.futures' lock held.
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(abs, -1).result(timeout=5) == 1


def test_caikit_cancels_by_the_flag_its_thread_reads_then_an_exception_into_it():
    """KeepSavedModelFuture.cancel sets only the flag that DestroyableThread.destroy sets first."""
    assert "self._worker.destroy()" in _code(LocalJobBase.LocalJobFuture.cancel)
    destroy = _code(destroyable_thread.DestroyableThread.destroy)
    assert destroy.index("self.__destroyed = True") < destroy.index("PyThreadState_SetAsyncExc")
    assert "return self.__destroyed" in _code(destroyable_thread.DestroyableThread.destroyed.fget)
    assert "if self.__destroyed:" in _code(destroyable_thread.DestroyableThread.run)
    assert "self.destroyed and" in _code(destroyable_thread.DestroyableThread.canceled.fget)


# -- where the servers listen ------------------------------------------------------------------


def test_caikit_builds_its_grpc_server_through_grpc_server_on_every_interface():
    """build_servers_with replaces grpc.server while caikit calls it, and caikit's
    ``[::]:port`` addresses."""
    assert caikit_grpc_server.grpc is grpc
    init = _code(RuntimeGRPCServer.__init__)
    assert "self.server = grpc.server( thread_pool=self.thread_pool, interceptors=(" in init
    assert 'self.server.add_insecure_port(f"[::]:{self.port}")' in init
    assert 'self.server.add_secure_port(f"[::]:{self.port}", server_credentials)' in init
    assert caikit_workarounds._CAIKIT_GRPC_ADDRESS_PREFIX == "[::]:"


def test_caikit_starts_its_metrics_server_through_a_module_global():
    """build_servers_with replaces server_base.start_http_server, called with the port alone."""
    assert server_base.start_http_server is prometheus_client.start_http_server
    assert "start_http_server(get_config().runtime.metrics.port)" in _code(
        server_base.RuntimeServerBase._start_metrics_server
    )


def test_a_grpc_server_built_inside_the_fence_listens_on_the_host_only():
    # 127.0.0.2 is loopback too (127/8), so a server on it is refused at 127.0.0.1.
    with build_servers_with("127.0.0.2"):
        server = grpc.server(ThreadPoolExecutor(1), interceptors=())
        port = server.add_insecure_port("[::]:0")
    assert grpc.server.__module__ == "grpc"  # put back
    try:
        with socket.socket() as probe:
            probe.settimeout(2)
            assert probe.connect_ex(("127.0.0.1", port)) != 0
        with socket.create_connection(("127.0.0.2", port), timeout=2):
            pass
    finally:
        server.stop(None)


def test_uvicorn_binds_the_host_set_after_caikit_loaded_its_config():
    """caikit hard-codes host 0.0.0.0 and builds the uvicorn server in __init__; uvicorn reads
    the host when it binds, so listen_http_on sets it in between."""
    init = _code(RuntimeHTTPServer.__init__)
    assert '"host": "0.0.0.0",' in init
    assert "config.load()" in init and "self.server = uvicorn.Server(config=config)" in init
    config = uvicorn.Config(lambda scope, receive, send: None, host="0.0.0.0", port=0)
    config.load()
    http_server = type("CaikitHttpServer", (), {"server": uvicorn.Server(config=config)})()
    listen_http_on(http_server, "127.0.0.1")
    with config.bind_socket() as bound:
        assert bound.getsockname()[0] == "127.0.0.1"


# -- caikit's HTTP routes ------------------------------------------------------------------------


def test_uvicorn_takes_its_protocol_class_from_the_loaded_config():
    """bound_http_connections sets config.http_protocol_class after caikit loaded the config."""
    config = uvicorn.Config(lambda scope, receive, send: None, port=0)
    config.load()
    assert inspect.isclass(config.http_protocol_class)
    assert "config.http_protocol_class" in _code(uvicorn.Server.startup)


def test_caikit_routes_report_errors_through_a_replaceable_static_handler():
    """log_http_client_errors_briefly replaces the instance's _handle_exception and adds a
    RequestValidationError handler."""
    handler = inspect.getattr_static(RuntimeHTTPServer, "_handle_exception")
    assert isinstance(handler, staticmethod)
    assert list(inspect.signature(handler.__func__).parameters) == ["err"]
    assert _code(RuntimeHTTPServer).count("if error_content := self._handle_exception(err):") >= 5
    init = _code(RuntimeHTTPServer.__init__)
    assert "@self.app.exception_handler(RequestValidationError)" in init


def test_caikit_routes_run_calls_on_the_server_pool_and_the_loops_default_executor():
    """run_http_calls_in_the_callers_context wraps thread_pool; caikit's start reads its
    _max_workers, which the wrapper keeps."""
    routes = _code(RuntimeHTTPServer)
    assert "await loop.run_in_executor(self.thread_pool, call)" in routes
    assert "await loop.run_in_executor(None, call)" in routes
    assert "self.thread_pool._max_workers" in _code(RuntimeHTTPServer.start)
    assert "self.thread_pool: ThreadPoolExecutor = ServerThreadPool.pool" in _code(
        server_base.RuntimeServerBase.__init__
    )

    pool = ThreadPoolExecutor(3)
    http_server = type("CaikitHttpServer", (), {"thread_pool": pool})()
    caikit_workarounds.run_http_calls_in_the_callers_context(http_server)
    assert http_server.thread_pool._max_workers == 3
    marker = contextvars.ContextVar("marker", default="unset")
    marker.set("request")
    assert http_server.thread_pool.submit(marker.get).result(timeout=5) == "request"

    async def in_default_executor() -> str:
        caikit_workarounds.carry_context_into_default_executor()
        marker.set("loop request")
        return await asyncio.get_running_loop().run_in_executor(None, marker.get)

    assert asyncio.run(in_default_executor()) == "loop request"
    pool.shutdown()


def test_caikit_routes_parse_bodies_through_a_module_global():
    """take_validated_http_requests replaces http_server.pydantic_from_request."""
    parse = pydantic_wrapper.pydantic_from_request
    assert caikit_http_server.pydantic_from_request.__qualname__ == parse.__qualname__
    assert inspect.iscoroutinefunction(parse)
    assert list(inspect.signature(parse).parameters) == ["pydantic_model", "request"]
    assert _code(RuntimeHTTPServer).count("= await pydantic_from_request(") >= 3


def test_caikit_keeps_each_http_routes_request_model_in_its_handler():
    """http_route_request_model reads ``pydantic_request`` from the closure of caikit's predict
    and train handlers, where each passes it to pydantic_from_request."""
    for add_route in (
        RuntimeHTTPServer._add_unary_input_unary_output_handler,
        RuntimeHTTPServer._train_add_unary_input_unary_output_handler,
    ):
        code = _code(add_route)
        assert "pydantic_request = dataobject_to_pydantic(" in code
        assert "await pydantic_from_request(pydantic_request, context)" in code


# Builds caikit's HTTP server as runtime_server.serve does (prediction jobs on, caikit's
# default), validates a predict body as the front door does, then calls caikit's own predict
# handler with a body that is not JSON: only a handler that takes the door's request gets as
# far as looking for the model (404); one that parses the body again answers 400 or 422.
_PREDICT_TAKES_THE_DOORS_REQUEST = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
import common
common.configure_caikit()
from caikit.runtime.http_server.http_server import RuntimeHTTPServer
from starlette.requests import Request
from caikit_computer_vision import caikit_workarounds, runtime_server
from caikit_computer_vision.guards.http_door import VALIDATED_REQUEST
caikit_workarounds.decode_http_base64_in_c()
server = RuntimeHTTPServer()
assert server.enable_inference_jobs
caikit_workarounds.take_validated_http_requests(VALIDATED_REQUEST)
predict, _ = runtime_server._http_request_models(server)
(path, model), = predict.items()
validated = model.model_validate_json(
    json.dumps({"model_id": "my_model", "inputs": "aGVsbG8="}), strict=True
)
route = next(r for r in server.app.routes if getattr(r, "path", None) == path)
async def receive():
    return {"type": "http.request", "body": b"not json", "more_body": False}
scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b"",
         VALIDATED_REQUEST: validated}
response = asyncio.run(route.endpoint(Request(scope, receive)))
print(response.status_code)
"""


def test_the_predict_route_takes_the_request_the_front_door_validated(tmp_path):
    (tmp_path / "models").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _PREDICT_TAKES_THE_DOORS_REQUEST, str(REPO_ROOT)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "404", done.stdout[-2000:]


def test_caikit_decodes_base64_bytes_fields_with_a_module_global_read_at_build_time():
    """decode_http_base64_in_c replaces pydantic_wrapper._from_base64 before models are built."""
    assert "BeforeValidator(_from_base64)" in _code(pydantic_wrapper._get_pydantic_type)
    assert 'base64.b64decode(data.encode("utf-8"))' in _code(pydantic_wrapper._from_base64)
    serve = _code(runtime_server.serve)
    assert serve.index("decode_http_base64_in_c()") < serve.index("RuntimeHTTPServer()")


def _outcome(decode, data):
    try:
        return ("decoded", decode(data))
    except Exception as err:  # noqa: BLE001 (the exception is what is compared)
        return ("failed", type(err), str(err))


def test_base64_decoded_in_c_decodes_and_fails_exactly_as_caikit_does(monkeypatch):
    monkeypatch.setattr(pydantic_wrapper, "_from_base64", pydantic_wrapper._from_base64)
    caikit_decode = pydantic_wrapper._from_base64
    decode_http_base64_in_c()
    ours = pydantic_wrapper._from_base64
    assert ours is not caikit_decode and ours.caikit_function is caikit_decode
    decode_http_base64_in_c()  # a second call keeps the first
    assert pydantic_wrapper._from_base64 is ours

    random = np.random.default_rng(20261205)
    cases = ["", "QUJD", "QUJD\n", "QU JD", "QUJD====", "QUI", "Q", "QUJDRA==QUJD", "QUJDé",
             "=QUJD", "\x00QUJD", "QUJD-_", b"raw bytes stay bytes", "QUJD\r\n" * 300]
    for _ in range(400):
        text = list(base64.b64encode(random.bytes(int(random.integers(0, 80)))).decode())
        for _ in range(int(random.integers(0, 3))):
            text.insert(int(random.integers(0, len(text) + 1)), str(random.choice(list(" \n=-_.é+/A"))))
        cases.append("".join(text))
    for data in cases:
        assert _outcome(ours, data) == _outcome(caikit_decode, data), repr(data)

    # Plain base64 never reaches the standard library's decoder.
    pixels = random.bytes(45_000)
    image = base64.b64encode(pixels).decode()

    def refuse(*_args, **_kwargs):
        raise AssertionError("caikit's decoder was called for plain base64")

    monkeypatch.setattr(pydantic_wrapper.base64, "b64decode", refuse)
    assert ours(image) == pixels


def test_models_built_after_it_decode_with_it(monkeypatch):
    monkeypatch.setattr(pydantic_wrapper, "_from_base64", pydantic_wrapper._from_base64)
    decode_http_base64_in_c()
    (validator,) = typing.get_args(pydantic_wrapper._get_pydantic_type(bytes))[1:]
    assert validator.func is pydantic_wrapper._from_base64
    model = pydantic.create_model("Body", inputs=pydantic_wrapper._get_pydantic_type(bytes))
    assert model.model_validate_json('{"inputs": "QUJD"}', strict=True).inputs == b"ABC"


# -- what the proto dump relies on -----------------------------------------------------------------


def test_the_openapi_patch_step_takes_no_argument_and_stores_the_document():
    """openapi_document runs _patch_openapi_spec, which start() runs, and reads the result."""
    assert list(inspect.signature(RuntimeHTTPServer._patch_openapi_spec).parameters) == ["self"]
    patch = _code(RuntimeHTTPServer._patch_openapi_spec)
    assert "self.app.openapi_schema = openapi_schema" in patch
    assert "self._patch_openapi_spec()" in _code(RuntimeHTTPServer.start)


def test_the_model_manager_singleton_is_the_class_attribute_get_instance_returns(monkeypatch):
    assert "_ModelManager__instance" in vars(ModelManager)
    built = object()
    monkeypatch.setattr(ModelManager, "_ModelManager__instance", built)
    assert current_model_manager() is built
    assert ModelManager.get_instance() is built
    forget_model_manager()
    assert current_model_manager() is None
