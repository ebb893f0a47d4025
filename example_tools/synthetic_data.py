"""Generated, seeded training data that a tiny YOLOS can actually learn.

Upstream's example trains on random noise, which proves the plumbing but gives a model that
detects nothing, so a demo or a test cannot tell a working pipeline from a broken one. Here every
label has its own signature a few-layer model picks up within a short training run:

* a shape: label 0 a filled square, 1 a filled circle, 2 a triangle, 3 a plus-shaped cross,
  then the shapes again;
* a colour family (label 0 warm red-orange, 1 cool blue, then green, purple, ...), jittered per
  object so the model learns the family rather than one RGB value.

Shape and family cycle with co-prime periods (4 and 7), so the first 28 labels all look
different; more labels are refused rather than silently given look-alikes. Backgrounds are muted
colours with a mild gradient and noise, kept far from every object's colour. Each image is drawn
from its own random stream derived from the seed, so the same seed gives byte-identical files.
"""

# Standard
from typing import List, NamedTuple, Sequence, Tuple
import colorsys
import io
import math
import pathlib

# Third Party
from PIL import Image, ImageDraw
import numpy as np

# First Party
import alog

# Local
from caikit_computer_vision.coco_format import write_coco_file
from caikit_computer_vision.defaults import DEFAULT_SEED
from caikit_computer_vision.label_format import LabelledBox, label_problem, write_labels_file
from common import (
    COCO_LABELS_FILE_NAME,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_LABELS,
    IMAGES_DIR_NAME,
    LABELS_FILE_NAME,
)
from example_tools.evaluation import box_iou

log = alog.use_channel("CCVDATA")

# The label file each format is written to (inside the output directory).
LABEL_FORMATS = {"tab": LABELS_FILE_NAME, "coco": COCO_LABELS_FILE_NAME}

SHAPES: Tuple[str, ...] = ("square", "circle", "triangle", "cross")

# Hue (degrees) at the centre of each label's colour family; 7 is co-prime with len(SHAPES).
HUE_FAMILIES: Tuple[float, ...] = (15.0, 215.0, 120.0, 280.0, 50.0, 180.0, 320.0)

MAX_LABELS: int = len(SHAPES) * len(HUE_FAMILIES)

# Name given to the image of ``render_example``'s box: that image is returned, not written.
EXAMPLE_IMAGE_NAME: str = "example.jpg"

JPEG_QUALITY: int = 90

# Object side as a fraction of the image side: big enough to see after the demo model shrinks a
# 64 px image to 32 px (4 x 4 patches of 8 px).
_OBJECT_SIZE_RANGE = (0.30, 0.55)
# Objects of one image may touch but not hide each other: IoU of their boxes stays below this.
_MAX_OBJECT_IOU = 0.1
_PLACEMENT_TRIES = 30
_HUE_JITTER_DEGREES = 10.0
# Smallest RGB (0-255) distance between a background and any object colour in its image.
_MIN_BACKGROUND_DISTANCE = 110.0
_BACKGROUND_TRIES = 100
_NOISE_SIGMA = 4.0

# Independent random streams of one seed, so the demo's query images are never training images.
_TRAIN_STREAM = 0
_EXAMPLE_STREAM = 1


class _PixelBox(NamedTuple):
    """Integer box on pixel edges: a box of pixels 3 to 9 has xmin 3 and xmax 10."""

    xmin: int
    xmax: int
    ymin: int
    ymax: int


