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

Pixels are not the only cost: a file inside the pixel limit can still hold a core for tens of
seconds or take a gigabyte. So, also before decoding, the file's structure is walked (cheaply,
never more than the limits' worth of steps) and refused when it holds more than
``caikit_computer_vision.max_image_scans`` JPEG scans (libjpeg passes over the whole image once
a scan), more than ``max_image_chunks`` chunks, segments or blocks (Pillow reads each in Python),
or a BMP compressed with RLE (decoded in Python, a step a run). After decoding, 16-bit and float
images are scaled to 8 bits a tile at a time, and ``fit_for_processor`` shrinks an
over-elongated image before it converts it to RGB, so that no full-size copy is made that the
model does not need.

Every refusal is a ``ValueError`` raised here (INVALID_ARGUMENT in the runtime), not caikit's
``error.value_check``: its ``enable_error_checks: false`` turns those off, and these checks are
what keeps a small file from taking the server's memory. So the module needs caikit only for
``ImageLimits.from_config``; ``load_image(data, limits)`` works without it.
"""

# Standard
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Tuple, Union
import io
import math
import pathlib
import re
import struct

# Third Party
from PIL import Image, PngImagePlugin, UnidentifiedImageError
import numpy as np

# Local
from .defaults import (
    DEFAULT_IMAGE_FORMATS,
    LIBRARY_CONFIG_KEY,
    MAX_IMAGE_CHUNKS,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SCANS,
)

ImageSource = Union[Image.Image, pathlib.Path, str, np.ndarray, bytes]

# This library's image keys in its section of the caikit config (runtime_config.yaml).
_FORMATS_KEY = "image_formats"
_MAX_PIXELS_KEY = "max_image_pixels"
_MAX_SCANS_KEY = "max_image_scans"
_MAX_CHUNKS_KEY = "max_image_chunks"

# The formats whose pixel count this module knows how to check before decoding (see above).
# Pillow opens MPO (multi-picture JPEG) through its JPEG opener and APNG as PNG: both are
# covered by their family's name.
CHECKED_FORMATS: Tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "ICO")


def get_config():
    """caikit's config, imported here: the rest of this module works without caikit."""
    # First Party
    from caikit.config import get_config as caikit_config  # pylint: disable=import-outside-toplevel

    return caikit_config()


@dataclass(frozen=True)
class ImageLimits:
    """Which images are decoded at all: their formats, largest pixel count and structure."""

    formats: Tuple[str, ...] = DEFAULT_IMAGE_FORMATS
    max_pixels: int = MAX_IMAGE_PIXELS
    max_scans: int = MAX_IMAGE_SCANS
    max_chunks: int = MAX_IMAGE_CHUNKS

    @classmethod
    def from_config(cls) -> "ImageLimits":
        """The limits of the current caikit config; a wrong value fails with its key named."""
        section = get_config().get(LIBRARY_CONFIG_KEY) or {}
        formats = section.get(_FORMATS_KEY, DEFAULT_IMAGE_FORMATS)
        if isinstance(formats, str):  # an environment override: "JPEG,PNG"
            formats = [name.strip() for name in formats.split(",") if name.strip()]
        if not (
            isinstance(formats, Sequence)
            and len(formats) > 0
            and all(isinstance(name, str) and name.upper() in CHECKED_FORMATS for name in formats)
        ):
            raise ValueError(
                f"{LIBRARY_CONFIG_KEY}.{_FORMATS_KEY} must be a non-empty list of image formats "
                f"among {', '.join(CHECKED_FORMATS)}, not {formats!r}"
            )
        counts = {}
        for key, default in (
            (_MAX_PIXELS_KEY, MAX_IMAGE_PIXELS),
            (_MAX_SCANS_KEY, MAX_IMAGE_SCANS),
            (_MAX_CHUNKS_KEY, MAX_IMAGE_CHUNKS),
        ):
            value = section.get(key, default)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(
                    f"{LIBRARY_CONFIG_KEY}.{key} must be a whole number >= 1, not {value!r}"
                )
            counts[key] = value
        return cls(
            tuple(dict.fromkeys(name.upper() for name in formats)),
            max_pixels=counts[_MAX_PIXELS_KEY],
            max_scans=counts[_MAX_SCANS_KEY],
            max_chunks=counts[_MAX_CHUNKS_KEY],
        )

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
    return to_rgb(load_image(source, limits))


