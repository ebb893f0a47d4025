"""The front door: every call is checked once, in front of caikit, against a real runtime.

One runtime for the module, with the example's config and a few limits made small through
environment overrides (so that hitting them is cheap): a 1 MiB HTTP body, 3 open streams, one
training at a time. Each test sends what a careless or hostile client would and checks the
status, the log and /metrics afterwards.
"""

# Standard
import base64
import http.client
import json
import shutil
import threading
import time
import zipfile

# Third Party
import grpc
import pytest

# First Party
from caikit.runtime.protobufs import model_runtime_pb2

# Local
from common import HOST
from example_tools.synthetic_data import render_example

from .served_example import (
    ENDLESS_EPOCHS,
    TRAIN_ROUTE,
    cancel_training,
    serve_example,
    train_body,
    wait_for_training,
    wait_until,
)

IMAGE, _ = render_example("cat")
PREDICT_ROUTE = "/api/v1/task/object-detection"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
MAX_BODY = 1024 * 1024
MAX_STREAMS = 3
LIMITS_ENV = {
    "CAIKIT_COMPUTER_VISION_MAX_HTTP_BODY_BYTES": str(MAX_BODY),
    "CAIKIT_COMPUTER_VISION_MAX_OPEN_STREAMS": str(MAX_STREAMS),
    "CAIKIT_COMPUTER_VISION_MAX_CONCURRENT_TRAININGS": "1",
    "CAIKIT_COMPUTER_VISION_MAX_NUM_EPOCHS": str(ENDLESS_EPOCHS),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, saved_model_dir):
    """This module's runtime (tests/conftest.py's ``runtime`` and ``predict`` come from it)."""
    with serve_example(tmp_path_factory.mktemp("front_door"), saved_model_dir, LIMITS_ENV) as served:
        yield served


@pytest.fixture(scope="module")
def channel(runtime):
    with grpc.insecure_channel(f"{HOST}:{runtime.ports['grpc']}") as channel:
        yield channel


def _status(call, *args, **kwargs) -> grpc.StatusCode:
    try:
        call(*args, **kwargs)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def _raw(channel, method: str):
    return channel.unary_unary(
        method, request_serializer=lambda m: m.SerializeToString(), response_deserializer=lambda b: b
    )


def _metrics(runtime) -> str:
    status, text = runtime.http("GET", "/metrics", port="metrics")
    assert status == 200
    return text


def _log_lines_naming(runtime, text: str) -> list:
    return [line for line in runtime.log().splitlines() if text in line]


# -- the allowlist -------------------------------------------------------------------------------