def generate_train_data(
    output_dir: str,
    num_images: int,
    image_size: int = DEFAULT_IMAGE_SIZE,
    labels: Sequence[str] = DEFAULT_LABELS,
    seed: int = DEFAULT_SEED,
    max_objects_per_image: int = 2,
    label_format: str = "tab",
) -> pathlib.Path:
    """Write ``num_images`` JPEGs and their label file into ``output_dir``; return the file's path.

    Images go to ``output_dir/IMAGES_DIR_NAME/`` and the label file to
    ``output_dir/LABELS_FILE_NAME`` (``label_format="tab"``, upstream's format) or
    ``output_dir/COCO_LABELS_FILE_NAME`` (``"coco"``, a COCO detection JSON). Each image holds 1
    to ``max_objects_per_image`` objects (fewer when they do not fit without overlapping); labels
    are drawn uniformly. The label file is written last, and atomically, so it never names an
    image that is not there yet.

    Raises:
        ValueError: an argument out of range (see the message).
    """
    _check_arguments(num_images, image_size, labels, seed, max_objects_per_image)
    if label_format not in LABEL_FORMATS:
        raise ValueError(
            f"label_format must be one of {sorted(LABEL_FORMATS)}, got {label_format!r}"
        )
    images_dir = pathlib.Path(output_dir) / IMAGES_DIR_NAME
    images_dir.mkdir(parents=True, exist_ok=True)
    name_digits = max(5, len(str(num_images - 1)))
    boxes = []
    for index in range(num_images):
        rng = np.random.default_rng([seed, _TRAIN_STREAM, index])
        object_count = int(rng.integers(1, max_objects_per_image + 1))
        label_indices = [int(i) for i in rng.integers(0, len(labels), size=object_count)]
        jpeg, placed = _render_jpeg(rng, image_size, label_indices)
        name = f"{index:0{name_digits}d}.jpg"
        (images_dir / name).write_bytes(jpeg)
        boxes.extend(_labelled_box(name, labels[i], box) for i, box in placed)
    labels_path = pathlib.Path(output_dir) / LABEL_FORMATS[label_format]
    if label_format == "coco":
        names = [f"{index:0{name_digits}d}.jpg" for index in range(num_images)]
        write_coco_file(
            str(labels_path), boxes, {name: (image_size, image_size) for name in names}, labels
        )
    else:
        write_labels_file(str(labels_path), boxes)
    return labels_path


def render_example(
    label: str,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = DEFAULT_SEED,
    labels: Sequence[str] = DEFAULT_LABELS,
) -> Tuple[bytes, LabelledBox]:
    """Return the JPEG bytes of one generated image with one ``label`` object, and its box.

    For demos and tests that need a query image: drawn exactly like the training images, but
    from a random stream the training set never uses. The box's image name is
    ``EXAMPLE_IMAGE_NAME``.

    Raises:
        ValueError: ``label`` is not in ``labels``, or an argument out of range.
    """
    _check_arguments(1, image_size, labels, seed, 1)
    if label not in labels:
        raise ValueError(f"label {label!r} is not one of {list(labels)}")
    label_index = list(labels).index(label)
    rng = np.random.default_rng([seed, _EXAMPLE_STREAM, label_index])
    jpeg, placed = _render_jpeg(rng, image_size, [label_index])
    return jpeg, _labelled_box(EXAMPLE_IMAGE_NAME, label, placed[0][1])


def _check_arguments(
    num_images: int,
    image_size: int,
    labels: Sequence[str],
    seed: int,
    max_objects_per_image: int,
) -> None:
    """Raise one ValueError that lists every argument out of range, so one fix is enough."""
    problems = [
        f"{name} must be an int >= {minimum}, got {value!r}"
        for name, value, minimum in (
            ("num_images", num_images, 1),
            ("image_size", image_size, 16),
            ("seed", seed, 0),
            ("max_objects_per_image", max_objects_per_image, 1),
        )
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum
    ]
    if isinstance(labels, str) or not labels:
        problems.append(f"labels must be a non-empty sequence of names, got {labels!r}")
    elif not all(isinstance(label, str) for label in labels):
        problems.append(f"labels must all be str, got {list(labels)!r}")
    else:
        if len(set(labels)) != len(labels):
            problems.append(f"labels must be unique, got {list(labels)}")
        if len(labels) > MAX_LABELS:
            problems.append(
                f"at most {MAX_LABELS} labels have distinct shape and colour, got {len(labels)}"
            )
        problems.extend(filter(None, (label_problem(label) for label in labels)))
    if problems:
        raise ValueError("; ".join(problems))


def _labelled_box(image: str, label: str, box: _PixelBox) -> LabelledBox:
    return LabelledBox(
        image, label, float(box.xmin), float(box.xmax), float(box.ymin), float(box.ymax)
    )


