"""Training status, cancellation and failures through a real runtime: nothing is ever lost.

Statuses are read over HTTP (/management/trainings, the same servicer as gRPC's
GetTrainingStatus / CancelTraining). The tests that need no settings of their own use the shared
runtime (tests/conftest.py's ``served``); SIGTERM during a training is tested with the client
that started it, in tests/test_end_to_end.py.
"""

# Standard
import hashlib
import pathlib
import signal
import time

# Third Party
import grpc

# Local
from common import HOST
from example_tools.runtime_harness import predict_callable, start_example_runtime, start_runtime
from example_tools.synthetic_data import generate_train_data, render_example

from .served_example import (
    ENDLESS_EPOCHS,
    TRAIN_ROUTE,
    cancel_training,
    start_training,
    train_body,
    wait_for_training,
    wait_until,
)

IMAGE, _ = render_example("dog")


def _digest(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + file.read_bytes())
    return digest.hexdigest()


def _start_endless_training(runtime, model_name: str) -> str:
    """A training that is RUNNING and has logged the loss of its first epoch."""
    first_epoch = f"epoch 1/{ENDLESS_EPOCHS}: loss "
    logged_before = runtime.log().count(first_epoch)
    training_id = start_training(runtime, model_name=model_name, num_epochs=ENDLESS_EPOCHS)
    wait_for_training(runtime, training_id, "RUNNING")
    wait_until(
        lambda: runtime.log().count(first_epoch) > logged_before,
        60,
        f"the first epoch of training {training_id} ({model_name}) in the runtime's log",
    )
    return training_id


def test_cancel_stops_a_running_training_within_seconds(runtime):
    training_id = _start_endless_training(runtime, "cancelled")
    asked = time.monotonic()
    cancel_training(runtime, training_id, timeout=10)
    assert time.monotonic() - asked < 5
    models = runtime.work_dir / "models"
    assert [p.name for p in models.iterdir() if "cancelled" in p.name] == []


def test_second_training_for_a_running_name_is_refused(runtime):
    training_id = start_training(runtime, model_name="busy", num_epochs=ENDLESS_EPOCHS)
    try:
        status, answer = runtime.http("POST", TRAIN_ROUTE, train_body(model_name="busy"))
        assert status == 400
        assert "already running" in answer["details"]
    finally:
        cancel_training(runtime, training_id)


def test_failed_training_reports_its_error_and_keeps_every_model(runtime):
    """The data is valid when the request is accepted and broken before training reads it."""
    work_dir = runtime.work_dir
    labels = generate_train_data(str(work_dir / "train_data" / "big"), num_images=1500)
    last_image = work_dir / "train_data" / "big" / "images" / "01499.jpg"
    base = _digest(work_dir / "models" / "my_model")
    training_id = start_training(
        runtime,
        model_name="doomed",
        img_dir="train_data/big/images",
        labels=str(labels.relative_to(work_dir)),
        num_epochs=1,
    )
    last_image.unlink()
    info = wait_for_training(runtime, training_id, "ERRORED", timeout=60)
    assert "01499.jpg" in " ".join(info["reasons"])
    assert not (work_dir / "models" / "doomed").exists()
    assert _digest(work_dir / "models" / "my_model") == base
    with grpc.insecure_channel(f"{HOST}:{runtime.ports['grpc']}") as channel:
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
        training_id = start_training(runtime, model_name="kept", num_epochs=1)
        wait_for_training(runtime, training_id, "COMPLETED")
        # A status call after the retention purges the record: the training is unknown then...
        status_path = f"/management/trainings?training_id={training_id}"
        wait_until(
            lambda: runtime.http("GET", status_path)[0] == 404,
            30,
            f"training {training_id} forgotten (HTTP 404) after its 2 s retention",
            interval=0.5,
        )
        # ...and its model is still on disk and served.
        assert (runtime.work_dir / "models" / "kept" / "config.yml").is_file()
        with grpc.insecure_channel(f"{HOST}:{runtime.ports['grpc']}") as channel:
            assert predict_callable(channel)(IMAGE, 0.0, model_id="kept").detected_objects
    finally:
        runtime.stop()


def test_sigkill_mid_training_loses_nothing_and_restart_serves_every_model(
    tmp_path, saved_model_dir
):
    runtime = start_example_runtime(tmp_path, saved_model_dir)
    try:
        done = start_training(runtime, model_name="finished", num_epochs=1)
        wait_for_training(runtime, done, "COMPLETED")
        _start_endless_training(runtime, "interrupted")
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
        with grpc.insecure_channel(f"{HOST}:{restarted.ports['grpc']}") as channel:
            predict = predict_callable(channel)
            for model_id in complete:
                assert predict(IMAGE, 0.0, model_id=model_id).detected_objects, model_id
        assert sorted(p.name for p in models.iterdir()) == complete
    finally:
        assert restarted.stop() == 0