def test_grpc_methods_outside_the_allowlist_are_unimplemented(runtime, channel):
    """caikit's processproto.Process/Run trains with client-given paths and ids: not served here."""
    call = channel.unary_unary(
        "/processproto.Process/Run", request_serializer=lambda m: m, response_deserializer=lambda b: b
    )
    with pytest.raises(grpc.RpcError) as raised:
        call(b"", timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "not served" in raised.value.details()


def test_http_routes_outside_the_allowlist_answer_404(runtime):
    for method, path in (("GET", "/nothing/here"), ("PUT", "/health"), ("GET", PREDICT_ROUTE)):
        status, answer = runtime.http(method, path)
        assert status == 404, (method, path, answer)
        assert "not served" in answer["details"]
    assert runtime.http("GET", "/health")[0] == 200


@pytest.mark.parametrize(
    "method, request_message",
    [
        ("predictModelSize", model_runtime_pb2.PredictModelSizeRequest(modelId="x", modelPath="/etc")),
        ("loadModel", model_runtime_pb2.LoadModelRequest(modelId="x", modelPath="/usr")),
        ("unloadModel", model_runtime_pb2.UnloadModelRequest(modelId="my_model")),
        ("modelSize", model_runtime_pb2.ModelSizeRequest(modelId="my_model")),
    ],
)
def test_model_runtime_is_refused_unless_deployment_is_allowed(runtime, channel, predict, method,
                                                                 request_message):
    with pytest.raises(grpc.RpcError) as raised:
        _raw(channel, f"/mmesh.ModelRuntime/{method}")(request_message, timeout=10)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "allow_model_deployment" in raised.value.details()
    assert predict(IMAGE, 0.0).detected_objects  # my_model is still loaded


# -- model ids -----------------------------------------------------------------------------------


def test_unknown_ids_are_not_found_with_one_log_line_and_no_metric_label(runtime, predict):
    ids = [f"burst_{n:04d}_unknown" for n in range(40)]
    for model_id in ids:
        assert _status(predict, IMAGE, model_id=model_id) == grpc.StatusCode.NOT_FOUND
        status, _ = runtime.http("POST", PREDICT_ROUTE, {"model_id": model_id, "inputs": ""})
        assert status == 404
    metrics = _metrics(runtime)
    assert not [model_id for model_id in ids if model_id in metrics]
    for model_id in ids:
        assert len(_log_lines_naming(runtime, model_id)) == 2  # one per door
    assert "Traceback" not in runtime.log()


def test_a_path_as_model_id_is_refused_before_caikit_acts(runtime, predict, tmp_path):
    """A zip or a big directory outside models/ is neither extracted nor walked."""
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in (runtime.work_dir / "models" / "my_model").rglob("*"):
            zipped.write(path, path.relative_to(runtime.work_dir / "models"))
    for model_id in (str(archive), "/usr", "my_model/.", "my_model/./.", "./my_model", "../models/my_model"):
        started = time.monotonic()
        assert _status(predict, IMAGE, model_id=model_id) == grpc.StatusCode.NOT_FOUND
        assert time.monotonic() - started < 2.0, model_id
        assert len(_log_lines_naming(runtime, repr(model_id)[:50])) == 1, model_id
    loaded = [model["name"] for model in runtime.http_json("/info/models")["models"]]
    assert all("/" not in name for name in loaded), loaded


@pytest.mark.parametrize("length", [129, 300, 5000])
def test_ids_over_the_length_limit_are_invalid_argument_on_both_doors(runtime, predict, length):
    model_id = "m" * length
    assert _status(predict, IMAGE, model_id=model_id) == grpc.StatusCode.INVALID_ARGUMENT
    status, answer = runtime.http("POST", PREDICT_ROUTE, {"model_id": model_id, "inputs": ""})
    assert status == 400, answer
    assert "max_model_id_length" in answer["details"]


# -- HTTP bodies and types -----------------------------------------------------------------------


def test_an_http_body_over_the_limit_is_413_before_it_is_read(runtime):
    """Refused from Content-Length alone: the client has sent only its headers."""
    connection = http.client.HTTPConnection(HOST, runtime.ports["http"], timeout=10)
    try:
        connection.putrequest("POST", PREDICT_ROUTE)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(MAX_BODY + 1))
        connection.endheaders()
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 413, answer
    assert "max_http_body_bytes" in answer["details"]


def test_a_body_just_under_the_limit_is_read(runtime):
    status, answer = runtime.http(
        "POST", PREDICT_ROUTE, {"model_id": "my_model", "inputs": "A" * (MAX_BODY - 100)}
    )
    # Read, and refused for what it holds (zeros, not an image), not for its size.
    assert status == 400, answer
    assert "not a complete image" in answer["details"]


@pytest.mark.parametrize("threshold", ["0.5", True, [0.5], {"v": 0.5}])
def test_http_parameters_of_another_json_type_are_422(runtime, threshold):
    inputs = base64.b64encode(IMAGE).decode()
    status, answer = runtime.http(
        "POST", PREDICT_ROUTE,
        {"model_id": "my_model", "inputs": inputs, "parameters": {"threshold": threshold}},
    )
    assert status == 422, answer
    assert "threshold" in answer["details"]
    status, answer = runtime.http(
        "POST", PREDICT_ROUTE, {"model_id": "my_model", "inputs": inputs, "parameters": {"threshold": 0.5}}
    )
    assert status == 200, answer


