"""Predict over gRPC with every kind of bad and odd input: the right status, a live server.

A bad input gets INVALID_ARGUMENT with a message that says what to fix (or RESOURCE_EXHAUSTED
for a message over the configured size), never INTERNAL; an odd but valid image gets a result.
The shared runtime of tests/conftest.py (``served``) serves the whole module.
"""

# Standard
from dataclasses import dataclass
from typing import Callable, Optional, Tuple
import io
import math

# Third Party
from PIL import Image
import grpc
import numpy as np
import pytest

# Local
from caikit_computer_vision.defaults import MAX_IMAGE_PIXELS
from example_tools.hostile_images import png_chunk

from .conftest import encode_image, noise_image
from .image_files import blank_png, ico_png_bomb
from .served_example import (
    MAX_MESSAGE_BYTES,
    assert_serves_normally,
    assert_well_formed,
    predict_status,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
WHAT_TO_SEND = "send the bytes of a JPEG, PNG"

# Declared sizes of the images that must be refused from their header.
BOMB_SIDE = 20_000  # 400 MP: over Pillow's own limit too
OVER_LIMIT_SIZE = (6400, MAX_IMAGE_PIXELS // 6400 + 1)  # just over our limit, under Pillow's
# 1 MP, but padded at full size to the demo model's aspect ratio limit (1:4) it would be
# 250 000 MP: the module must shrink it first.
ELONGATED_SIZE = (1, 1_000_000)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_with_empty_ihdr_chunk() -> bytes:
    """A PNG with a second, empty IHDR before IEND: Pillow's load() raises a bare ValueError."""
    png = encode_image(noise_image(24, 16), "PNG")
    iend = png.rindex(b"IEND") - 4  # the chunk starts with its 4-byte length
    return png[:iend] + png_chunk(b"IHDR", b"") + png[iend:]


def random_bytes(size: int) -> bytes:
    return np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes()


def small_jpeg() -> bytes:
    return encode_image(noise_image(64, 48))


@dataclass(frozen=True)
class BadRequest:
    make_inputs: Callable[[], bytes]
    threshold: Optional[float]
    status: grpc.StatusCode
    # Phrases the status details must contain: what is wrong and what to do instead.
    phrases: Tuple[str, ...]


BAD_REQUESTS = {
    "random-bytes": BadRequest(
        lambda: random_bytes(4096), None, INVALID, ("not a complete image", WHAT_TO_SEND)
    ),
    "truncated-jpeg": BadRequest(
        lambda: small_jpeg()[:400],
        None,
        INVALID,
        ("not a complete image", "Truncated", WHAT_TO_SEND),
    ),
    "empty": BadRequest(lambda: b"", None, INVALID, ("inputs is empty", WHAT_TO_SEND)),
    "corrupt-png-chunk": BadRequest(
        png_with_empty_ihdr_chunk,
        None,
        INVALID,
        ("not a complete image", "Truncated IHDR chunk", WHAT_TO_SEND),
    ),
    "decompression-bomb": BadRequest(
        lambda: blank_png(BOMB_SIDE, BOMB_SIDE),
        None,
        INVALID,
        (f"{BOMB_SIDE * BOMB_SIDE} pixels", f"limit is {MAX_IMAGE_PIXELS}", "send a smaller image"),
    ),
    "over-pixel-limit": BadRequest(
        lambda: _png(Image.new("1", OVER_LIMIT_SIZE)),
        None,
        INVALID,
        ("{}x{} = ".format(*OVER_LIMIT_SIZE), f"limit of {MAX_IMAGE_PIXELS}", "send a smaller"),
    ),
    # The ICO bomb (a PNG frame of 12000x12000): ICO is not among the default formats.
    "ico-not-accepted": BadRequest(
        ico_png_bomb, None, INVALID, ("in ICO format, which this runtime does not accept", WHAT_TO_SEND)
    ),
    "threshold-nan": BadRequest(small_jpeg, math.nan, INVALID, ("threshold", "between 0 and 1")),
    "threshold-negative": BadRequest(small_jpeg, -1.0, INVALID, ("threshold", "between 0 and 1")),
    "threshold-5": BadRequest(small_jpeg, 5.0, INVALID, ("threshold", "between 0 and 1")),
    "over-message-size": BadRequest(
        lambda: bytes(MAX_MESSAGE_BYTES + 1),
        None,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        ("larger than max",),
    ),
}


def test_the_bombs_writer_makes_an_image_the_runtime_decodes(served):
    """So the bomb is refused for its size, not because its writer made a broken file."""
    width, height = 300, 200
    result = served.predict(blank_png(width, height), 0.0)
    assert result.detected_objects
    assert_well_formed(result, width, height)


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_bad_request_gets_a_status_that_says_what_to_fix_and_the_runtime_serves_on(served, name):
    bad = BAD_REQUESTS[name]
    status, details, _ = predict_status(served.predict, bad.make_inputs(), bad.threshold)
    assert status == bad.status, details
    for phrase in bad.phrases:
        assert phrase in details, details
    assert_serves_normally(served)


def _array_png(array: np.ndarray) -> bytes:
    return _png(Image.fromarray(array))


ODD_VALID_IMAGES = {
    "1x1": lambda: encode_image(noise_image(1, 1)),
    "grayscale": lambda: _array_png(noise_image(50, 30)[:, :, 0]),
    "rgba": lambda: _array_png(np.dstack([noise_image(50, 30), np.full((30, 50), 90, np.uint8)])),
    "16-bit": lambda: _array_png(np.arange(50 * 30, dtype=np.uint16).reshape(30, 50) * 40),
    "320x48": lambda: encode_image(noise_image(320, 48)),
    "48x320": lambda: encode_image(noise_image(48, 320)),
    "1x1000000": lambda: _png(Image.new("1", ELONGATED_SIZE)),
    "20000x1000": lambda: _png(Image.new("L", (20_000, 1_000), 77)),
}
# Shrunk and padded so much that the image is a sliver of what the model sees: detections that
# fall in the padding are dropped, so an empty result is right for them.
PADDED_MOSTLY = {"1x1000000", "20000x1000"}


@pytest.mark.parametrize("name", ODD_VALID_IMAGES)
def test_odd_but_valid_image_gets_a_result(served, name):
    inputs = ODD_VALID_IMAGES[name]()
    result = served.predict(inputs, 0.0)
    if name not in PADDED_MOSTLY:
        assert result.detected_objects  # threshold 0 keeps every detection token's best class
    assert_well_formed(result, *Image.open(io.BytesIO(inputs)).size)
    assert result.producer_id.name == "Transformers Object Detector"


def test_request_just_under_the_message_size_is_served(served):
    # A photo-sized PNG of noise (it does not compress): more than gRPC's default 4 MiB.
    width = height = 2800
    inputs = encode_image(noise_image(width, height), "PNG")
    assert 20 * 1024 * 1024 < len(inputs) < MAX_MESSAGE_BYTES
    result = served.predict(inputs, 0.0, timeout=120)
    assert result.detected_objects
    assert_well_formed(result, width, height)

