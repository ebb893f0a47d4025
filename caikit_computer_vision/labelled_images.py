"""Check a training or evaluation set on disk before any work starts on it.

A set is an image directory plus a label file: the upstream tab format (``label_format``) or a
COCO detection JSON (``coco_format``), told apart by content. Training runs in the server, often
minutes after the request was accepted, so every problem the client can fix (a missing image, a
corrupt JPEG, a box outside its image) is found here, up front, and reported with the place to
fix (``file:line`` or the COCO annotation id) as a ``ValueError`` (INVALID_ARGUMENT in caikit's
runtime).

Confinement: the server reads these files on a client's behalf, so every image must resolve,
symlinks followed, to a file inside the image directory (itself resolved). A link inside the
directory that points elsewhere is refused, both here and again when training reads the image.
Messages name only what the client sent (the label file path, the directory and the image name
as given), never where a link leads: that would tell a client about the server's files.
"""

# Standard
from dataclasses import dataclass
from typing import Dict, List, Tuple
import os
import pathlib

# First Party
import alog

# Local
from .coco_format import is_coco_file, read_coco_boxes
from .defaults import MAX_BOXES_PER_IMAGE
from .images import ImageLimits, decode_image
from .label_format import EXPECTED_LINE_FORMAT, LabelledBox, read_numbered_labels

log = alog.use_channel("CCVDATA")


@dataclass(frozen=True)
class LabelledImage:
    """One image of a set, its size in pixels and every box the label file gives it.

    ``path`` is as the client named it (image directory / file name); ``read_bytes`` is how to
    read it, checking the confinement again at the moment of reading.
    """

    path: pathlib.Path
    width: int
    height: int
    boxes: Tuple[LabelledBox, ...]

    def read_bytes(self) -> bytes:
        """The image file's bytes, if it still resolves inside its directory.

        Raises:
            ValueError: the file was replaced by a link leading out of its directory (or
                removed) since the set was checked.
        """
        _check_confined(self.path, "")
        try:
            return self.path.read_bytes()
        except OSError as err:
            raise ValueError(
                f"image '{self.path.name}' in {self.path.parent} cannot be read "
                f"({err.strerror}); it was readable when the training was accepted"
            )


def load_labelled_images(
    img_dir_path: str, labels_file: str, max_boxes_per_image: int = MAX_BOXES_PER_IMAGE
) -> List[LabelledImage]:
    """Read the label file, open every image it names and check the boxes fit their images.

    Images come back in the order the label file first names them. Each image is fully decoded
    once (``Image.load``), not just sized: reading the header alone (``Image.open(...).size``)
    and ``verify()`` (a no-op for JPEG in Pillow) would let a truncated JPEG through to fail in
    the middle of training. For the small images this example trains on, decoding is cheap.
    Images in a format the runtime does not accept, or over its pixel limit, are refused
    before decoding (``images.ImageLimits``).

    No image is opened before the whole label file has been read and every image's box count
    checked against ``max_boxes_per_image``.

    Raises:
        ValueError: anything the caller must fix, with the file (and line) that says where.
    """
    img_dir = pathlib.Path(img_dir_path)
    if not img_dir.is_dir():
        raise ValueError(
            f"image directory {img_dir_path} does not exist or is not a directory; "
            "give the directory that holds the images named in the label file"
        )
    if not os.path.isfile(labels_file):
        raise ValueError(
            f"label file {labels_file} does not exist or is not a file; give a file "
            f"with one '{EXPECTED_LINE_FORMAT}' per line, or a COCO detection JSON"
        )
    located_boxes = _read_label_file(labels_file, max_boxes_per_image)
    located_by_image: Dict[str, List[Tuple[str, LabelledBox]]] = {}
    for where, box in located_boxes:
        located_by_image.setdefault(box.image, []).append((where, box))
    images = []
    for name, located_image_boxes in located_by_image.items():
        image_path = img_dir / name
        width, height = _decoded_image_size(image_path, located_image_boxes[0][0])
        for where, box in located_image_boxes:
            if box.xmax > width or box.ymax > height:
                raise ValueError(
                    f"{where}: box (x_min={box.xmin}, "
                    f"x_max={box.xmax}, y_min={box.ymin}, y_max={box.ymax}) lies outside "
                    f"image '{name}' of {width}x{height} pixels (width x height); "
                    "fix the box or check that the coordinate order is x_min, x_max, "
                    "y_min, y_max"
                )
        boxes = tuple(box for _, box in located_image_boxes)
        images.append(LabelledImage(image_path, width, height, boxes))
    return images


def _read_label_file(labels_file: str, max_boxes_per_image: int) -> List[Tuple[str, LabelledBox]]:
    """``(where, box)`` for every box of a tab-format or COCO label file."""
    try:
        if is_coco_file(labels_file):
            entries = read_coco_boxes(labels_file, max_boxes_per_image)
            log.debug("<CCV50540635D>", "%s read as COCO detection annotations", labels_file)
            return [(where, box) for where, box, _ in entries]
        return [
            (f"{labels_file}:{line_number}", box)
            for line_number, box in read_numbered_labels(labels_file, max_boxes_per_image)
        ]
    except OSError as err:
        raise ValueError(f"label file {labels_file} cannot be read: {err.strerror}")


def _check_confined(image_path: pathlib.Path, named_at: str) -> None:
    """Refuse an image that is not a file resolving (links followed) inside its directory."""
    prefix = f"{named_at}: " if named_at else ""
    real_dir = os.path.realpath(image_path.parent)
    real_path = os.path.realpath(image_path)
    if os.path.commonpath([real_path, real_dir]) != real_dir or real_path == real_dir:
        raise ValueError(
            f"{prefix}image '{image_path.name}' in {image_path.parent} is a link that leads "
            "outside that directory; training reads only files inside it: copy the image "
            "in instead of linking it"
        )
    if not os.path.isfile(real_path):
        raise ValueError(
            f"{prefix}image '{image_path.name}' is not a file in {image_path.parent}; "
            "add the image or remove its boxes from the label file"
        )


def _decoded_image_size(image_path: pathlib.Path, named_at: str) -> Tuple[int, int]:
    """Decode the image at ``image_path`` and return (width, height); ``named_at`` says where
    the label file names it.

    Decoded by ``images.decode_image``, as client images are: the runtime's accepted formats and
    pixel limit are checked before any pixel is decoded, so a training image that run() would
    refuse is refused here, by the Train call, instead of failing the training later.
    """
    _check_confined(image_path, named_at)
    try:
        data = pathlib.Path(os.path.realpath(image_path)).read_bytes()
    except OSError as err:
        # The OS's message repeats the path it opened (the resolved one): not echoed.
        raise ValueError(
            f"{named_at}: image '{image_path.name}' in {image_path.parent} cannot be read "
            f"({err.strerror}); replace it with a readable image file"
        )
    try:
        width, height = decode_image(data, ImageLimits.from_config()).size
    except ValueError as err:
        raise ValueError(
            f"{named_at}: image '{image_path.name}' in {image_path.parent} cannot be used "
            f"({err}); replace it with a valid image file"
        )
    return width, height

