"""A model directory is checked before any model is built from it: its config, its weights'
header and its links. A refused directory costs no memory, its answer names no server path,
and it is remembered until the directory changes (caikit asks three times per request).
"""

# Standard
from concurrent.futures import ThreadPoolExecutor
import json
import os
import pathlib
import shutil
import time

# Third Party
from transformers import YolosConfig, YolosForObjectDetection
import grpc
import pytest
import torch

# Local
from caikit_computer_vision.model_dir_check import check_model_dir
from caikit_computer_vision.modules.object_detection import TransformersObjectDetector
from caikit_computer_vision.modules.object_detection import transformers as detector_module
from example_tools.load_generator import read_rss_kib

from .conftest import encode_image, noise_image

IMAGE = encode_image(noise_image(96, 72, seed=11))
MIB = 1024
# What repeated refusals may add to a process's RSS (allocator noise); a failed load of the
# demo's broken directories added 2 GB per request (a default-size YOLOS three times).
RSS_BOUND_KIB = 64 * MIB


def _copy_model(saved_model_dir: pathlib.Path, parent: pathlib.Path, name: str) -> pathlib.Path:
    target = parent / "models" / name
    shutil.copytree(saved_model_dir, target)
    return target


def _refusal(model_dir: pathlib.Path) -> str:
    """The message of the ValueError (NOT_FOUND in the runtime) that loading ``model_dir`` raises;
    it never names the server's directories."""
    with pytest.raises(ValueError) as refused:
        TransformersObjectDetector.load(str(model_dir))
    message = str(refused.value)
    assert f"model {model_dir.name!r} cannot be loaded: " in message
    assert str(model_dir.parent) not in message
    assert os.path.realpath(model_dir.parent) not in message
    return message


def _make_config_bigger(hf_dir: pathlib.Path) -> None:
    """config.json of the yolos-tiny sizes over the demo model's weights."""
    config = json.loads((hf_dir / "config.json").read_text())
    config.update(
        hidden_size=192, intermediate_size=768, num_hidden_layers=12, num_attention_heads=3
    )
    (hf_dir / "config.json").write_text(json.dumps(config))


def test_a_good_model_passes_the_checks_and_loads(tmp_path, saved_model_dir, detector):
    model_dir = _copy_model(saved_model_dir, tmp_path, "good")
    # A link that stays inside the model directory is fine.
    blobs = model_dir / "blobs"
    blobs.mkdir()
    weights = model_dir / "hf_model" / "model.safetensors"
    weights.rename(blobs / "weights")
    weights.symlink_to(os.path.relpath(blobs / "weights", weights.parent))

    assert check_model_dir(str(model_dir), "hf_model", YolosForObjectDetection) is None
    loaded = TransformersObjectDetector.load(str(model_dir)).model.state_dict()
    saved = detector.model.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[name].cpu(), saved[name].cpu()) for name in saved)


def test_a_missing_config_is_refused_without_building_a_model(
    tmp_path, saved_model_dir, monkeypatch
):
    model_dir = _copy_model(saved_model_dir, tmp_path, "no_config")
    (model_dir / "hf_model" / "config.json").unlink()
    built = []
    monkeypatch.setattr(YolosForObjectDetection, "__init__", lambda *args: built.append(args))
    assert _refusal(model_dir).endswith("hf_model/config.json is missing")
    assert built == []  # transformers used to build a default-size YOLOS (100M parameters)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, saved_model_dir):
    model_dir = _copy_model(saved_model_dir, tmp_path, "bigger_config")
    _make_config_bigger(model_dir / "hf_model")
    message = _refusal(model_dir)
    assert "hf_model/model.safetensors does not fit hf_model/config.json" in message
    assert "is [32] in the weights, [192] for the config" in message


