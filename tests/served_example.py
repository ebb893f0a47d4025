"""A served example runtime for the tests that send it bad and odd predict requests.

One runtime per test module (a start takes seconds); the gRPC predict call is the hand-encoded
one of the runtime harness, and results are checked the same way whatever the test sent.
"""

# Standard
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple
import pathlib
import subprocess
import sys

# Third Party
import grpc
import yaml

# Local
from caikit_computer_vision.defaults import DEFAULT_LABELS
from example_tools.runtime_harness import (
    CLIENT,
    predict_callable,
    RuntimeProcess,
    start_example_runtime,
)
import common

from .conftest import encode_image, noise_image

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
        with grpc.insecure_channel(f"127.0.0.1:{runtime.ports['grpc']}") as channel:
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
        assert detected.label in DEFAULT_LABELS, detected.label
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
        [sys.executable, str(CLIENT), "--num-epochs", "100000", "--model-id", model_id],
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