def _render_jpeg(
    rng: np.random.Generator, image_size: int, label_indices: Sequence[int]
) -> Tuple[bytes, List[Tuple[int, _PixelBox]]]:
    """Draw one image with (up to) one object per label index; return JPEG bytes and boxes.

    The one drawing code path of this module: training images and examples both come from here.
    Boxes are the tight bounds of the pixels each object shows once all are drawn, so a box never
    includes a part of its object that a later object covers.
    """
    placements = _place_objects(rng, image_size, len(label_indices))
    label_indices = label_indices[: len(placements)]
    masks = [
        _shape_mask(image_size, SHAPES[label_index % len(SHAPES)], placement)
        for label_index, placement in zip(label_indices, placements)
    ]
    colours = [_object_colour(rng, label_index) for label_index in label_indices]
    pixels = _background(rng, image_size, colours)
    covered = np.zeros((image_size, image_size), dtype=bool)
    placed = []
    # Painted last to first, so what is already covered is exactly what hides an earlier object.
    for index in reversed(range(len(placements))):
        visible = masks[index] & ~covered
        pixels[visible] = colours[index]
        covered |= visible
        placed.append((label_indices[index], _mask_box(visible)))
    placed.reverse()
    pixels += rng.normal(0.0, _NOISE_SIGMA, size=pixels.shape)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    # Full-resolution chroma (subsampling=0) keeps colour edges, and so the boxes, sharp.
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue(), placed


def _place_objects(
    rng: np.random.Generator, image_size: int, object_count: int
) -> List[_PixelBox]:
    """Pick squares fully inside the image; drop objects that find no room apart from the rest."""
    placements: List[_PixelBox] = []
    for _ in range(object_count):
        for _ in range(_PLACEMENT_TRIES):
            side = int(round(rng.uniform(*_OBJECT_SIZE_RANGE) * image_size))
            x, y = (int(value) for value in rng.integers(0, image_size - side + 1, size=2))
            candidate = _PixelBox(x, x + side, y, y + side)
            if all(box_iou(candidate, placed) < _MAX_OBJECT_IOU for placed in placements):
                placements.append(candidate)
                break
    return placements


def _shape_mask(image_size: int, shape: str, square: _PixelBox) -> np.ndarray:
    """Boolean mask of ``shape`` filling ``square`` edge to edge."""
    left, top = square.xmin, square.ymin
    right, bottom = square.xmax - 1, square.ymax - 1
    side = square.xmax - square.xmin
    mask = Image.new("L", (image_size, image_size), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "square":
        draw.rectangle([left, top, right, bottom], fill=255)
    elif shape == "circle":
        draw.ellipse([left, top, right, bottom], fill=255)
    elif shape == "triangle":
        draw.polygon([(left + (side - 1) / 2, top), (left, bottom), (right, bottom)], fill=255)
    else:
        bar = max(2, side // 3)
        start = (side - bar) // 2
        draw.rectangle([left, top + start, right, top + start + bar - 1], fill=255)
        draw.rectangle([left + start, top, left + start + bar - 1, bottom], fill=255)
    return np.asarray(mask) > 0


def _mask_box(mask: np.ndarray) -> _PixelBox:
    columns = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    return _PixelBox(int(columns[0]), int(columns[-1]) + 1, int(rows[0]), int(rows[-1]) + 1)


def _object_colour(rng: np.random.Generator, label_index: int) -> np.ndarray:
    """A saturated, bright colour of the label's family, jittered in hue, saturation and value."""
    hue_centre = HUE_FAMILIES[label_index % len(HUE_FAMILIES)]
    hue = (hue_centre + rng.uniform(-_HUE_JITTER_DEGREES, _HUE_JITTER_DEGREES)) % 360.0
    return _hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0))


def _background(
    rng: np.random.Generator, image_size: int, object_colours: Sequence[np.ndarray]
) -> np.ndarray:
    """A muted colour, far from every object colour, with a mild linear gradient (float HxWx3)."""
    for _ in range(_BACKGROUND_TRIES):
        base = _hsv_to_rgb(rng.uniform(0.0, 360.0), rng.uniform(0.05, 0.3), rng.uniform(0.2, 0.6))
        distances = [np.linalg.norm(base - colour) for colour in object_colours]
        if min(distances, default=math.inf) >= _MIN_BACKGROUND_DISTANCE:
            break
    else:
        raise RuntimeError("no background colour far enough from the objects: check the palette")
    angle = rng.uniform(0.0, 2 * math.pi)
    amplitude = rng.uniform(5.0, 20.0)
    coordinates = np.arange(image_size) / max(image_size - 1, 1) - 0.5
    ramp = coordinates[None, :] * math.cos(angle) + coordinates[:, None] * math.sin(angle)
    return base[None, None, :] + (amplitude * ramp)[:, :, None]


def _hsv_to_rgb(hue_degrees: float, saturation: float, value: float) -> np.ndarray:
    return 255.0 * np.array(colorsys.hsv_to_rgb(hue_degrees / 360.0, saturation, value))