def test_truncated_weights_are_refused_with_their_sizes(tmp_path, saved_model_dir):
    model_dir = _copy_model(saved_model_dir, tmp_path, "truncated")
    weights = model_dir / "hf_model" / "model.safetensors"
    full_size = weights.stat().st_size
    os.truncate(weights, full_size // 2)
    assert _refusal(model_dir).endswith(
        f"hf_model/model.safetensors is truncated: {full_size // 2} bytes, "
        f"its header describes {full_size}"
    )


@pytest.mark.parametrize(
    "linked", ["hf_model", "hf_model/model.safetensors", "hf_model/config.json"]
)
def test_a_link_out_of_the_model_directory_is_refused(tmp_path, saved_model_dir, linked):
    """The linked copy is a good model: served before, it would have been read from outside."""
    model_dir = _copy_model(saved_model_dir, tmp_path, "linked")
    outside = tmp_path / "outside" / "copy"
    outside.parent.mkdir()
    (model_dir / linked).rename(outside)
    (model_dir / linked).symlink_to(outside)
    assert _refusal(model_dir).endswith(
        f"{linked} is a link that leads outside the model directory"
    )


def test_a_failed_load_is_remembered_until_the_directory_changes(
    tmp_path, saved_model_dir, monkeypatch
):
    model_dir = _copy_model(saved_model_dir, tmp_path, "fixed_later")
    config = model_dir / "hf_model" / "config.json"
    kept = config.read_bytes()
    config.unlink()
    checks = []
    real_check = detector_module.check_model_dir
    monkeypatch.setattr(
        detector_module,
        "check_model_dir",
        lambda *args: checks.append(args) or real_check(*args),
    )
    first = _refusal(model_dir)
    assert _refusal(model_dir) == first
    assert len(checks) == 1

    config.write_bytes(kept)
    TransformersObjectDetector.load(str(model_dir))
    assert len(checks) == 2


def test_a_failure_the_checks_do_not_foresee_returns_its_memory(
    tmp_path, saved_model_dir, monkeypatch
):
    """As a missing config.json did: a model far bigger than the files built, then the load
    fails. Loads run in a thread pool and failures are kept, as caikit keeps failed futures."""
    model_dir = _copy_model(saved_model_dir, tmp_path, "fails_late")

    def build_then_fail(*args, **kwargs):
        # A third of the default-size YOLOS that a missing config.json made: about 130 MB.
        model = YolosForObjectDetection(YolosConfig(num_hidden_layers=4))
        raise RuntimeError(f"size mismatch in a model of {model.num_parameters()} parameters")

    def failed_load(attempt: int) -> Exception:
        (model_dir / "changed").write_text(str(attempt))  # not the remembered answer
        with pytest.raises(ValueError, match="size mismatch") as refused:
            TransformersObjectDetector.load(str(model_dir))
        return refused.value

    monkeypatch.setattr(YolosForObjectDetection, "from_pretrained", build_then_fail)
    rss, failures = [], []
    with ThreadPoolExecutor(max_workers=1) as loader:
        for attempt in range(3):
            failures.append(loader.submit(failed_load, attempt).result())
            rss.append(read_rss_kib(os.getpid()))
    assert rss[-1] - rss[0] < RSS_BOUND_KIB, rss


# -- through a real runtime -----------------------------------------------------------------------

# Each model id of the runtime test, how its copy of my_model is broken, and the end of its answer.
BROKEN_MODELS = {
    "no_config": "hf_model/config.json is missing",
    "bigger_config": "does not fit hf_model/config.json",
    "half_weights": "hf_model/model.safetensors is truncated",
    "linked_hf_model": "hf_model is a link that leads outside the model directory",
    "linked_weights": "hf_model/model.safetensors is a link that leads outside the model directory",
    "linked_config_yml": "config.yml is a link that leads outside the model directory",
}
LINKED = {
    "linked_hf_model": "hf_model",
    "linked_weights": "hf_model/model.safetensors",
    "linked_config_yml": "config.yml",
}


def _break(model_dir: pathlib.Path, outside: pathlib.Path) -> None:
    name = model_dir.name
    hf_dir = model_dir / "hf_model"
    if name == "no_config":
        (hf_dir / "config.json").unlink()
    elif name == "bigger_config":
        _make_config_bigger(hf_dir)
    elif name == "half_weights":
        weights = hf_dir / "model.safetensors"
        os.truncate(weights, weights.stat().st_size // 2)
    else:
        linked = model_dir / LINKED[name]
        linked.rename(outside / name)
        linked.symlink_to(outside / name)


def _predict_status(predict, model_id: str):
    """(status code, details) of one predict; a refusal must come within the deadline."""
    try:
        predict(IMAGE, 0.0, model_id=model_id, timeout=20)
    except grpc.RpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, ""


def test_broken_model_directories_are_refused_quickly_and_cost_no_memory(
    runtime, predict, tmp_path
):
    models = runtime.work_dir / "models"
    outside = tmp_path / "outside"
    outside.mkdir()
    # Broken beside models/, then published whole, as an operator's mv would.
    for model_id in BROKEN_MODELS:
        staged = tmp_path / model_id
        shutil.copytree(models / "my_model", staged)
        _break(staged, outside)
        staged.rename(models / model_id)
    try:
        rss = []
        started = time.monotonic()
        for _ in range(4):
            for model_id, problem in BROKEN_MODELS.items():
                status, details = _predict_status(predict, model_id)
                assert status == grpc.StatusCode.NOT_FOUND, (model_id, status, details)
                assert f"model {model_id!r} cannot be loaded: " in details
                assert problem in details, details
                assert str(runtime.work_dir) not in details and str(tmp_path) not in details
            rss.append(read_rss_kib(runtime.process.pid))
        # 24 refusals, each from the files' headers or remembered: no model is built.
        assert time.monotonic() - started < 60
        assert rss[-1] - rss[0] < RSS_BOUND_KIB, rss
        assert _predict_status(predict, "my_model")[0] == grpc.StatusCode.OK

        # A repaired directory is read at the next request: what was remembered was of its old
        # files.
        config = "hf_model/config.json"
        shutil.copyfile(models / "my_model" / config, models / "no_config" / config)
        assert _predict_status(predict, "no_config")[0] == grpc.StatusCode.OK
        assert runtime.process.poll() is None
    finally:
        # The runtime is shared with other test modules: the poller unloads what is removed.
        for model_id in BROKEN_MODELS:
            shutil.rmtree(models / model_id)
