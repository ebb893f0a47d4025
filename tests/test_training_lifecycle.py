"""Training status, cancellation and failures through a real runtime: nothing is ever lost.

Statuses are read over HTTP (/management/trainings, the same servicer as gRPC's
GetTrainingStatus / CancelTraining).
"""

# Standard
import hashlib
import pathlib
import signal
import time

# Third Party
import grpc
import pytest

# Local
from example_tools.synthetic_data import generate_train_data, render_example
from example_tools.runtime_harness import predict_callable, start_example_runtime, start_runtime

from .test_runtime_guards import TRAIN_ROUTE, _train_body, _wait_for

IMAGE, _ = render_example("dog")
LONG_TRAINING_EPOCHS = 100_000


def _digest(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + file.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, saved_model_dir):
    runtime = start_example_runtime(tmp_path_factory.mktemp("lifecycle"), saved_model_dir)
    try:
        yield runtime
    finally:
        runtime.stop()


def _start(runtime, **body) -> str:
    status, job = runtime.http("POST", TRAIN_ROUTE, _train_body(**body))
    assert status == 200, job
    return job["training_id"]


def test_cancel_stops_a_running_training_within_seconds(runtime):
    training_id = _start(runtime, model_name="cancelled", num_epochs=LONG_TRAINING_EPOCHS)
    assert _wait_for(runtime, training_id, "RUNNING")["state"] == "RUNNING"
    time.sleep(1.0)  # let it get into its epochs
    asked = time.monotonic()
    status, info = runtime.http("DELETE", f"/management/trainings?training_id={training_id}")
    assert status == 200, info
    info = _wait_for(runtime, training_id, "CANCELED", timeout=10)
    assert info["state"] == "CANCELED"
    assert time.monotonic() - asked < 5
    models = runtime.work_dir / "models"
    assert not (models / "cancelled").exists()
    assert [p.name for p in models.iterdir()] == ["my_model"]


def test_second_training_for_a_running_name_is_refused(runtime):
    training_id = _start(runtime, model_name="busy", num_epochs=LONG_TRAINING_EPOCHS)
    try:
        status, answer = runtime.http("POST", TRAIN_ROUTE, _train_body(model_name="busy"))
        assert status == 400
        assert "already running" in answer["details"]
    finally:
        runtime.http("DELETE", f"/management/trainings?training_id={training_id}")
        _wait_for(runtime, training_id, "CANCELED", timeout=10)


def test_failed_training_reports_its_error_and_keeps_every_model(runtime):
    """The data is valid when the request is accepted and broken before training reads it."""
    work_dir = runtime.work_dir
    labels = generate_train_data(str(work_dir / "train_data" / "big"), num_images=1500)
    last_image = work_dir / "train_data" / "big" / "images" / "01499.jpg"
    base = _digest(work_dir / "models" / "my_model")
    training_id = _start(
        runtime,
        model_name="doomed",
        img_dir="train_data/big/images",
        labels=str(labels.relative_to(work_dir)),
        num_epochs=1,
    )
    last_image.unlink()
    info = _wait_for(runtime, training_id, "ERRORED", timeout=60)
    assert info["state"] == "ERRORED"
    assert "01499.jpg" in " ".join(info["reasons"])
    assert not (work_dir / "models" / "doomed").exists()
    assert _digest(work_dir / "models" / "my_model") == base
    with grpc.insecure_channel(f"127.0.0.1:{runtime.ports['grpc']}") as channel:
        assert predict_callable(channel)(IMAGE, 0.0).detected_objects


def test_a_forgotten_training_keeps_the_model_it_saved(tmp_path, saved_model_dir):
    # caikit forgets a finished training after the trainer's retention_duration (a day by
    # default) and, left alone, deletes its save path, models/<model_name>, with it.
    runtime = start_example_runtime(
        tmp_path,
        saved_model_dir,
        extra_env={"MODEL_MANAGEMENT_TRAINERS_DEFAULT_CONFIG_RETENTION_DURATION": "2s"},
    )
    try:
        training_id = _start(runtime, model_name="kept", num_epochs=1)
        assert _wait_for(runtime, training_id, "COMPLETED")["state"] == "COMPLETED"
        time.sleep(3.0)
        # The next status call purges the record: the training is unknown now...
        status, _ = runtime.http("GET", f"/management/trainings?training_id={training_id}")
        assert status == 404
        # ...and its model is still on disk and served.
        assert (runtime.work_dir / "models" / "kept" / "config.yml").is_file()
        with grpc.insecure_channel(f"127.0.0.1:{runtime.ports['grpc']}") as channel:
            assert predict_callable(channel)(IMAGE, 0.0, model_id="kept").detected_objects
    finally:
        runtime.stop()


def test_sigkill_mid_training_loses_nothing_and_restart_serves_every_model(
    tmp_path, saved_model_dir
):
    runtime = start_example_runtime(tmp_path, saved_model_dir)
    try:
        done = _start(runtime, model_name="finished", num_epochs=1)
        assert _wait_for(runtime, done, "COMPLETED")["state"] == "COMPLETED"
        killed = _start(runtime, model_name="interrupted", num_epochs=LONG_TRAINING_EPOCHS)
        _wait_for(runtime, killed, "RUNNING")
        time.sleep(1.0)
        runtime.process.send_signal(signal.SIGKILL)
        runtime.process.wait(timeout=30)
    finally:
        runtime.stop()

    models = tmp_path / "models"
    complete = sorted(p.name for p in models.iterdir() if (p / "config.yml").is_file())
    assert complete == ["finished", "my_model"]
    assert not (models / "interrupted").exists()

    restarted = start_runtime(tmp_path, [])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{restarted.ports['grpc']}") as channel:
            predict = predict_callable(channel)
            for model_id in complete:
                assert predict(IMAGE, 0.0, model_id=model_id).detected_objects, model_id
        assert sorted(p.name for p in models.iterdir()) == complete
    finally:
        assert restarted.stop() == 0


def test_sigterm_during_training_cancels_it_and_exits_0(tmp_path, saved_model_dir):
    runtime = start_example_runtime(tmp_path, saved_model_dir)
    try:
        training_id = _start(runtime, model_name="unfinished", num_epochs=LONG_TRAINING_EPOCHS)
        _wait_for(runtime, training_id, "RUNNING")
        time.sleep(1.0)
        runtime.process.send_signal(signal.SIGTERM)
        assert runtime.process.wait(timeout=30) == 0
    finally:
        runtime.stop()
    assert "1 running trainings cancelled" in runtime.log()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["my_model"]
