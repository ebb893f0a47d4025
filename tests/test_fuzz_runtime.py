"""Fuzz the served predict routes (gRPC and HTTP) with random and mutated image bytes.

Whatever the bytes and the threshold, the runtime answers what an oracle beside it decides (Pillow
here, with the runtime's formats and pixel limit): OK (HTTP 200) with a well-formed result for a
whole image and a threshold in 0..1, INVALID_ARGUMENT (HTTP 400) naming the problem otherwise;
never INTERNAL / UNKNOWN (HTTP 500); and it is still serving after the run. The run is seeded (derandomized) and short; CCV_LONG_TESTS=1 runs ten times as many.
"""

# Standard
from typing import Optional, Tuple
import base64
import io
import json
import math
import os
import urllib.error
import urllib.request
import warnings

# Third Party
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
import grpc
import numpy as np

# Local
from common import HOST
from caikit_computer_vision.data_model import ObjectDetectionResult
from caikit_computer_vision.defaults import DEFAULT_IMAGE_FORMATS, MAX_IMAGE_PIXELS
from example_tools.runtime_harness import RuntimeProcess

from .conftest import encode_image, noise_image
from .served_example import (
    assert_serves_normally,
    assert_well_formed,
    predict_status,
)

LONG_RUN = os.environ.get("CCV_LONG_TESTS") == "1"
GRPC_CASES = 10_000 if LONG_RUN else 1000
HTTP_CASES = 3000 if LONG_RUN else 300

HTTP_PREDICT_PATH = "/api/v1/task/object-detection"


def fuzz_settings(max_examples: int) -> settings:
    """Seeded, bounded, and writing no example database into the repository."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,  # each call has its own timeout; how fast the runtime is varies by machine
    )


def _save(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _seed_images() -> Tuple[bytes, ...]:
    """Small real files of every format and mode that run() decodes, to mutate."""
    rgb = Image.fromarray(noise_image(24, 16, seed=5))
    return (
        encode_image(noise_image(24, 16, seed=4)),
        _save(rgb, "JPEG", progressive=True),
        _save(rgb.convert("CMYK"), "JPEG"),
        _save(rgb, "PNG"),
        _save(rgb.convert("L"), "PNG"),
        _save(rgb.convert("RGBA"), "PNG"),
        _save(rgb.convert("P"), "PNG", transparency=0),
        _save(Image.fromarray(np.arange(24 * 16, dtype=np.uint16).reshape(16, 24) * 99), "PNG"),
        _save(rgb.convert("1"), "PNG"),
        _save(rgb, "GIF"),
        _save(rgb, "BMP"),
        _save(rgb, "TIFF"),
        _save(rgb, "WEBP"),
    )


SEED_IMAGES = _seed_images()


@st.composite
def mutated_images(draw) -> bytes:
    """A real image with a few truncations, bit flips, overwrites or splices."""
    data = bytearray(draw(st.sampled_from(SEED_IMAGES)))
    for _ in range(draw(st.integers(1, 4))):
        # Half the mutations hit the first bytes, where the format, size and mode are.
        last = max(len(data) - 1, 0)
        position = draw(st.one_of(st.integers(0, min(last, 64)), st.integers(0, last)))
        mutation = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "splice"]))
        if mutation == "truncate":
            del data[position:]
        elif mutation == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif mutation == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=8))
            data[position : position + len(patch)] = patch
        elif mutation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif mutation == "splice":
            # The header of this image on the body of another (often of another format).
            other = draw(st.sampled_from(SEED_IMAGES))
            data[position:] = other[draw(st.integers(0, len(other) - 1)) :]
    return bytes(data)


predict_inputs = st.one_of(
    mutated_images(), st.binary(max_size=1024), st.sampled_from(SEED_IMAGES)
)
thresholds = st.one_of(
    st.none(),
    st.just(0.0),  # keeps every detection, so that there are boxes to check
    st.floats(0.0, 1.0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, -1.0, 5.0, 1e308, 5e-324, 1.0]),
)


def valid_threshold(threshold: Optional[float]) -> bool:
    return threshold is None or (math.isfinite(threshold) and 0.0 <= threshold <= 1.0)


def decoded_size(inputs: bytes) -> Optional[Tuple[int, int]]:
    """The size Pillow decodes ``inputs`` to here, or None when it is not a whole image in an
    accepted format (runtime_config.yaml's defaults) with 1 to MAX_IMAGE_PIXELS pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns of corrupt EXIF data and the like
        try:
            with Image.open(io.BytesIO(inputs), formats=list(DEFAULT_IMAGE_FORMATS)) as image:
                if not 1 <= image.width * image.height <= MAX_IMAGE_PIXELS:
                    return None
                image.load()
                return image.size
        except Exception:  # pylint: disable=broad-except
            # Whatever Pillow raises here, the runtime must answer INVALID_ARGUMENT.
            return None


def served_size(inputs: bytes, threshold: Optional[float]) -> Optional[Tuple[int, int]]:
    """The oracle shared by both routes: the size of the image the runtime must serve for these
    inputs, or None when it must refuse them (INVALID_ARGUMENT, HTTP 400)."""
    return decoded_size(inputs) if valid_threshold(threshold) else None


def check_refusal_message(message: str) -> None:
    """The message names what is wrong: run() checks the threshold, then the image (caikit's
    HTTP route reports an empty "inputs" as missing before run() sees the threshold)."""
    assert any(word in message for word in ("threshold", "inputs", "image")), message


def test_fuzzed_grpc_predict_never_fails_internally(served):
    @fuzz_settings(GRPC_CASES)
    @given(inputs=predict_inputs, threshold=thresholds)
    def predict_once(inputs: bytes, threshold: Optional[float]) -> None:
        size = served_size(inputs, threshold)
        status, details, result = predict_status(served.predict, inputs, threshold)
        if size is None:
            assert status == grpc.StatusCode.INVALID_ARGUMENT, details
            check_refusal_message(details)
        else:
            assert status == grpc.StatusCode.OK, (size, details)
            assert_well_formed(result, *size)

    predict_once()
    assert_serves_normally(served)


def http_predict(
    runtime: RuntimeProcess, inputs: bytes, threshold: Optional[float]
) -> Tuple[int, bytes]:
    """(HTTP status, body) of POST /api/v1/task/object-detection."""
    body = {"model_id": "my_model", "inputs": base64.b64encode(inputs).decode()}
    if threshold is not None:
        # Python writes NaN and Infinity into JSON as bare words; so would a careless client.
        body["parameters"] = {"threshold": threshold}
    request = urllib.request.Request(
        f"http://{HOST}:{runtime.ports['http']}{HTTP_PREDICT_PATH}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_fuzzed_http_predict_never_answers_500(served):
    @fuzz_settings(HTTP_CASES)
    @given(inputs=predict_inputs, threshold=thresholds)
    def predict_once(inputs: bytes, threshold: Optional[float]) -> None:
        size = served_size(inputs, threshold)
        status, body = http_predict(served.runtime, inputs, threshold)
        if size is None:
            assert status == 400, body
            check_refusal_message(body.decode())
        else:
            assert status == 200, (size, body)
            assert_well_formed(ObjectDetectionResult.from_json(body.decode()), *size)

    predict_once()
    assert_serves_normally(served)
