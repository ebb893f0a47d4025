"""The example as a newcomer runs it: launcher --purge_dirs, then the train-and-inference client.

Everything happens in a temporary directory on free loopback ports; the runtime is stopped by
its process id even when a test fails.
"""

# Standard
import base64
import pathlib
import subprocess
import sys

# Third Party
from PIL import Image
import pytest

# Local
from example_tools.runtime_harness import CLIENT, start_runtime
import common

from .served_example import client_training, wait_until

CLIENT_EPOCHS = "10"
ANNOTATED_IMAGE = "annotated.png"


def run_client(runtime, *args: str) -> subprocess.CompletedProcess:
    """Run run_train_and_inference.py against ``runtime`` from its working directory."""
    return subprocess.run(
        [sys.executable, str(CLIENT), *args],
        cwd=runtime.work_dir,
        env=runtime.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("example")
    runtime = start_runtime(work_dir, ["--purge_dirs"])
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def client_run(runtime):
    return run_client(
        runtime, "--num-epochs", CLIENT_EPOCHS, "--threshold", "0.0",
        "--save-annotated", ANNOTATED_IMAGE,
    )


def test_purge_dirs_creates_model_data_and_protos(runtime):
    work_dir: pathlib.Path = runtime.work_dir
    assert (work_dir / "models" / "my_model" / "config.yml").is_file()
    assert (work_dir / "train_data" / "labels.txt").is_file()
    assert len(list((work_dir / "train_data" / "images").glob("*.jpg"))) == common.NUM_TRAIN_IMAGES
    assert (work_dir / "train_data" / "query.jpg").is_file()
    assert (work_dir / "protos" / "ccv.objectdetectiontaskrequest.proto").is_file()
    assert (work_dir / "protos" / "openapi.json").is_file()
    # The start-up ends with what is served where (printed once the ports are the runtime's).
    wait_until(lambda: "Stop: Ctrl-C" in runtime.log(), 30, "the launcher's start-up summary")
    assert f"gRPC     {common.HOST}:{runtime.ports['grpc']}" in runtime.log()


def test_client_trains_and_predicts_with_the_new_model(runtime, client_run):
    assert client_run.returncode == 0, client_run.stdout + client_run.stderr
    out = client_run.stdout
    assert "Compiling" in out and "(no compiled stubs" in out
    assert "COMPLETED" in out
    assert "First prediction from 'new_model'" in out
    assert "label         score" in out
    assert (runtime.work_dir / "generated" / "computervisionservice_pb2_grpc.py").is_file()


def test_client_saves_the_query_image_with_the_boxes_drawn(runtime, client_run):
    assert f"Saved {ANNOTATED_IMAGE} with " in client_run.stdout
    assert " predicted and 1 expected boxes drawn" in client_run.stdout
    with Image.open(runtime.work_dir / ANNOTATED_IMAGE) as annotated:
        assert annotated.format == "PNG"
        # The 64 x 64 query image, enlarged to be read, over a legend (expected, predicted).
        assert annotated.width == 256 and annotated.height > 256


def test_client_points_to_the_training_loss_in_the_runtime_log(runtime, client_run):
    assert "each epoch's loss is in the runtime's log" in client_run.stdout
    assert f"epoch {CLIENT_EPOCHS}/{CLIENT_EPOCHS}: loss " in runtime.log()


def test_new_model_is_on_disk_and_differs_from_the_base(runtime, client_run):
    models = runtime.work_dir / "models"
    new_weights = models / "new_model" / "hf_model" / "model.safetensors"
    assert (models / "new_model" / "config.yml").is_file()
    assert new_weights.read_bytes() != (models / "my_model" / "hf_model" / "model.safetensors").read_bytes()


def test_prediction_has_the_expected_fields(runtime, client_run):
    image = (runtime.work_dir / "train_data" / "query.jpg").read_bytes()
    result = runtime.http_json(
        "/api/v1/task/object-detection",
        {
            "model_id": "new_model",
            "inputs": base64.b64encode(image).decode(),
            "parameters": {"threshold": 0.0},
        },
    )
    assert result["producer_id"]["name"] == "Transformers Object Detector"
    assert result["detected_objects"]
    for detected in result["detected_objects"]:
        assert detected["label"] in ("cat", "dog")
        assert 0.0 <= detected["score"] <= 1.0
        box = detected["box"]
        assert 0 <= box["xmin"] <= box["xmax"] <= 64
        assert 0 <= box["ymin"] <= box["ymax"] <= 64


def test_second_client_run_reuses_the_compiled_stubs(runtime, client_run):
    again = run_client(runtime, "--num-epochs", "1", "--model-id", "another_model")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Compiling" not in again.stdout
    assert (runtime.work_dir / "models" / "another_model" / "config.yml").is_file()


def test_client_reports_a_refused_training_and_exits_1(runtime, client_run):
    failed = run_client(runtime, "--base-model", "no_such_model", "--model-id", "broken")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Train request refused (INVALID_ARGUMENT)" in failed.stdout
    assert "models/no_such_model is not a saved model directory" in failed.stdout
    assert not (runtime.work_dir / "models" / "broken").exists()


def test_client_without_protos_says_how_to_get_them(tmp_path):
    failed = subprocess.run(
        [sys.executable, str(CLIENT)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        f"no .proto files in {tmp_path / 'protos'}: start the runtime with "
        "'python3 launch_vision_runtime.py --purge_dirs' or run 'python3 dump_protos.py'"
    ]


def test_sigterm_mid_training_stops_the_runtime_and_the_client_says_so(runtime, client_run):
    with client_training(runtime.work_dir, runtime.env) as client:
        assert runtime.stop() == 0, runtime.log()
        assert "runtime stopped (1 running trainings cancelled)" in runtime.log()
        _, stderr = client.communicate(timeout=60)
    assert client.returncode == 1
    # A status poll sent after the runtime stopped finds no server (UNAVAILABLE); one in flight
    # at the moment of the stop is cancelled by the server's shutdown (CANCELLED). Which of the
    # two the client meets depends on where its poll interval falls, so both are right.
    (line,) = stderr.strip().splitlines()
    assert line in [
        f"The runtime on {common.HOST}:{runtime.ports['grpc']} stopped answering during the "
        f"training ({code}): start it again; a training it did not finish saved nothing"
        for code in ("UNAVAILABLE", "CANCELLED")
    ]
    assert not (runtime.work_dir / "models" / "interrupted").exists()
