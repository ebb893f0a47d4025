"""bootstrap / save / load: identical predictions, atomic saves, no trust in config.yml paths."""

# Standard
import os
import pathlib

# Third Party
import pytest
import yaml

# Local
from caikit_computer_vision.modules.object_detection import TransformersObjectDetector
from example_tools.tiny_yolos import build_tiny_yolos

from .conftest import encode_image, noise_image

IMAGE = encode_image(noise_image(96, 72, seed=11))


def _predictions(module):
    return module.run(IMAGE, threshold=0.0).to_dict()


def _assert_same_predictions(first, second) -> None:
    """Same objects, labels and boxes (to the pixel), scores to 1e-4.

    Not exact float equality: on a GPU, two copies of one model may run differently ordered
    (equally correct) kernels; on a CPU the results are identical anyway.
    """
    first_objects = first["detected_objects"]
    second_objects = second["detected_objects"]
    assert len(first_objects) == len(second_objects)
    for one, other in zip(first_objects, second_objects):
        assert one["label"] == other["label"]
        assert one["score"] == pytest.approx(other["score"], abs=1e-4)
        for edge in ("xmin", "xmax", "ymin", "ymax"):
            assert abs(one["box"][edge] - other["box"][edge]) <= 1, (edge, one, other)


def test_save_then_load_predicts_identically(detector, saved_model_dir):
    loaded = TransformersObjectDetector.load(str(saved_model_dir))
    assert _predictions(loaded) == _predictions(detector)
    config = yaml.safe_load((saved_model_dir / "config.yml").read_text())
    assert config["module_id"] == TransformersObjectDetector.MODULE_ID
    assert config["hf_artifact_path"] == "hf_model"


def test_save_leaves_no_staging_directories(saved_model_dir):
    assert [p.name for p in saved_model_dir.parent.iterdir()] == ["my_model"]


def test_interrupted_save_leaves_no_loadable_partial_model(tmp_path, detector, monkeypatch):
    target = tmp_path / "half_model"

    def fail_half_way(*_args, **_kwargs):
        raise RuntimeError("disk full")

    # The model weights are written; then the processor write fails.
    monkeypatch.setattr(detector.processor, "save_pretrained", fail_half_way)
    with pytest.raises(RuntimeError, match="disk full"):
        detector.save(str(target))
    assert list(tmp_path.iterdir()) == []


def test_failed_save_over_an_existing_model_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "my_model"
    old = TransformersObjectDetector(*build_tiny_yolos(seed=1))
    old.save(str(target))
    new = TransformersObjectDetector(*build_tiny_yolos(seed=2))
    assert _predictions(new) != _predictions(old)

    monkeypatch.setattr(new.processor, "save_pretrained", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        new.save(str(target))
    assert _predictions(TransformersObjectDetector.load(str(target))) == _predictions(old)
    assert [p.name for p in tmp_path.iterdir()] == ["my_model"]


def test_save_over_an_existing_model_is_refused_and_keeps_it(tmp_path):
    target = tmp_path / "my_model"
    old = TransformersObjectDetector(*build_tiny_yolos(seed=1))
    old.save(str(target))
    new = TransformersObjectDetector(*build_tiny_yolos(seed=2))
    with pytest.raises(FileExistsError, match="a model named 'my_model' already exists"):
        new.save(str(target))
    assert _predictions(TransformersObjectDetector.load(str(target))) == _predictions(old)
    assert [p.name for p in tmp_path.iterdir()] == ["my_model"]


def test_save_refuses_even_an_empty_directory_of_that_name(tmp_path, detector):
    (tmp_path / "my_model").mkdir()
    with pytest.raises(FileExistsError, match="never replaced"):
        detector.save(str(tmp_path / "my_model"))
    assert list((tmp_path / "my_model").iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["my_model"]


def _mapped_files() -> set:
    """Paths of the files this process has memory-mapped (Linux's /proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        return {line.split(maxsplit=5)[5].strip() for line in maps if len(line.split()) > 5}


def test_loaded_weights_are_in_memory_not_mapped_from_the_file(tmp_path, detector):
    """A mapped weights file kills the process (SIGBUS) when someone truncates it."""
    target = tmp_path / "v"
    detector.save(str(target))
    weights = target / "hf_model" / "model.safetensors"
    loaded = TransformersObjectDetector.load(str(target))
    assert str(weights) not in _mapped_files()
    os.truncate(weights, 0)
    assert _predictions(loaded) == _predictions(detector)
    weights.unlink()
    assert _predictions(loaded) == _predictions(detector)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "deleted", "bin-only"])
def test_load_of_damaged_weights_is_a_value_error(tmp_path, detector, damage):
    """ValueError is what the runtime answers with NOT_FOUND (anything else: INTERNAL)."""
    target = tmp_path / "v"
    detector.save(str(target))
    weights = target / "hf_model" / "model.safetensors"
    if damage == "truncated":
        os.truncate(weights, weights.stat().st_size // 2)
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 1000)
    elif damage == "deleted":
        weights.unlink()
    else:  # a pickled checkpoint, which torch.load would memory-map
        weights.rename(weights.with_name("pytorch_model.bin"))
    with pytest.raises(ValueError, match="cannot be loaded"):
        TransformersObjectDetector.load(str(target))


def test_bootstrap_from_a_hugging_face_directory(tmp_path, detector):
    detector.model.save_pretrained(tmp_path)
    detector.processor.save_pretrained(tmp_path)
    bootstrapped = TransformersObjectDetector.bootstrap(str(tmp_path))
    _assert_same_predictions(_predictions(bootstrapped), _predictions(detector))


def test_bootstrap_refuses_anything_but_a_local_directory(tmp_path):
    with pytest.raises(ValueError, match="never downloads"):
        TransformersObjectDetector.bootstrap("hustvl/yolos-tiny")


def test_load_refuses_an_artifact_path_outside_the_model(tmp_path, saved_model_dir):
    copy = tmp_path / "model"
    copy.mkdir()
    config = yaml.safe_load((saved_model_dir / "config.yml").read_text())
    config["hf_artifact_path"] = os.path.relpath(saved_model_dir / "hf_model", copy)
    (copy / "config.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="no valid hf_artifact_path"):
        TransformersObjectDetector.load(str(copy))


def test_load_of_a_directory_without_config_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yml"):
        TransformersObjectDetector.load(str(pathlib.Path(tmp_path)))
