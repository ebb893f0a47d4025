"""Turning whatever a caller sends into an RGB PIL image the YOLOS processor can take.

Shared by ``run`` (images from clients) and ``train`` (images from disk) so that a model sees
pixels prepared the same way in both.
"""

# Standard
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Union
import io
import pathlib

# Third Party
from PIL import Image, UnidentifiedImageError
import numpy as np

# First Party
from caikit.core.exceptions import error_handler
import alog

# Local
from .defaults import MAX_IMAGE_PIXELS

log = alog.use_channel("CCVIMAGE")
error = error_handler.get(log)

ImageSource = Union[Image.Image, pathlib.Path, str, np.ndarray, bytes]

_SUPPORTED = "send the bytes of a JPEG, PNG, BMP, GIF, TIFF or WebP image"


def decode_image(source: ImageSource, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode ``source`` into an RGB image, raising ``ValueError`` for anything that is not one.

    ``ValueError`` matters: caikit's runtime answers it with INVALID_ARGUMENT and our message,
    where any other exception would become INTERNAL.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        error.value_check(
            "<CCV61018264E>",
            source.dtype == np.uint8 and source.ndim in (2, 3) and source.size > 0,
            "a numpy image must be a non-empty uint8 array of shape HxW or HxWxC, got {} {}",
            source.dtype,
            source.shape,
        )
        return to_rgb(Image.fromarray(source))
    if isinstance(source, (str, pathlib.Path)):
        # Only reachable in-process: the task's wire type is bytes, so a client cannot send a path.
        path = pathlib.Path(source)
        error.value_check("<CCV47312008E>", path.is_file(), "no image file at {}", path)
        return decode_image(path.read_bytes(), max_pixels)
    error.type_check("<CCV93051127E>", bytes, inputs=source)
    error.value_check("<CCV20957713E>", len(source) > 0, "inputs is empty: " + _SUPPORTED)

    with _pillow_errors_as_value_errors(source, max_pixels):
        # open() only reads the header, so the size check runs before any pixel is decoded.
        image = Image.open(io.BytesIO(source))
    width, height = image.size
    error.value_check(
        "<CCV33018452E>",
        width * height <= max_pixels,
        "the image is {}x{} = {} pixels, over the limit of {}: send a smaller image",
        width,
        height,
        width * height,
        max_pixels,
    )
    with _pillow_errors_as_value_errors(source, max_pixels):
        image.load()
    return to_rgb(image)


@contextmanager
def _pillow_errors_as_value_errors(source: bytes, max_pixels: int) -> Iterator[None]:
    """Turn what Pillow raises for bytes that are not a whole image into a ValueError."""
    try:
        yield
    except Image.DecompressionBombError as err:
        # Pillow's own limit (about 179 MP) fires in open(), before ours can.
        error(
            "<CCV58110274E>",
            ValueError(f"{err}; the limit is {max_pixels} pixels: send a smaller image"),
        )
    except (OSError, SyntaxError, EOFError, ValueError) as err:
        # UnidentifiedImageError and "image file is truncated" are OSErrors; a corrupt chunk
        # can be a ValueError ("Truncated IHDR chunk"), which alone would not say what to send.
        reason = "unknown format" if isinstance(err, UnidentifiedImageError) else str(err)
        error(
            "<CCV71302566E>",
            ValueError(
                f"inputs ({len(source)} bytes) is not a complete image ({reason}): {_SUPPORTED}"
            ),
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; alpha is dropped, 16-bit and float are rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # Pillow's own conversion clips these to 0..255; rescale by the real range instead.
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        gray = ((pixels - low) * scale).round().astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def pad_to_aspect_ratio(
    image: Image.Image, max_aspect_ratio: float, max_pixels: int = MAX_IMAGE_PIXELS
) -> Image.Image:
    """Pad the right or bottom edge so that long side / short side <= ``max_aspect_ratio``.

    The YOLOS processor scales the long side down to ``longest_edge`` and rounds both sides down
    to a multiple of 16, so a very elongated image (say 320x48 with a small ``longest_edge``)
    would end up zero pixels high. Padding right/bottom keeps every pixel coordinate unchanged,
    so boxes need no shifting afterwards.

    Raises ``ValueError`` when the padded image would exceed ``max_pixels``.
    """
    width, height = image.size
    if max(width, height) <= max_aspect_ratio * min(width, height):
        return image
    new_width = max(width, int(np.ceil(height / max_aspect_ratio)))
    new_height = max(height, int(np.ceil(width / max_aspect_ratio)))
    # The padding grows with the square of the long side: a 78 kB PNG of 1x40000000 pixels
    # would need a 10000000x40000000 canvas (MemoryError, i.e. INTERNAL, or the server killed).
    error.value_check(
        "<CCV33018453E>",
        new_width * new_height <= max_pixels,
        "the image is {}x{}, too elongated: the model needs it padded to {}x{} = {} pixels, "
        "over the limit of {}: crop it closer to 1:{:g} or send it smaller",
        width,
        height,
        new_width,
        new_height,
        new_width * new_height,
        max_pixels,
        max_aspect_ratio,
    )
    canvas = Image.new("RGB", (new_width, new_height))
    canvas.paste(image, (0, 0))
    return canvas


@dataclass(frozen=True)
class FittedImage:
    """An image made safe for the YOLOS processor, and how to map its pixels back."""

    image: Image.Image
    # Multiply a pixel coordinate of ``image`` by these to get one of the original image.
    scale_x: float
    scale_y: float


def fit_for_processor(
    image: Image.Image, longest_edge: int, max_aspect_ratio: float
) -> FittedImage:
    """Shrink an over-elongated image to ``longest_edge`` first, then pad it (see above).

    An image within ``max_aspect_ratio`` is returned as it is, so ordinary inputs go to the
    processor untouched. A very elongated one would otherwise be padded at full size, a canvas
    that grows with the square of its long side (1x1000000 pixels needs 250000x1000000);
    shrunk first, the canvas is at most ``longest_edge`` on its long side, which is all the
    processor keeps anyway.
    """
    width, height = image.size
    if max(width, height) <= max_aspect_ratio * min(width, height):
        return FittedImage(image, 1.0, 1.0)
    scale = min(1.0, longest_edge / max(width, height))
    if scale < 1.0:
        image = image.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR
        )
    return FittedImage(
        pad_to_aspect_ratio(image, max_aspect_ratio),
        scale_x=width / image.width,
        scale_y=height / image.height,
    )
