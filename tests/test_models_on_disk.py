"""Models on disk, through real runtimes: what an operator does to models/ never kills the runtime,
and a save never replaces a model, even with two runtimes on one models/ directory.
"""

# Standard
import os
import pathlib
import shutil

# Third Party
import grpc
import pytest

# Local
from example_tools.runtime_harness import predict_callable, start_runtime
import common
from example_tools.synthetic_data import generate_train_data, render_example

from .served_example import TRAIN_ROUTE, train_body, wait_for_training, wait_until

IMAGE, _ = render_example("dog")


def _status(predict, model_id: str):
    """(status code, result or None) of one predict on ``model_id``."""
    try:
        return grpc.StatusCode.OK, predict(IMAGE, 0.0, model_id=model_id)
    except grpc.RpcError as err:
        return err.code(), None


def _damage(weights: pathlib.Path, how: str) -> None:
    if how == "truncated":
        os.truncate(weights, 0)  # as `truncate -s 0`
    elif how == "smaller-file-copied-over":
        # As `cp`: the same file (inode) is truncated, then written with fewer bytes.
        shutil.copyfile(weights.parent / "config.json", weights)
    else:
        weights.unlink()


@pytest.mark.parametrize("how", ["truncated", "smaller-file-copied-over", "deleted"])
def test_damaging_a_served_models_files_never_kills_the_runtime(runtime, predict, how):
    models = runtime.work_dir / "models"
    model_id = f"v_{how.replace('-', '_')}"
    shutil.copytree(models / "my_model", models / model_id)
    status, before = _status(predict, model_id)
    assert status == grpc.StatusCode.OK

    weights = models / model_id / "hf_model" / "model.safetensors"
    _damage(weights, how)

    # Still answers from memory, as before: the files are read only when a model loads.
    status, after = _status(predict, model_id)
    assert runtime.process.poll() is None, f"runtime died ({runtime.process.returncode})"
    assert status == grpc.StatusCode.OK
    assert after == before
    assert _status(predict, "my_model")[0] == grpc.StatusCode.OK

    # The next load of the damaged files refuses them.
    shutil.copytree(models / model_id, models / f"{model_id}_again")
    assert _status(predict, f"{model_id}_again")[0] == grpc.StatusCode.NOT_FOUND
    assert runtime.process.poll() is None
    assert _status(predict, "my_model")[0] == grpc.StatusCode.OK


def test_a_deleted_model_directory_is_unloaded_and_others_keep_serving(runtime, predict):
    models = runtime.work_dir / "models"
    shutil.copytree(models / "my_model", models / "v_removed")
    assert _status(predict, "v_removed")[0] == grpc.StatusCode.OK
    shutil.rmtree(models / "v_removed")
    wait_until(  # the poller looks every second
        lambda: _status(predict, "v_removed")[0] != grpc.StatusCode.OK,
        15,
        "v_removed unloaded after its directory was deleted",
        interval=0.5,
    )
    assert _status(predict, "v_removed")[0] == grpc.StatusCode.NOT_FOUND
    assert _status(predict, "my_model")[0] == grpc.StatusCode.OK


@pytest.fixture(scope="module")
def second_runtime(runtime, tmp_path_factory):
    """Another runtime, in its own working directory, whose models/ is the first one's."""
    work_dir = tmp_path_factory.mktemp("second")
    (work_dir / "models").symlink_to(runtime.work_dir / "models", target_is_directory=True)
    generate_train_data(str(work_dir / "train_data"), num_images=common.PREPARED_TRAIN_IMAGES)
    second = start_runtime(work_dir, [])
    try:
        yield second
    finally:
        second.stop()


def test_two_runtimes_saving_one_name_keep_the_first_model(runtime, second_runtime):
    models = runtime.work_dir / "models"
    # Both accept the name: neither has saved it yet when the other is asked (the first
    # training lasts longer than the second request's check of the whole training set).
    jobs = {}
    for served in (runtime, second_runtime):
        status, job = served.http("POST", TRAIN_ROUTE, train_body(model_name="raced", num_epochs=40))
        assert status == 200, job
        jobs[served.ports["grpc"]] = (served, job["training_id"])
    infos = {port: wait_for_training(served, tid) for port, (served, tid) in jobs.items()}
    states = sorted(info["state"] for info in infos.values())
    assert states == ["COMPLETED", "ERRORED"], infos

    errored = next(info for info in infos.values() if info["state"] == "ERRORED")
    reasons = " ".join(errored["reasons"])
    assert "a model named 'raced' already exists" in reasons, reasons
    assert str(models) not in reasons  # the name the client sent, not the server's paths

    # One whole model, no staging directory left behind, served by both runtimes.
    assert [p.name for p in models.iterdir() if p.name.startswith(".")] == []
    assert (models / "raced" / "config.yml").is_file()
    for served, _ in jobs.values():
        with grpc.insecure_channel(f"{common.HOST}:{served.ports['grpc']}") as channel:
            assert predict_callable(channel)(IMAGE, 0.0, model_id="raced").detected_objects