def load_image(source: ImageSource, limits: Optional[ImageLimits] = None) -> Image.Image:
    """Decode ``source`` as ``decode_image`` does, but leave it in the mode it was stored in.

    For ``fit_for_processor``, which shrinks an over-elongated image before converting it: an
    image one pixel wide costs Pillow 8 bytes a row beside its pixels, so a full-size RGB copy
    of 1 x 40 million pixels would add 460 MB that the model never sees.
    """
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        if not (source.dtype == np.uint8 and source.ndim in (2, 3) and source.size > 0):
            raise ValueError(
                "a numpy image must be a non-empty uint8 array of shape HxW or HxWxC, got "
                f"{source.dtype} {source.shape}"
            )
        return Image.fromarray(source)
    if isinstance(source, (str, pathlib.Path)):
        # Only reachable in-process: the task's wire type is bytes, so a client cannot send a path.
        path = pathlib.Path(source)
        if not path.is_file():
            raise ValueError(f"no image file at {path}")
        return load_image(path.read_bytes(), limits)
    if not isinstance(source, bytes):
        # TypeError, like a wrong type anywhere in caikit: INVALID_ARGUMENT in the runtime.
        raise TypeError(f"inputs must be image bytes, not {type(source).__name__}")
    limits = limits or ImageLimits.from_config()
    image = open_image(source, limits)
    with _pillow_errors_as_value_errors(source, limits):
        image.load()
    return image


