"""A served example runtime and what the end-to-end tests do with one: predict, train, wait.

A start takes 10 to 30 s on two cores, so tests share runtimes (tests/conftest.py's ``served``
with runtime_config.yaml as it is, ``served_tuned`` with the settings below, or one per module
where a module needs settings of its own). The gRPC predict call is the runtime
harness's; results are checked the same way whatever the test sent; a test waits on a condition
with a bound (``wait_until``, ``wait_for_training``), never for a fixed time.
"""

# Standard
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple, TypeVar, Union
import pathlib
import subprocess
import sys
import time

# Third Party
import grpc
import yaml

# Local
from caikit_computer_vision import images
from example_tools.runtime_harness import (
    CLIENT,
    predict_callable,
    RuntimeProcess,
    start_example_runtime,
)
import common

from .conftest import encode_image, noise_image

T = TypeVar("T")

# The HTTP route of the Train call (caikit names it after the task and the module).
TRAIN_ROUTE = "/api/v1/ObjectDetectionTaskTransformersObjectDetectorTrain"
# The states a training never leaves.
FINAL_TRAINING_STATES = ("COMPLETED", "ERRORED", "CANCELED")
# Long enough for a one-epoch training of the tests' data while other tests load two cores.
TRAINING_TIMEOUT_S = 180.0
# Many more epochs than any test waits for: a training that runs until it is cancelled.
ENDLESS_EPOCHS = 100_000

# -- the runtime with other settings than runtime_config.yaml's (conftest.py's served_tuned) ----
# Small HTTP and metrics limits, so that reaching them is quick (tests/test_http_bounds.py).
HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 2
MAX_HTTP_CONNECTIONS = 16
MAX_METRICS_CONNECTIONS = 2
METRICS_TIMEOUT_S = 1.5
# A short wait for a request message, so that the reaper is seen at work
# (tests/test_request_costs.py).
REQUEST_MESSAGE_TIMEOUT_S = 3
# Every format images.py checks, ICO included: GIF, BMP, TIFF and ICO are off by default
# (tests/test_image_formats.py). No setting changes what the other modules send (HTTP limits,
# gRPC messages that never come, images of other formats), so one runtime serves the three.
TUNED_ENV = {
    "CAIKIT_COMPUTER_VISION_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "CAIKIT_COMPUTER_VISION_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "CAIKIT_COMPUTER_VISION_MAX_HTTP_CONNECTIONS": str(MAX_HTTP_CONNECTIONS),
    "CAIKIT_COMPUTER_VISION_MAX_METRICS_CONNECTIONS": str(MAX_METRICS_CONNECTIONS),
    "CAIKIT_COMPUTER_VISION_METRICS_CONNECTION_TIMEOUT_S": str(METRICS_TIMEOUT_S),
    "CAIKIT_COMPUTER_VISION_REQUEST_MESSAGE_TIMEOUT_S": str(REQUEST_MESSAGE_TIMEOUT_S),
    "CAIKIT_COMPUTER_VISION_IMAGE_FORMATS": ",".join(images.CHECKED_FORMATS),
}

# The largest gRPC message the runtime takes, as runtime_config.yaml sets it.
MAX_MESSAGE_BYTES = yaml.safe_load(common.RUNTIME_CONFIG.read_text())["runtime"]["grpc"][
    "options"
]["grpc.max_receive_message_length"]


@dataclass(frozen=True)
class ServedExample:
    """A running example runtime and a gRPC predict call bound to it."""

    runtime: RuntimeProcess
    # runtime_harness.predict_callable over one loopback channel: predict(inputs, threshold, ...).
    predict: Callable


@contextmanager
def serve_example(
    work_dir: pathlib.Path,
    saved_model_dir: pathlib.Path,
    extra_env: Optional[Dict[str, str]] = None,
) -> Iterator[ServedExample]:
    """The example runtime serving ``my_model`` from ``work_dir``, stopped on exit.

    ``extra_env``: caikit config overrides for the runtime, e.g. ``CAIKIT_COMPUTER_VISION_...``.
    """
    runtime = start_example_runtime(work_dir / "runtime", saved_model_dir, extra_env=extra_env)
    try:
        with grpc.insecure_channel(f"{common.HOST}:{runtime.ports['grpc']}") as channel:
            yield ServedExample(runtime, predict_callable(channel))
    finally:
        runtime.stop()


def predict_status(
    predict: Callable, inputs: bytes, threshold: Optional[float] = None
) -> Tuple[grpc.StatusCode, str, object]:
    """(status code, details, result or None) of one predict call."""
    try:
        result = predict(inputs, threshold)
    except grpc.RpcError as err:
        return err.code(), err.details(), None
    return grpc.StatusCode.OK, "", result


