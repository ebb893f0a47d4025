"""Draw predicted boxes and labels on the input image, for people to look at.

Works on any detections that have ``label``, ``score`` and ``box.xmin/xmax/ymin/ymax``: the gRPC
``DetectedObject`` messages the client receives, or caikit's data objects of the same name.
Expected objects (``label`` and ``xmin/xmax/ymin/ymax``, e.g. what
``evaluation.read_coco_ground_truth`` reads) can be drawn beside them, in white, with a legend
under the image saying which is which.
"""

# Standard
from typing import Iterable, Sequence, Tuple
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
# Expected boxes: white with a black core, a colour no label gets.
EXPECTED_COLOUR = (255, 255, 255)
EXPECTED_CORE = (0, 0, 0)
LEGEND_BACKGROUND = (32, 32, 32)


def label_colour(label: str) -> Tuple[int, int, int]:
    """The palette colour of ``label``: the same in every image and every run."""
    return PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)]


def draw_detections(
    image_bytes: bytes, detections: Iterable, expected: Sequence = ()
) -> Image.Image:
    """The image in ``image_bytes`` (RGB), with a box and a "label score" tag per detection.

    Box coordinates are pixels of the original image; boxes reaching past its edges are
    clipped. With ``expected`` objects, each is drawn first as a white box tagged "expected
    label", and a legend strip under the image names both kinds. A copy is returned when there
    is nothing to draw.
    """
    detections = list(detections)
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
    for box in expected:
        _draw_box(draw, font, image.size, scale, box, f"expected {box.label}", EXPECTED_COLOUR,
                  line_width + 2, below=True)
    for detected in detections:
        _draw_box(draw, font, image.size, scale, detected.box,
                  f"{detected.label} {detected.score:.2f}", label_colour(detected.label),
                  line_width)
    if expected:
        image = _with_legend(image, font, [detected.label for detected in detections])
    return image


def _draw_box(draw, font, size, scale, box, tag, colour, line_width, below=False) -> None:
    """One box and its tag (above the box; ``below`` it for expected boxes, so that a
    prediction's tag and the expected one's do not cover each other)."""
    width, height = size
    left, right = _clip(box.xmin * scale, width), _clip(box.xmax * scale, width)
    top, bottom = _clip(box.ymin * scale, height), _clip(box.ymax * scale, height)
    if right <= left or bottom <= top:
        return
    draw.rectangle((left, top, right - 1, bottom - 1), outline=colour, width=line_width)
    if colour == EXPECTED_COLOUR:
        inset = line_width // 2
        draw.rectangle((left + inset, top + inset, right - 1 - inset, bottom - 1 - inset),
                       outline=EXPECTED_CORE, width=1)
    text_left, text_top, text_right, text_bottom = draw.textbbox((0, 0), tag, font=font)
    tag_width, tag_height = text_right - text_left + 4, text_bottom - text_top + 4
    if below:
        tag_top = bottom if bottom + tag_height <= height else bottom - tag_height
    else:
        # Above the box when there is room, else just inside its top edge.
        tag_top = top - tag_height if top >= tag_height else top
    draw.rectangle((left, tag_top, left + tag_width - 1, tag_top + tag_height - 1), fill=colour)
    draw.text(
        (left + 2 - text_left, tag_top + 2 - text_top), tag, fill=_text_colour(colour), font=font
    )


def _with_legend(image: Image.Image, font, predicted_labels: Sequence[str]) -> Image.Image:
    """``image`` with a strip under it: a white swatch "expected", a swatch per predicted label."""
    probe = ImageDraw.Draw(image)
    text_height = probe.textbbox((0, 0), "Ag", font=font)[3]
    swatch = text_height
    entries = [(EXPECTED_COLOUR, "expected")] + [
        (label_colour(label), f"predicted {label}") for label in dict.fromkeys(predicted_labels)
    ]
    row_height = swatch + 6
    with_legend = Image.new("RGB", (image.width, image.height + row_height * len(entries) + 4),
                            LEGEND_BACKGROUND)
    with_legend.paste(image, (0, 0))
    draw = ImageDraw.Draw(with_legend)
    for row, (colour, text) in enumerate(entries):
        top = image.height + 4 + row * row_height
        draw.rectangle((4, top, 4 + swatch, top + swatch), fill=colour)
        draw.text((10 + swatch, top), text, fill=(255, 255, 255), font=font)
    return with_legend


def save_annotated(
    image_bytes: bytes, detections: Iterable, path: os.PathLike, expected: Sequence = ()
) -> pathlib.Path:
    """Write ``draw_detections(...)`` to ``path`` in the format its extension names.

    Written to a temporary file beside ``path`` and then renamed, so ``path`` never holds half
    an image. Raises ValueError for an extension Pillow cannot write.
    """
    path = pathlib.Path(path)
    image_format = image_format_for(path)
    annotated = draw_detections(image_bytes, detections, expected)
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
