"""Draw predicted boxes and labels on the input image, for people to look at.

Works on any detections that have ``label``, ``score`` and ``box.xmin/xmax/ymin/ymax``: the gRPC
``DetectedObject`` messages the client receives, or caikit's data objects of the same name.
"""

# Standard
from typing import Iterable, Tuple
import io
import os
import pathlib
import tempfile
import zlib

# Third Party
from PIL import Image, ImageDraw, ImageFont

# Images smaller than this (longest edge, pixels) are enlarged before drawing, so that labels
# stay readable on the demo's 64 x 64 images. Boxes are scaled with them.
MIN_DRAWN_EDGE = 256
# Distinct, saturated colours; a label always gets the same one (see label_colour).
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
)


def label_colour(label: str) -> Tuple[int, int, int]:
    """The palette colour of ``label``: the same in every image and every run."""
    return PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)]


def draw_detections(image_bytes: bytes, detections: Iterable) -> Image.Image:
    """The image in ``image_bytes`` (RGB), with a box and a "label score" tag per detection.

    Box coordinates are pixels of the original image; boxes reaching past its edges are
    clipped. A copy is returned when there is nothing to draw.
    """
    image = Image.open(io.BytesIO(image_bytes))
    image.load()
    image = image.convert("RGB")
    scale = max(1, -(-MIN_DRAWN_EDGE // max(image.size)))  # ceiling division
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    # Pillow's built-in font; scalable where Pillow has FreeType, a small bitmap font otherwise.
    font = ImageFont.load_default(size=max(10, min(image.size) // 20))
    line_width = max(1, min(image.size) // 128)
    for detected in detections:
        box = detected.box
        left, right = _clip(box.xmin * scale, image.width), _clip(box.xmax * scale, image.width)
        top, bottom = _clip(box.ymin * scale, image.height), _clip(box.ymax * scale, image.height)
        if right <= left or bottom <= top:
            continue
        colour = label_colour(detected.label)
        draw.rectangle((left, top, right - 1, bottom - 1), outline=colour, width=line_width)
        tag = f"{detected.label} {detected.score:.2f}"
        text_left, text_top, text_right, text_bottom = draw.textbbox((0, 0), tag, font=font)
        tag_width, tag_height = text_right - text_left + 4, text_bottom - text_top + 4
        # Above the box when there is room, else just inside its top edge.
        tag_top = top - tag_height if top >= tag_height else top
        draw.rectangle((left, tag_top, left + tag_width - 1, tag_top + tag_height - 1), fill=colour)
        draw.text(
            (left + 2 - text_left, tag_top + 2 - text_top),
            tag,
            fill=_text_colour(colour),
            font=font,
        )
    return image


def save_annotated(image_bytes: bytes, detections: Iterable, path: os.PathLike) -> pathlib.Path:
    """Write ``draw_detections(...)`` to ``path`` in the format its extension names.

    Written to a temporary file beside ``path`` and then renamed, so ``path`` never holds half
    an image. Raises ValueError for an extension Pillow cannot write.
    """
    path = pathlib.Path(path)
    image_format = image_format_for(path)
    annotated = draw_detections(image_bytes, detections)
    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as staging:
        try:
            annotated.save(staging, format=image_format)
        except BaseException:
            os.unlink(staging.name)
            raise
    os.replace(staging.name, path)
    return path


def image_format_for(path: os.PathLike) -> str:
    """Pillow's format name for the extension of ``path`` (``out.png`` -> ``PNG``)."""
    suffix = pathlib.Path(path).suffix.lower()
    image_format = Image.registered_extensions().get(suffix)
    if image_format is None or image_format not in Image.SAVE:
        raise ValueError(
            f"cannot write {suffix or 'files without an extension'} images: "
            "name the file .png or .jpg"
        )
    return image_format


def _text_colour(background: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """Black on light tag colours, white on dark ones (ITU-R BT.601 luma)."""
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)


def _clip(value: int, limit: int) -> int:
    return min(max(int(value), 0), limit)
