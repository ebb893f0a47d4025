"""Turning whatever a caller sends into an RGB PIL image the YOLOS processor can take.

Shared by ``run`` (images from clients) and ``train`` (images from disk) so that a model sees
pixels prepared the same way in both.

Before a pixel is decoded, an image must be in one of the accepted formats
(``caikit_computer_vision.image_formats``) and declare at most
``caikit_computer_vision.max_image_pixels`` pixels in the frame that will be decoded. For most
formats ``Image.open`` reads only headers, so its ``size`` is that check. Two cases need more:

* ICO: Pillow decodes the icon inside ``Image.open`` itself, and an icon's frame is a whole PNG
  or BMP whose own header may declare far more than the icon directory says (a 17 kB ICO
  wrapping a PNG of 12000x12000 pixels). Every frame's own header is read here first.
* Multi-frame files (animated GIF / PNG / WebP, multi-page TIFF): only the first frame is ever
  decoded. Its extent is part of ``size`` once opened (GIF grows its canvas to cover it; APNG and
  WebP frames must lie inside their canvas), and later frames are never read.
"""

# Standard
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Tuple, Union
import io
import pathlib
import struct

# Third Party
from PIL import Image, PngImagePlugin, UnidentifiedImageError
import numpy as np

# First Party
from caikit.config import get_config
from caikit.core.exceptions import error_handler
import alog

# Local
from .defaults import DEFAULT_IMAGE_FORMATS, LIBRARY_CONFIG_KEY, MAX_IMAGE_PIXELS

log = alog.use_channel("CCVIMAGE")
error = error_handler.get(log)

ImageSource = Union[Image.Image, pathlib.Path, str, np.ndarray, bytes]

# This library's image keys in its section of the caikit config (runtime_config.yaml).
_FORMATS_KEY = "image_formats"
_MAX_PIXELS_KEY = "max_image_pixels"

# The formats whose pixel count this module knows how to check before decoding (see above).
# Pillow opens MPO (multi-picture JPEG) through its JPEG opener and APNG as PNG: both are
# covered by their family's name.
CHECKED_FORMATS: Tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "ICO")


@dataclass(frozen=True)
class ImageLimits:
    """Which images are decoded at all: their formats and their largest pixel count."""

    formats: Tuple[str, ...] = DEFAULT_IMAGE_FORMATS
    max_pixels: int = MAX_IMAGE_PIXELS

    @classmethod
    def from_config(cls) -> "ImageLimits":
        """The limits of the current caikit config; a wrong value fails with its key named."""
        section = get_config().get(LIBRARY_CONFIG_KEY) or {}
        formats = section.get(_FORMATS_KEY, DEFAULT_IMAGE_FORMATS)
        if isinstance(formats, str):  # an environment override: "JPEG,PNG"
            formats = [name.strip() for name in formats.split(",") if name.strip()]
        error.value_check(
            "<CCV20957714E>",
            isinstance(formats, Sequence)
            and len(formats) > 0
            and all(isinstance(name, str) and name.upper() in CHECKED_FORMATS for name in formats),
            "{}.{} must be a non-empty list of image formats among {}, not {!r}",
            LIBRARY_CONFIG_KEY,
            _FORMATS_KEY,
            ", ".join(CHECKED_FORMATS),
            formats,
        )
        max_pixels = section.get(_MAX_PIXELS_KEY, MAX_IMAGE_PIXELS)
        error.value_check(
            "<CCV20957715E>",
            isinstance(max_pixels, int) and not isinstance(max_pixels, bool) and max_pixels >= 1,
            "{}.{} must be a whole number of pixels >= 1, not {!r}",
            LIBRARY_CONFIG_KEY,
            _MAX_PIXELS_KEY,
            max_pixels,
        )
        return cls(tuple(dict.fromkeys(name.upper() for name in formats)), max_pixels)

    @property
    def what_to_send(self) -> str:
        """The accepted formats as a request: "send the bytes of a JPEG, PNG or GIF image"."""
        names = list(self.formats)
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        return f"send the bytes of a {listed} image"


def decode_image(source: ImageSource, limits: Optional[ImageLimits] = None) -> Image.Image:
    """Decode ``source`` into an RGB image, raising ``ValueError`` for anything that is not one.

    ``limits`` defaults to the caikit config's (``ImageLimits.from_config``). ``ValueError``
    matters: caikit's runtime answers it with INVALID_ARGUMENT and our message, where any other
    exception would become INTERNAL.
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
        return decode_image(path.read_bytes(), limits)
    error.type_check("<CCV93051127E>", bytes, inputs=source)
    limits = limits or ImageLimits.from_config()
    image = open_image(source, limits)
    with _pillow_errors_as_value_errors(source, limits):
        image.load()
    return to_rgb(image)


def open_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open ``data`` without decoding pixels, once its format and pixel count are accepted.

    Raises ``ValueError`` (with what to send instead) for empty or unknown bytes, a format not
    in ``limits.formats`` and a frame over ``limits.max_pixels``; nothing has been decoded then.
    """
    if not data:
        _refuse("<CCV20957713E>", f"inputs is empty: {limits.what_to_send}")
    candidates = _formats_claiming(data)
    if candidates and not any(name in limits.formats for name in candidates):
        _refuse(
            "<CCV20957716E>",
            f"inputs is an image in {candidates[0]} format, which this runtime does not "
            f"accept: {limits.what_to_send}",
        )
    if "ICO" in candidates and "ICO" in limits.formats:
        # Before Image.open, which decodes the icon's largest frame.
        for width, height in _icon_frame_sizes(data):
            _check_pixels(width, height, limits, "the icon holds a frame of")
    with _pillow_errors_as_value_errors(data, limits):
        image = Image.open(io.BytesIO(data), formats=list(limits.formats))
    _check_pixels(*image.size, limits)
    return image