def open_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open ``data`` without decoding pixels, once its format and pixel count are accepted.

    Raises ``ValueError`` (with what to send instead) for empty or unknown bytes, a format not
    in ``limits.formats``, a frame over ``limits.max_pixels`` and a structure over
    ``limits.max_scans`` / ``limits.max_chunks`` or a slow codec; nothing has been decoded then.
    """
    if not data:
        raise ValueError(f"inputs is empty: {limits.what_to_send}")
    candidates = _formats_claiming(data)
    if candidates and not any(name in limits.formats for name in candidates):
        raise ValueError(
            f"inputs is an image in {candidates[0]} format, which this runtime does not "
            f"accept: {limits.what_to_send}",
        )
    for name in candidates:
        if name in limits.formats and name in _WORK_CHECKS:
            # Before Image.open, which already walks a PNG's chunks up to the image data, a
            # JPEG's segments up to the first scan, a GIF's blocks up to the first frame and
            # all of an icon.
            _WORK_CHECKS[name](data, limits)
    with _pillow_errors_as_value_errors(data, limits):
        image = Image.open(io.BytesIO(data), formats=list(limits.formats))
    _check_pixels(*image.size, limits)
    return image


def _check_pixels(
    width: int, height: int, limits: ImageLimits, what: str = "the image is"
) -> None:
    if width * height > limits.max_pixels:
        raise ValueError(
            f"{what} {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_pixels}: send a smaller image",
        )
    if width < 1 or height < 1:
        raise ValueError(
            f"{what} {width}x{height} pixels: send an image with at least one pixel",
        )


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


def _icon_frames(data: bytes) -> Iterator[Tuple[int, int, int]]:
    """(width, height, offset) of each frame of an ICO file, the size from its own PNG or BMP
    header (Pillow reads a frame from its offset to the end of the file, whatever its entry says).

    Raises ``ValueError`` when a frame's header cannot be read: Pillow would still try it.
    """
    _, _, count = _ICON_DIRECTORY.unpack_from(data.ljust(_ICON_DIRECTORY.size, b"\0"))
    for index in range(count):
        entry_at = _ICON_DIRECTORY.size + index * _ICON_ENTRY.size
        entry = data[entry_at : entry_at + _ICON_ENTRY.size]
        if len(entry) < _ICON_ENTRY.size:
            raise ValueError(
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
            raise ValueError(
                f"inputs is an ICO file whose frame {index + 1} has no readable PNG or BMP "
                "header: send a whole image",
            )
        yield (*size, offset)


# -- work before decoding: the structure of the file, walked without decoding ------------------
#
# Each walk only counts: whatever it cannot parse it leaves to Pillow, which refuses a broken
# file with its own message. It stops as soon as a limit is passed, so it costs at most the
# limits' worth of steps (and, for JPEG, one regular-expression scan of the bytes, in C).


def _refuse_structure(what: str, units: str, limit: int, key: str, instead: str) -> None:
    """"inputs is ``what`` more than ``limit`` ``units``, the limit (``key``): ``instead``"."""
    raise ValueError(
        f"inputs is {what} more than {limit} {units}, the limit ({LIBRARY_CONFIG_KEY}.{key}): "
        f"{instead}",
    )


def _refuse_chunks(what: str, units: str, limits: ImageLimits) -> None:
    _refuse_structure(
        what,
        units,
        limits.max_chunks,
        _MAX_CHUNKS_KEY,
        "send the image saved again by an ordinary encoder, without the extra data",
    )


# The next marker after entropy-coded data or junk: 0xFF followed by neither 0x00 (a stuffed
# 0xFF), a restart marker (D0..D7, inside a scan) nor another 0xFF (fill).
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_START_OF_SCAN, _JPEG_END_OF_IMAGE = 0xDA, 0xD9
_JPEG_WITHOUT_LENGTH = frozenset((0x01, 0xD8))  # TEM, SOI (RSTn never match above)


def _check_jpeg_work(data: bytes, limits: ImageLimits) -> None:
    """Count the first image's scans, and its marker segments, up to its end (EOI).

    Before the first scan, Pillow's own parser steps over any byte that is not a marker one at a
    time, in Python: those bytes count as segments too.
    """
    position, segments, scans = 2, 0, 0  # after SOI
    while segments <= limits.max_chunks:
        found = _JPEG_MARKER.search(data, position)
        if found is None:
            return
        if scans == 0:
            segments += found.start() - position
        marker = data[found.start() + 1]
        if marker == _JPEG_END_OF_IMAGE:
            return
        segments += 1
        position = found.end()
        if marker in _JPEG_WITHOUT_LENGTH:
            continue
        if marker == _JPEG_START_OF_SCAN:
            scans += 1
            if scans > limits.max_scans:
                _refuse_structure(
                    "a JPEG of",
                    "scans (each a pass over the whole image)",
                    limits.max_scans,
                    _MAX_SCANS_KEY,
                    "send it as a baseline JPEG or a progressive one of ordinary scans",
                )
        # The segment's length counts its own two bytes; a scan's data follows its header.
        position += int.from_bytes(data[position : position + 2], "big")
    _refuse_chunks("a JPEG file of", "marker segments or stray bytes", limits)


def _check_png_work(
    data: bytes, limits: ImageLimits, what: str = "a PNG file", start: int = 0
) -> None:
    """Count chunks up to IEND, or up to the second frame of an APNG (never read).

    ``start``: where the PNG begins in ``data`` (an icon's frame), so that no copy is made.
    """
    position = start + len(PngImagePlugin._MAGIC)
    chunks, animated, image_data_seen = 0, False, False
    while position + 8 <= len(data):
        chunks += 1
        if chunks > limits.max_chunks:
            _refuse_chunks(f"{what} of", "chunks", limits)
        length, tag = struct.unpack_from(">I4s", data, position)
        if tag == b"IEND" or (tag == b"fcTL" and animated and image_data_seen):
            return
        animated = animated or tag == b"acTL"
        image_data_seen = image_data_seen or tag == b"IDAT"
        position += 12 + length  # length, type, data, CRC


def _check_webp_work(data: bytes, limits: ImageLimits) -> None:
    """Count the RIFF chunks of a WebP file (libwebp keeps a record of each)."""
    position, chunks = 12, 0  # after "RIFF", the size and "WEBP"
    while position + 8 <= len(data):
        chunks += 1
        if chunks > limits.max_chunks:
            _refuse_chunks("a WebP file of", "chunks", limits)
        size = struct.unpack_from("<I", data, position + 4)[0]
        position += 8 + size + (size & 1)  # chunks are padded to an even size


def _check_gif_work(data: bytes, limits: ImageLimits) -> None:
    """Count the blocks Pillow reads in Python before the first frame's pixels.

    Pillow joins the sub-blocks of a comment by copying the comment so far, so the k-th
    sub-block of a comment counts k: a comment costs the square of its length.
    """
    flags = data[10] if len(data) > 10 else 0
    position = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global palette
    steps = 0
    while position < len(data):
        introducer = data[position]
        if introducer in (0x2C, 0x3B):  # the first frame (decoded in C), or the trailer
            return
        steps += 1
        position += 1
        if introducer == 0x21 and position < len(data):  # an extension: label, sub-blocks
            comment = data[position] == 0xFE
            position += 1
            sub_blocks = 0
            while position < len(data) and data[position] and steps <= limits.max_chunks:
                sub_blocks += 1
                steps += sub_blocks if comment else 1
                position += data[position] + 1
            position += 1
        if steps > limits.max_chunks:
            _refuse_chunks("a GIF file of", "blocks", limits)


_TIFF_BYTE_TYPES = frozenset((1, 2, 6, 7))  # BYTE, ASCII, SBYTE, UNDEFINED: read as bytes


def _check_tiff_work(data: bytes, limits: ImageLimits) -> None:
    """Count the entries of the first directory and the numbers in them.

    Pillow reads each number of a directory into a Python int and each strip of an uncompressed
    image as a tile of its own, so a directory of millions of strip offsets costs both time and
    memory; byte strings (ICC profiles, XMP) are read whole and do not count.
    """
    order = "<" if data[:2] == b"II" else ">"
    try:
        if struct.unpack_from(order + "H", data, 2)[0] == 43:  # BigTIFF: 64-bit offsets
            offset = struct.unpack_from(order + "Q", data, 8)[0]
            count, header, entry = struct.unpack_from(order + "Q", data, offset)[0], 8, "HHQ8x"
        else:
            offset = struct.unpack_from(order + "I", data, 4)[0]
            count, header, entry = struct.unpack_from(order + "H", data, offset)[0], 2, "HHI4x"
    except struct.error:
        return
    entry_size = struct.calcsize(order + entry)
    steps = 0
    for index in range(count):
        try:
            _, kind, values = struct.unpack_from(
                order + entry, data, offset + header + index * entry_size
            )
        except struct.error:
            return
        steps += 1 if kind in _TIFF_BYTE_TYPES else 1 + values
        if steps > limits.max_chunks:
            _refuse_chunks("a TIFF file whose first directory holds", "entries and numbers", limits)


_BMP_RLE = {1: "RLE8", 2: "RLE4"}


def _check_bmp_codec(header: bytes, what: str = "a BMP") -> None:
    """Refuse RLE compression, which Pillow decodes in Python (``header``: the DIB header).

    A 32 MB BMP in runs of one pixel held a core for 35 s on the issue's machine.
    """
    if len(header) >= 20 and struct.unpack_from("<I", header)[0] > 12:  # not OS/2 1.x
        compression = struct.unpack_from("<I", header, 16)[0]
        if compression in _BMP_RLE:
            raise ValueError(
                f"inputs is {what} compressed with {_BMP_RLE[compression]}, which is decoded a run "
                "at a time in Python and too slow to serve: send it as PNG or as an "
                "uncompressed BMP",
            )


def _check_bmp_work(data: bytes, limits: ImageLimits) -> None:
    _check_bmp_codec(data[14:34])  # after the 14-byte file header


def _check_icon_work(data: bytes, limits: ImageLimits) -> None:
    """Every frame of an icon: Pillow decodes the largest inside ``Image.open`` itself."""
    header = data[: _ICON_DIRECTORY.size]
    frames = _ICON_DIRECTORY.unpack(header)[2] if len(header) == _ICON_DIRECTORY.size else 0
    if frames > limits.max_chunks:
        _refuse_chunks("an ICO file of", "frames", limits)
    for width, height, offset in _icon_frames(data):
        _check_pixels(width, height, limits, "the icon holds a frame of")
        if data.startswith(PngImagePlugin._MAGIC, offset):
            _check_png_work(data, limits, "an ICO file holding a PNG", start=offset)
        else:
            _check_bmp_codec(data[offset : offset + 20], "an ICO file holding a BMP")


_WORK_CHECKS = {
    "JPEG": _check_jpeg_work,
    "PNG": _check_png_work,
    "WEBP": _check_webp_work,
    "GIF": _check_gif_work,
    "TIFF": _check_tiff_work,
    "BMP": _check_bmp_work,
    "ICO": _check_icon_work,
}


@contextmanager
def _pillow_errors_as_value_errors(source: bytes, limits: ImageLimits) -> Iterator[None]:
    """Turn what Pillow raises for bytes that are not a whole image into a ValueError."""
    try:
        yield
    except Image.DecompressionBombError as err:
        # Pillow's own limit (about 179 MP) fires in open(), before ours can.
        raise ValueError(
            f"{err}; the limit is {limits.max_pixels} pixels: send a smaller image"
        ) from err
    except (OSError, SyntaxError, EOFError, ValueError, struct.error) as err:
        # UnidentifiedImageError and "image file is truncated" are OSErrors; a corrupt chunk
        # can be a ValueError ("Truncated IHDR chunk"), which alone would not say what to send.
        reason = "unknown format" if isinstance(err, UnidentifiedImageError) else str(err)
        raise ValueError(
            f"inputs ({len(source)} bytes) is not a complete image ({reason}): "
            f"{limits.what_to_send}"
        ) from err


# Pillow modes of more than 8 bits a sample: integers of 16 or 32 bits, and 32-bit floats.
_WIDE_MODES = frozenset(("I", "I;16", "I;16B", "I;16L", "I;16N", "F"))
# Pixels of a wide image scaled at a time: float64 temporaries of a few MB, whatever the image.
_SCALING_TILE_PIXELS = 1 << 18


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; alpha is dropped, 16-bit and float are rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_MODES:
        image = to_8_bit_gray(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def to_8_bit_gray(image: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit or float image to mode L by its real range (Pillow's own
    conversion clips to 0..255), a tile at a time.

    The whole image as float64 would cost 8 bytes a pixel, several times over: about 1 GB for a
    78 kB 16-bit PNG of 40 MP. Tiles keep the temporaries to a few MB; the result (a byte a
    pixel) is the only full-size copy. NaN becomes black, infinities the ends of the range.
    """
    tiles = list(_tiles(*image.size))
    low, high = math.inf, -math.inf
    for box in tiles:
        pixels = np.asarray(image.crop(box), dtype=np.float64)
        finite = pixels[np.isfinite(pixels)]
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    scale = 255.0 / (high - low) if high > low else 0.0
    low = low if math.isfinite(low) else 0.0
    gray = Image.new("L", image.size)
    for box in tiles:
        pixels = (np.asarray(image.crop(box), dtype=np.float64) - low) * scale
        pixels = np.nan_to_num(pixels, nan=0.0, posinf=255.0, neginf=0.0).clip(0.0, 255.0)
        gray.paste(Image.fromarray(pixels.round().astype(np.uint8), mode="L"), box[:2])
    return gray


def _tiles(width: int, height: int) -> Iterator[Tuple[int, int, int, int]]:
    """Boxes of at most ``_SCALING_TILE_PIXELS`` covering the image, whatever its shape."""
    tile_width = min(width, _SCALING_TILE_PIXELS)
    tile_height = max(1, _SCALING_TILE_PIXELS // tile_width)
    for top in range(0, height, tile_height):
        for left in range(0, width, tile_width):
            yield left, top, min(left + tile_width, width), min(top + tile_height, height)


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
    if new_width * new_height > max_pixels:
        raise ValueError(
            f"the image is {width}x{height}, too elongated: the model needs it padded to "
            f"{new_width}x{new_height} = {new_width * new_height} pixels, over the limit of "
            f"{max_pixels}: crop it closer to 1:{max_aspect_ratio:g} or send it smaller"
        )
    canvas = Image.new("RGB", (new_width, new_height))
    canvas.paste(image, (0, 0))
    return canvas


# Pillow: with a gap of 3 or more, reducing first is "indistinguishable from fair resampling in
# most cases".
_REDUCING_GAP = 3.0


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
    """Shrink an over-elongated image to ``longest_edge`` first, then pad it (see above); the
    result is RGB, whatever mode ``image`` has (``load_image`` leaves it as decoded).

    An image within ``max_aspect_ratio`` is only converted to RGB, so ordinary inputs go to the
    processor untouched. A very elongated one would otherwise be padded at full size, a canvas
    that grows with the square of its long side (1x1000000 pixels needs 250000x1000000);
    shrunk first, the canvas is at most ``longest_edge`` on its long side, which is all the
    processor keeps anyway. It is shrunk before it is converted: Pillow keeps a pointer a row,
    so a full-size RGB copy of 1 x 40 million pixels costs 460 MB.
    """
    width, height = image.size
    if max(width, height) <= max_aspect_ratio * min(width, height):
        return FittedImage(to_rgb(image), 1.0, 1.0)
    scale = min(1.0, longest_edge / max(width, height))
    if scale < 1.0:
        if image.mode.startswith("I;16"):
            image = to_8_bit_gray(image)  # Pillow resizes these only by nearest pixel
        elif image.mode in ("LA", "RGBA", "PA"):
            # Pillow would resize these through a full-size premultiplied copy; alpha goes anyway.
            image = to_rgb(image)
        # reducing_gap: a box reduction by a whole factor first. A plain bilinear resize weighs
        # every source row of each output row, a table of (output rows x source rows / output
        # rows x 2) doubles: 640 MB for 40 million rows down to 800.
        image = image.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))),
            Image.BILINEAR,
            reducing_gap=_REDUCING_GAP,
        )
    return FittedImage(
        pad_to_aspect_ratio(to_rgb(image), max_aspect_ratio),
        scale_x=width / image.width,
        scale_y=height / image.height,
    )
