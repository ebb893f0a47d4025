"""TransformersObjectDetector.run on real image bytes: fields, bounds, labels and bad input."""

# Standard
import io
import math

# Third Party
from PIL import Image
import numpy as np
import pytest
import torch

# Local
from caikit_computer_vision.data_model import ObjectDetectionResult
from caikit_computer_vision.duplicates import clip_to_image, keep_best_of_duplicates
from caikit_computer_vision.images import fit_for_processor, pad_to_aspect_ratio

from .conftest import encode_image, noise_image


def _assert_boxes_inside(result: ObjectDetectionResult, width: int, height: int, labels):
    for detected in result.detected_objects:
        box = detected.box
        assert 0 <= box.xmin <= box.xmax <= width, (box, width)
        assert 0 <= box.ymin <= box.ymax <= height, (box, height)
        assert detected.label in labels
        assert 0.0 <= detected.score <= 1.0


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_run_on_non_square_image_bytes(detector, image_format):
    width, height = 200, 90
    result = detector.run(encode_image(noise_image(width, height), image_format), threshold=0.0)
    assert isinstance(result, ObjectDetectionResult)
    # threshold 0 keeps every detection token's best class, less same-label duplicates (the
    # untrained model puts its tokens' boxes nearly on top of each other).
    assert 1 <= len(result.detected_objects) <= detector.model.config.num_detection_tokens
    labels = set(detector.model.config.id2label.values())
    assert labels == {"cat", "dog"}
    _assert_boxes_inside(result, width, height, labels)
    scores = [detected.score for detected in result.detected_objects]
    assert scores == sorted(scores, reverse=True)
    assert result.producer_id.name == "Transformers Object Detector"
    assert result.producer_id.version == "0.1.0"


def test_each_coordinate_lands_in_its_named_field(detector):
    """Upstream filled BoundingBox positionally from (x0, y0, x1, y1), putting ymin into xmax."""
    width, height = 120, 80
    image_bytes = encode_image(noise_image(width, height, seed=3), "PNG")
    result = detector.run(image_bytes, threshold=0.0)

    # Recompute the raw post-processed (x0, y0, x1, y1) boxes straight from the model.
    pil = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    with torch.inference_mode():
        encoded = detector.processor(images=pil, return_tensors="pt")
        # On the model's device (a GPU when there is one), as run() does.
        outputs = detector.model(pixel_values=encoded["pixel_values"].to(detector.device))
    raw = detector.processor.post_process_object_detection(
        outputs, threshold=0.0, target_sizes=[(height, width)]
    )[0]
    # run() clips to the image, then keeps one box of each cluster of same-label overlapping
    # boxes (duplicates.py).
    raw = {key: value.cpu().numpy() for key, value in raw.items()}
    raw["boxes"] = clip_to_image(raw["boxes"], width, height)
    kept = keep_best_of_duplicates(raw["scores"], raw["labels"], raw["boxes"])
    raw = {key: value[kept] for key, value in raw.items()}
    expected = sorted(
        (
            (
                min(max(round(x0), 0), width),
                min(max(round(x1), 0), width),
                min(max(round(y0), 0), height),
                min(max(round(y1), 0), height),
            )
            for x0, y0, x1, y1 in raw["boxes"].tolist()
        )
    )
    got = sorted(
        (d.box.xmin, d.box.xmax, d.box.ymin, d.box.ymax) for d in result.detected_objects
    )
    expected = [box for box in expected if box[1] > box[0] and box[3] > box[2]]
    assert got == expected


def test_labels_are_names_from_the_models_id2label(detector):
    result = detector.run(encode_image(noise_image(64, 64)), threshold=0.0)
    assert {d.label for d in result.detected_objects} <= {"cat", "dog"}
    assert all(not d.label.isdigit() for d in result.detected_objects)


@pytest.mark.parametrize(
    "width, height",
    [(320, 48), (48, 320), (2000, 16), (16, 2000), (1, 1), (3, 700), (64, 64)],
)
def test_any_aspect_ratio_and_size(detector, width, height):
    result = detector.run(encode_image(noise_image(width, height)), threshold=0.0)
    _assert_boxes_inside(result, width, height, {"cat", "dog"})


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(noise_image(50, 30)[:, :, 0], mode="L"),
        Image.fromarray(np.dstack([noise_image(50, 30), np.full((30, 50), 128, np.uint8)])),
        Image.fromarray((np.arange(30 * 50, dtype=np.uint16).reshape(30, 50) * 40)),
        Image.new("P", (50, 30)),
    ],
    ids=["grayscale", "rgba", "16-bit", "palette"],
)
def test_grayscale_rgba_16_bit_and_palette_images(detector, image):
    result = detector.run(_png(image), threshold=0.0)
    _assert_boxes_inside(result, 50, 30, {"cat", "dog"})


def test_in_process_callers_may_pass_a_pil_image_or_array(detector):
    array = noise_image(90, 60)
    from_bytes = detector.run(encode_image(array, "PNG"), threshold=0.0).to_dict()
    assert detector.run(Image.fromarray(array), threshold=0.0).to_dict() == from_bytes
    assert detector.run(array, threshold=0.0).to_dict() == from_bytes


@pytest.mark.parametrize(
    "inputs, message",
    [
        (b"", "inputs is empty"),
        (b"definitely not an image" * 10, "is not a complete image"),
        (encode_image(noise_image(64, 64))[:200], "is not a complete image"),
    ],
    ids=["empty", "random-bytes", "truncated-jpeg"],
)
def test_undecodable_bytes_raise_value_error_saying_what_to_send(detector, inputs, message):
    with pytest.raises(ValueError, match=message) as raised:
        detector.run(inputs)
    assert "JPEG" in str(raised.value)


def test_decompression_bomb_is_refused_before_decoding(detector):
    # A 1-bit 10000x10000 PNG is a few kB on disk but declares 100 million pixels.
    bomb = _png(Image.new("1", (10_000, 10_000)))
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="10000x10000 = 100000000 pixels, over the limit"):
        detector.run(bomb)


@pytest.mark.parametrize("threshold", [math.nan, -1.0, 5.0, 1.0001, math.inf, True, "0.5"])
def test_threshold_outside_0_1_is_refused(detector, threshold):
    with pytest.raises(ValueError, match="threshold must be a number between 0 and 1"):
        detector.run(encode_image(noise_image(32, 32)), threshold=threshold)


def test_pad_to_aspect_ratio_keeps_pixels_in_place():
    image = Image.fromarray(noise_image(320, 48))
    padded = pad_to_aspect_ratio(image, max_aspect_ratio=4.0)
    assert padded.size == (320, 80)
    assert np.array_equal(np.asarray(padded)[:48], np.asarray(image))
    assert pad_to_aspect_ratio(image, max_aspect_ratio=10.0) is image


def test_fit_for_processor_shrinks_only_over_elongated_images():
    ordinary = Image.fromarray(noise_image(120, 80))
    assert fit_for_processor(ordinary, 128, 4.0).image is ordinary
    fitted = fit_for_processor(Image.fromarray(noise_image(4000, 40)), 128, 4.0)
    assert fitted.image.size == (128, 32)  # shrunk to 128x1, then padded to 1:4
    assert fitted.scale_x == 4000 / 128 and fitted.scale_y == 40 / 1


@pytest.mark.parametrize("width, height", [(20_000, 1_000), (1, 100_000)])
def test_very_elongated_images_are_served_in_their_own_coordinates(detector, width, height):
    image = Image.new("L", (width, height), 90)
    result = detector.run(_png(image), threshold=0.0)
    _assert_boxes_inside(result, width, height, {"cat", "dog"})
