"""Pixel values by one resize and a table lookup (caikit_computer_vision/pixel_table.py).

What serving relies on: for every image size, the table path gives the processor's pixel values
bit for bit (so no answer changes); processor settings it does not reproduce, or a table that
differs from the processor on the check images, leave the processor doing the work.
"""

# Third Party
from PIL import Image
from transformers.models.yolos.image_processing_pil_yolos import YolosImageProcessorPil
import numpy as np
import pytest
import torch

# Local
from caikit_computer_vision import pixel_table
from caikit_computer_vision.detection import Detector
from caikit_computer_vision.images import fit_for_processor
from caikit_computer_vision.pixel_table import PixelTable
from example_tools.tiny_yolos import ARCHITECTURES, build_tiny_yolos

from .conftest import encode_image, noise_image


def _processor(architecture: str) -> YolosImageProcessorPil:
    arch = ARCHITECTURES[architecture]
    return YolosImageProcessorPil(
        size={"shortest_edge": arch.shortest_edge, "longest_edge": arch.longest_edge}
    )


def _by_processor(processor, image: Image.Image) -> torch.Tensor:
    return processor(images=image, return_tensors="pt")["pixel_values"]


def _fitted(processor, width: int, height: int, seed: int) -> Image.Image:
    """A noise image of that size as ``Detector.prepare`` hands it to the processor."""
    image = Image.fromarray(noise_image(width, height, seed=seed), mode="RGB")
    fitting = Detector.__new__(Detector)  # only the processor's limits are read
    fitting.processor = processor
    return fit_for_processor(image, fitting.longest_edge, fitting.max_aspect_ratio).image


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_the_table_gives_the_processors_pixel_values_bit_for_bit(architecture):
    processor = _processor(architecture)
    table = PixelTable(processor)
    assert table.reason is None
    sizes = np.random.default_rng(7).integers(8, 1400, size=(40, 2))
    shapes = set()
    for seed, (width, height) in enumerate(sizes):
        image = _fitted(processor, int(width), int(height), seed)
        expected, got = _by_processor(processor, image), table(image)
        assert got.dtype == expected.dtype == torch.float32
        assert got.shape == expected.shape, (width, height)
        assert torch.equal(got, expected), (width, height)
        shapes.add(tuple(got.shape))
    assert len(shapes) >= 10  # many resize outcomes, not one shape over and over


def test_a_processor_read_from_a_saved_model_takes_the_table_with_the_same_answers(tmp_path):
    """The runtime's processors come from preprocessor_config.json, YOLOS' defaults included."""
    for name, processor in {"demo": _processor("tiny"), "default": YolosImageProcessorPil()}.items():
        processor.save_pretrained(tmp_path / name)
        loaded = YolosImageProcessorPil.from_pretrained(tmp_path / name, local_files_only=True)
        table = PixelTable(loaded)
        assert table.reason is None, name
        image = _fitted(loaded, 333, 250, seed=1)
        assert torch.equal(table(image), _by_processor(loaded, image)), name


def test_settings_the_table_does_not_reproduce_leave_the_processor_working():
    processor = YolosImageProcessorPil(size={"height": 48, "width": 64})
    table = PixelTable(processor)
    assert table.reason == "the processor does not resize by shortest and longest edge"
    image = Image.fromarray(noise_image(100, 70), mode="RGB")
    assert torch.equal(table(image), _by_processor(processor, image))


def test_a_table_that_differs_from_the_processor_is_not_used(monkeypatch):
    real = pixel_table._value_table
    monkeypatch.setattr(pixel_table, "_value_table", lambda processor: real(processor) + 1e-6)
    processor = _processor("tiny")
    table = PixelTable(processor)
    assert table.reason == "a 64x64 image's pixel values differed from the processor's"
    image = _fitted(processor, 90, 70, seed=3)
    assert torch.equal(table(image), _by_processor(processor, image))


def test_a_resize_rule_that_differs_from_the_processor_is_not_used(monkeypatch):
    monkeypatch.setattr(
        pixel_table, "get_size_with_aspect_ratio_yolos", lambda size, short, long: (32, 48)
    )
    table = PixelTable(_processor("tiny"))
    assert table.reason.startswith("a 64x64 image gave (1, 3, 32, 48) torch.float32")


def test_the_served_module_takes_the_table(detector):
    assert detector.detector.pixel_table_refusal is None


def test_prepare_with_the_table_equals_prepare_with_the_processor_on_real_jpeg_bytes():
    model, processor = build_tiny_yolos()
    fast = Detector(model, processor, torch.device("cpu"), pixel_table=True)
    plain = Detector(model, processor, torch.device("cpu"))
    assert fast.pixel_table_refusal is None and plain.pixel_table_refusal is None
    for seed, (width, height) in enumerate([(640, 480), (64, 64), (17, 300), (1000, 40)]):
        data = encode_image(noise_image(width, height, seed=seed))
        mine, theirs = fast.prepare(data), plain.prepare(data)
        assert torch.equal(mine.pixel_values, theirs.pixel_values), (width, height)
        assert fast.detect([data], 0.0) == plain.detect([data], 0.0)