def _check_pixels(
    width: int, height: int, limits: ImageLimits, what: str = "the image is"
) -> None:
    if width * height > limits.max_pixels:
        _refuse(
            "<CCV33018452E>",
            f"{what} {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_pixels}: send a smaller image",
        )
    if width < 1 or height < 1:
        _refuse(
            "<CCV33018454E>",
            f"{what} {width}x{height} pixels: send an image with at least one pixel",
        )


def _refuse(log_code: str, message: str) -> None:
    """Raise ``ValueError(message)`` (INVALID_ARGUMENT in the runtime).

    Not ``error.value_check``: caikit's ``enable_error_checks: false`` turns those off, and these
    checks are what keeps a small file from taking the server's memory.
    """
    error(log_code, ValueError(message))


def _formats_claiming(data: bytes) -> Tuple[str, ...]:
    """Pillow's formats whose signature matches ``data``, in Pillow's order (no decoding)."""
    Image.init()
    prefix = data[:16]  # what Image.open hands to the accept functions
    return tuple(name for name, (_, accept) in Image.OPEN.items() if _accepts(accept, prefix))


def _accepts(accept, prefix: bytes) -> bool:
    if accept is None:
        return False
    try:
        return bool(accept(prefix))
    except (struct.error, IndexError, TypeError, ValueError, SyntaxError):
        return False  # as Image.open does: a prefix too short for that format's test


_ICON_DIRECTORY = struct.Struct("<HHH")  # reserved, type (1: icon), number of frames
_ICON_ENTRY = struct.Struct("<BBBBHHII")  # ..., size of the frame's data, offset of the frame


def _icon_frame_sizes(data: bytes) -> Iterator[Tuple[int, int]]:
    """(width, height) that each frame of an ICO file declares in its own PNG or BMP header.

    Raises ``ValueError`` when a frame's header cannot be read: Pillow would still try it.
    """
    _, _, count = _ICON_DIRECTORY.unpack_from(data.ljust(_ICON_DIRECTORY.size, b"\0"))
    for index in range(count):
        entry_at = _ICON_DIRECTORY.size + index * _ICON_ENTRY.size
        entry = data[entry_at : entry_at + _ICON_ENTRY.size]
        if len(entry) < _ICON_ENTRY.size:
            _refuse(
                "<CCV20957717E>",
                f"inputs is a truncated ICO file (frame {index + 1} of {count} is missing): "
                "send a whole image",
            )
        offset = _ICON_ENTRY.unpack(entry)[7]
        frame = data[offset : offset + 32]
        if frame.startswith(PngImagePlugin._MAGIC):
            # The IHDR chunk comes first: length, "IHDR", width, height (big-endian).
            header_ok = len(frame) >= 24 and frame[12:16] == b"IHDR"
            size = struct.unpack_from(">II", frame, 16) if header_ok else None
        elif len(frame) >= 12:
            # A BMP without its file header; the height counts the AND mask too. A 12-byte
            # (OS/2) header has 16-bit sizes, the others 32-bit signed ones.
            if struct.unpack_from("<I", frame)[0] == 12:
                size = struct.unpack_from("<HH", frame, 4)
            else:
                size = tuple(abs(side) for side in struct.unpack_from("<ii", frame, 4))
        else:
            size = None
        if size is None:
            _refuse(
                "<CCV20957718E>",
                f"inputs is an ICO file whose frame {index + 1} has no readable PNG or BMP "
                "header: send a whole image",
            )
        yield size


@contextmanager
def _pillow_errors_as_value_errors(source: bytes, limits: ImageLimits) -> Iterator[None]:
    """Turn what Pillow raises for bytes that are not a whole image into a ValueError."""
    try:
        yield
    except Image.DecompressionBombError as err:
        # Pillow's own limit (about 179 MP) fires in open(), before ours can.
        error(
            "<CCV58110274E>",
            ValueError(f"{err}; the limit is {limits.max_pixels} pixels: send a smaller image"),
        )
    except (OSError, SyntaxError, EOFError, ValueError, struct.error) as err:
        # UnidentifiedImageError and "image file is truncated" are OSErrors; a corrupt chunk
        # can be a ValueError ("Truncated IHDR chunk"), which alone would not say what to send.
        reason = "unknown format" if isinstance(err, UnidentifiedImageError) else str(err)
        error(
            "<CCV71302566E>",
            ValueError(
                f"inputs ({len(source)} bytes) is not a complete image ({reason}): "
                f"{limits.what_to_send}"
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