def test_a_train_num_epochs_of_another_json_type_is_422(runtime):
    body = train_body(model_name="typed")
    body["parameters"]["num_epochs"] = "1"
    status, answer = runtime.http("POST", TRAIN_ROUTE, body)
    assert status == 422, answer
    assert not (runtime.work_dir / "models" / "typed").exists()


# -- threads -------------------------------------------------------------------------------------


class _IdleStream:
    """A server-reflection stream, as grpcurl opens one: one request, then idle until closed."""

    def __init__(self, channel):
        # Third Party
        from grpc_reflection.v1alpha import reflection_pb2

        self._done = threading.Event()
        request = reflection_pb2.ServerReflectionRequest(list_services="")

        def requests():
            yield request
            self._done.wait(60)

        call = channel.stream_stream(
            REFLECTION,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        self._responses = call(requests(), timeout=60)

    def first_answer(self):
        return next(self._responses)

    def close(self):
        self._done.set()
        self._responses.cancel()


def test_two_idle_reflection_streams_do_not_delay_predictions(runtime, channel, predict):
    streams = [_IdleStream(channel) for _ in range(2)]
    try:
        for stream in streams:
            assert stream.first_answer().list_services_response.service
        started = time.monotonic()
        assert predict(IMAGE, 0.0, timeout=10).detected_objects
        status, _ = runtime.http("POST", PREDICT_ROUTE, {"model_id": "my_model", "inputs": base64.b64encode(IMAGE).decode()})
        assert status == 200
        assert time.monotonic() - started < 5
    finally:
        for stream in streams:
            stream.close()


def test_streams_over_the_limit_are_resource_exhausted(runtime, channel, predict):
    streams = [_IdleStream(channel) for _ in range(MAX_STREAMS)]
    try:
        for stream in streams:
            stream.first_answer()
        extra = _IdleStream(channel)
        with pytest.raises(grpc.RpcError) as raised:
            extra.first_answer()
        extra.close()
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_open_streams" in raised.value.details()
        assert predict(IMAGE, 0.0, timeout=10).detected_objects
    finally:
        for stream in streams:
            stream.close()
    wait_until(lambda: _a_stream_opens(channel), 10, "a stream opened after the others closed")


def _a_stream_opens(channel) -> bool:
    stream = _IdleStream(channel)
    try:
        stream.first_answer()
        return True
    except grpc.RpcError:
        return False
    finally:
        stream.close()


# -- trainings -----------------------------------------------------------------------------------


def test_num_epochs_over_the_limit_is_refused(runtime):
    for num_epochs in (ENDLESS_EPOCHS + 1, 2**63 - 1):
        body = train_body(model_name="endless", num_epochs=num_epochs)
        status, answer = runtime.http("POST", TRAIN_ROUTE, body)
        assert status == 400, answer
        assert "max_num_epochs" in answer["details"]
    assert not (runtime.work_dir / "models" / "endless").exists()


def test_trainings_over_the_limit_are_resource_exhausted_and_polls_log_no_error(runtime):
    status, job = runtime.http(
        "POST", TRAIN_ROUTE, train_body(model_name="long_one", num_epochs=ENDLESS_EPOCHS)
    )
    assert status == 200, job
    try:
        status, answer = runtime.http("POST", TRAIN_ROUTE, train_body(model_name="second_one"))
        assert status == 429, answer
        assert "max_concurrent_trainings" in answer["details"]
        errors_before = runtime.log().count(":ERRR:")
        for _ in range(5):
            wait_for_training(runtime, job["training_id"], "RUNNING")
        assert runtime.log().count(":ERRR:") == errors_before
        status, answer = runtime.http("GET", "/management/trainings?training_id=nonsense")
        assert status == 404, answer
    finally:
        cancel_training(runtime, job["training_id"])
    assert "Unknown trainer" not in runtime.log()
    status, job = runtime.http("POST", TRAIN_ROUTE, train_body(model_name="after_cancel"))
    assert status == 200, job
    wait_for_training(runtime, job["training_id"], "COMPLETED")
    shutil.rmtree(runtime.work_dir / "models" / "after_cancel")
