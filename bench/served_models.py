"""Models saved for a benchmark, and the example runtime serving them on free loopback ports.

The runtime is the real one (launch_vision_runtime.py through example_tools.runtime_harness), in
a working directory laid out like the example's: ``models/<id>`` and ``train_data/``.
"""

# Standard
from contextlib import contextmanager
from typing import Dict, Iterator, Mapping, Optional
import base64
import http.client
import json
import pathlib
import shutil

# Third Party
import grpc

# Local
from example_tools.demo_assets import create_base_model
from caikit_computer_vision.modules.object_detection import TransformersObjectDetector
from example_tools.runtime_harness import (
    predict_callable,
    prepare_work_dir,
    RuntimeProcess,
    start_runtime,
)
import common

# The demo model's id and architecture; other benchmarks add more models beside it.
DEMO_MODEL_ID = common.BASE_MODEL_ID
# A model of hustvl/yolos-tiny's size (6.5 M parameters, 512 px and more): realistic compute.
YOLOS_TINY_MODEL_ID = "yolos_tiny"
ARCHITECTURE_OF = {DEMO_MODEL_ID: "tiny", YOLOS_TINY_MODEL_ID: "yolos-tiny"}

HTTP_PREDICT_PATH = "/api/v1/task/object-detection"


def save_models(
    directory: pathlib.Path, model_ids: Mapping[str, str]
) -> Dict[str, TransformersObjectDetector]:
    """Build and save ``{model id: architecture}`` into ``directory/<id>``; return the modules.

    This process is configured like the runtime first (runtime_config.yaml), so the modules
    returned run in-process with the runtime's settings, torch's threads included.
    """
    common.configure_caikit()
    return {
        model_id: create_base_model(pathlib.Path(directory) / model_id, architecture)
        for model_id, architecture in model_ids.items()
    }


@contextmanager
def serving(
    work_dir: pathlib.Path,
    saved_models_dir: pathlib.Path,
    extra_env: Optional[Dict[str, str]] = None,
) -> Iterator[RuntimeProcess]:
    """The example runtime in ``work_dir`` serving a copy of every model in ``saved_models_dir``.

    ``saved_models_dir`` must hold ``my_model``; ``extra_env`` are caikit config overrides.
    The runtime is stopped (SIGTERM, by its process id) on exit.
    """
    prepare_work_dir(work_dir, pathlib.Path(saved_models_dir) / DEMO_MODEL_ID)
    for model_dir in pathlib.Path(saved_models_dir).iterdir():
        if model_dir.name != DEMO_MODEL_ID:
            shutil.copytree(model_dir, work_dir / "models" / model_dir.name)
    runtime = start_runtime(work_dir, [], extra_env=extra_env)
    try:
        yield runtime
    finally:
        runtime.stop()


@contextmanager
def grpc_predict(port: int) -> Iterator:
    """grpc_wire's predict(inputs, threshold, model_id=...) over one loopback channel."""
    with grpc.insecure_channel(f"{common.HOST}:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield predict_callable(channel)


class HttpPredict:
    """POST the HTTP predict route over one kept-alive connection, as a JSON client would."""

    def __init__(self, port: int):
        self._connection = http.client.HTTPConnection(common.HOST, port, timeout=60)

    def __call__(self, inputs: bytes, model_id: str = DEMO_MODEL_ID) -> dict:
        body = json.dumps({"model_id": model_id, "inputs": base64.b64encode(inputs).decode()})
        self._connection.request(
            "POST", HTTP_PREDICT_PATH, body, {"Content-Type": "application/json"}
        )
        response = self._connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP predict answered {response.status}: {payload[:500]!r}")
        return json.loads(payload)

    def close(self) -> None:
        self._connection.close()
