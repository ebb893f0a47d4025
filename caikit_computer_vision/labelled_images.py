"""Check a training or evaluation set on disk before any work starts on it.

A set is an image directory plus a label file (see ``label_format``). Training runs in the
server, often minutes after the request was accepted, so every problem the client can fix (a
missing image, a corrupt JPEG, a box outside its image) is found here, up front, and reported
with the ``file:line`` to fix as a ``ValueError`` (INVALID_ARGUMENT in caikit's runtime).
"""

# Standard
from dataclasses import dataclass
from typing import Dict, List, Tuple
import os
import pathlib

# Third Party
from PIL import Image, UnidentifiedImageError

# First Party
from caikit.core.exceptions import error_handler
import alog

# Local
from .defaults import MAX_IMAGE_PIXELS
from .label_format import EXPECTED_LINE_FORMAT, LabelFileError, LabelledBox, read_numbered_labels

log = alog.use_channel("CCVDATA")
error = error_handler.get(log)


@dataclass(frozen=True)
class LabelledImage:
    """One image of a set, its size in pixels and every box the label file gives it."""

    path: pathlib.Path
    width: int
    height: int
    boxes: Tuple[LabelledBox, ...]


def load_labelled_images(img_dir_path: str, labels_file: str) -> List[LabelledImage]:
    """Read the label file, open every image it names and check the boxes fit their images.

    Images come back in the order the label file first names them. Each image is fully decoded
    once (``Image.load``), not just sized: reading the header alone (``Image.open(...).size``)
    and ``verify()`` (a no-op for JPEG in Pillow) would let a truncated JPEG through to fail in
    the middle of training. For the small images this example trains on, decoding is cheap.
    Images over ``MAX_IMAGE_PIXELS`` are refused from their header, before decoding.

    Raises:
        ValueError: anything the caller must fix, with the file (and line) that says where.
    """
    img_dir = pathlib.Path(img_dir_path)
    if not img_dir.is_dir():
        error(
            "<CCV50804662E>",
            ValueError(
                f"image directory {img_dir_path} does not exist or is not a directory; "
                "give the directory that holds the images named in the label file"
            ),
        )
    if not os.path.isfile(labels_file):
        error(
            "<CCV79623240E>",
            ValueError(
                f"label file {labels_file} does not exist or is not a file; give a file "
                f"with one '{EXPECTED_LINE_FORMAT}' per line"
            ),
        )
    try:
        numbered_boxes = read_numbered_labels(labels_file)
    except LabelFileError as err:
        error("<CCV50540634E>", err)
    except OSError as err:
        error("<CCV31623364E>", ValueError(f"label file {labels_file} cannot be read: {err}"), err)

    numbered_by_image: Dict[str, List[Tuple[int, LabelledBox]]] = {}
    for line_number, box in numbered_boxes:
        numbered_by_image.setdefault(box.image, []).append((line_number, box))
    images = []
    for name, numbered_image_boxes in numbered_by_image.items():
        first_line = numbered_image_boxes[0][0]
        image_path = img_dir / name
        width, height = _decoded_image_size(image_path, f"{labels_file}:{first_line}")
        for line_number, box in numbered_image_boxes:
            if box.xmax > width or box.ymax > height:
                error(
                    "<CCV36324037E>",
                    ValueError(
                        f"{labels_file}:{line_number}: box (x_min={box.xmin}, "
                        f"x_max={box.xmax}, y_min={box.ymin}, y_max={box.ymax}) lies outside "
                        f"image '{name}' of {width}x{height} pixels (width x height); "
                        "fix the box or check that the coordinate order is x_min, x_max, "
                        "y_min, y_max"
                    ),
                )
        boxes = tuple(box for _, box in numbered_image_boxes)
        images.append(LabelledImage(image_path, width, height, boxes))
    return images


def _decoded_image_size(image_path: pathlib.Path, named_at: str) -> Tuple[int, int]:
    """Decode the image at ``image_path`` and return (width, height); ``named_at`` is file:line."""
    if not image_path.is_file():
        error(
            "<CCV79495030E>",
            ValueError(
                f"{named_at}: image '{image_path.name}' is not a file in {image_path.parent}; "
                "add the image or remove its lines from the label file"
            ),
        )
    try:
        with Image.open(image_path) as image:
            width, height = image.size
            # Checked on the header, before decoding: the same limit run() applies to clients.
            if width * height > MAX_IMAGE_PIXELS:
                error(
                    "<CCV54153823E>",
                    ValueError(
                        f"{named_at}: image '{image_path.name}' is {width}x{height} pixels, over "
                        f"the limit of {MAX_IMAGE_PIXELS}; scale it down (and its boxes with it)"
                    ),
                )
            image.load()
            return width, height
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        error(
            "<CCV48713032E>",
            ValueError(
                f"{named_at}: image '{image_path.name}' in {image_path.parent} cannot be "
                f"decoded ({err}); replace it with a valid image file"
            ),
            err,
        )