def assert_serves_normally(served: ServedExample) -> None:
    """The runtime process is alive and answers an ordinary predict with a result."""
    width, height = 80, 60
    result = served.predict(encode_image(noise_image(width, height, seed=7)), 0.0)
    assert result.detected_objects
    assert_well_formed(result, width, height)
    assert served.runtime.process.poll() is None, served.runtime.log()[-5000:]


def assert_well_formed(result, width: int, height: int) -> None:
    """Scores in 0..1, label names of the model, boxes inside the ``width`` x ``height`` image.

    ``result`` is an ObjectDetectionResult: the gRPC message or caikit's data model object.
    """
    for detected in result.detected_objects:
        box = detected.box
        assert detected.label in common.DEFAULT_LABELS, detected.label
        assert 0.0 <= detected.score <= 1.0, detected.score
        assert 0 <= box.xmin < box.xmax <= width, (box.xmin, box.xmax, width)
        assert 0 <= box.ymin < box.ymax <= height, (box.ymin, box.ymax, height)


@contextmanager
def client_training(
    work_dir: pathlib.Path, env: Dict[str, str], model_id: str = "interrupted"
) -> Iterator[subprocess.Popen]:
    """run_train_and_inference.py training ``model_id`` (for ever, in effect), handed over once
    it says the runtime accepted the training; killed on exit if still running."""
    client = subprocess.Popen(
        [sys.executable, str(CLIENT), "--num-epochs", str(ENDLESS_EPOCHS), "--model-id", model_id],
        cwd=work_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in client.stdout:
            if "each epoch's loss is in the runtime's log" in line:
                break
        yield client
    finally:
        client.kill()


# -- waiting -----------------------------------------------------------------------------------


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    what: Union[str, Callable[[], str]],
    interval: float = 0.1,
) -> T:
    """The first true value of ``condition()``, called every ``interval`` s.

    Fails after ``timeout`` s with "``what`` did not happen within ``timeout`` s"; ``what`` may
    be a callable, read then (to name the last value seen).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"{described} did not happen within {timeout} s")
        time.sleep(interval)


# -- trainings over HTTP (/management/trainings is the servicer of gRPC's GetTrainingStatus) ----


def train_body(
    model_name: str = "trained",
    model_path: str = "models/my_model",
    img_dir: str = "train_data/images",
    labels: str = "train_data/labels.txt",
    num_epochs: int = 1,
) -> dict:
    """The JSON body of a Train call on the prepared working directory's data."""
    return {
        "model_name": model_name,
        "parameters": {
            "model_path": model_path,
            "train_data": {"img_dir_path": img_dir, "labels_file": labels},
            "num_epochs": num_epochs,
            "learning_rate": 0.001,
        },
    }


def start_training(runtime: RuntimeProcess, **body) -> str:
    """The training id of an accepted Train call with ``train_body(**body)``."""
    status, job = runtime.http("POST", TRAIN_ROUTE, train_body(**body))
    assert status == 200, job
    return job["training_id"]


def training_status(runtime: RuntimeProcess, training_id: str) -> dict:
    """The runtime's answer for ``training_id``: state, reasons, times."""
    status, info = runtime.http("GET", f"/management/trainings?training_id={training_id}")
    assert status == 200, info
    return info


def wait_for_training(
    runtime: RuntimeProcess,
    training_id: str,
    state: Optional[str] = None,
    timeout: float = TRAINING_TIMEOUT_S,
) -> dict:
    """The status of ``training_id`` once it is in ``state`` (by default: once it has ended).

    Fails as soon as the training ends in another state, naming it and its reasons, or after
    ``timeout`` s, naming the last state seen.
    """
    wanted = (state,) if state else FINAL_TRAINING_STATES
    last = {"state": "not asked yet"}

    def reached() -> Optional[dict]:
        last.update(training_status(runtime, training_id))
        if last["state"] in wanted:
            return dict(last)
        assert last["state"] not in FINAL_TRAINING_STATES, (
            f"training {training_id} ended {last['state']}, not {state}: {last.get('reasons')}"
        )
        return None

    return wait_until(
        reached,
        timeout,
        lambda: f"training {training_id} {' or '.join(wanted)} (still {last['state']})",
        interval=0.2,
    )


def cancel_training(runtime: RuntimeProcess, training_id: str, timeout: float = 30.0) -> dict:
    """Cancel ``training_id`` and return its status once it is CANCELED."""
    status, info = runtime.http("DELETE", f"/management/trainings?training_id={training_id}")
    assert status == 200, info
    return wait_for_training(runtime, training_id, "CANCELED", timeout)
