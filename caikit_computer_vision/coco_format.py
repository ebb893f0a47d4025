"""COCO detection annotations as a label file: read with pycocotools, written for generated data.

A train request's ``labels_file`` may be a COCO ``instances_*.json`` instead of the upstream tab
format; ``is_coco_file`` tells them apart by content (a JSON object), so no new request field is
needed. What is taken from it, as DETR's own COCO loader does: every non-crowd annotation's
``bbox`` (``[x, y, width, height]`` in pixels) with its category's ``name`` as the label, boxes
clipped to their image and dropped when that leaves no area. Images without annotations are
skipped (the upstream format cannot express them either). ``file_name`` must be a plain name of
a file in the image directory, as in the tab format.
"""

# Standard
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
import contextlib
import io
import json
import math

# Third Party
from pycocotools.coco import COCO

# Local
from .atomic_dirs import write_file_atomically
from .label_format import LabelFileError, LabelledBox, box_problem, too_many_boxes_problem

COCO_FORMAT_HINT = (
    "a COCO detection JSON needs 'images' (id, file_name), 'annotations' (image_id, "
    "category_id, bbox [x, y, width, height]) and 'categories' (id, name)"
)
# Only this many bytes are read to decide whether a file is JSON.
_SNIFF_BYTES = 64


class CocoFileError(LabelFileError):
    """A COCO annotations file that cannot be used; says what to fix (INVALID_ARGUMENT)."""

    def __init__(self, path: str, problem: str) -> None:
        ValueError.__init__(self, f"{path}: {problem}; {COCO_FORMAT_HINT}")
        self.path, self.line_number, self.problem = str(path), None, problem

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


def is_coco_file(path: str) -> bool:
    """True when the file starts (after whitespace and a UTF-8 BOM) with ``{``: a JSON object.

    A tab-format file starts with an image file name, which cannot begin with ``{`` in practice
    (and a file that does is refused by the JSON parser with a message saying so).
    """
    with open(path, "rb") as label_file:
        head = label_file.read(_SNIFF_BYTES)
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


def read_coco_boxes(
    path: str, max_boxes_per_image: Optional[int] = None
) -> List[Tuple[str, LabelledBox, Tuple[float, float]]]:
    """Read a COCO detection file into ``(where, box, (image_width, image_height))`` entries.

    ``where`` names the annotation (``path: annotation id 17``) for error messages. The image
    size is the JSON's own (0 when absent); callers check boxes against the decoded image.

    Raises:
        CocoFileError: not valid JSON, a required field missing or of the wrong type, an
            annotation pointing at an unknown image or category, or no usable annotation.
        OSError: the file cannot be opened.
    """
    with open(path, "rb") as label_file:
        raw = label_file.read()
    try:
        dataset = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CocoFileError(path, f"not valid UTF-8 JSON ({err})") from err
    except RecursionError as err:
        raise CocoFileError(path, "JSON nested too deeply (a COCO file is 3 levels deep)") from err
    _check_shape(path, dataset)
    coco = COCO()
    coco.dataset = dataset
    # pycocotools prints "creating index..." on stdout; the runtime's log is the place for news.
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    names: Dict[str, int] = {}
    for image in coco.dataset["images"]:
        name = image["file_name"]
        if name in names:
            raise CocoFileError(
                path, f"images {names[name]} and {image['id']} have the same file_name {name!r}"
            )
        names[name] = image["id"]
    if max_boxes_per_image is not None:
        for image_id, annotations in coco.imgToAnns.items():
            if len(annotations) > max_boxes_per_image and image_id in coco.imgs:
                raise CocoFileError(path, too_many_boxes_problem(
                    coco.imgs[image_id]["file_name"], max_boxes_per_image
                ))
    entries = []
    for annotation in coco.dataset["annotations"]:
        where = f"{path}: annotation id {annotation.get('id', '?')}"
        if annotation.get("iscrowd", 0):
            continue  # a crowd region is not one object: DETR's loader drops these too
        if annotation["image_id"] not in coco.imgs:
            raise CocoFileError(path, f"annotation id {annotation.get('id')} names image_id "
                                f"{annotation['image_id']}, which 'images' does not list")
        if annotation["category_id"] not in coco.cats:
            raise CocoFileError(path, f"annotation id {annotation.get('id')} names category_id "
                                f"{annotation['category_id']}, which 'categories' does not list")
        image = coco.imgs[annotation["image_id"]]
        width, height = float(image.get("width") or 0), float(image.get("height") or 0)
        x, y, box_width, box_height = (float(value) for value in annotation["bbox"])
        xmin, ymin = max(x, 0.0), max(y, 0.0)
        xmax, ymax = x + box_width, y + box_height
        if width and height:
            xmax, ymax = min(xmax, width), min(ymax, height)
        if not (xmax > xmin and ymax > ymin):
            continue  # no area left inside the image: nothing to learn from
        box = LabelledBox(
            image=image["file_name"],
            label=str(coco.cats[annotation["category_id"]]["name"]),
            xmin=xmin,
            xmax=xmax,
            ymin=ymin,
            ymax=ymax,
        )
        problem = box_problem(box)
        if problem:
            raise CocoFileError(path, f"annotation id {annotation.get('id')}: {problem}")
        entries.append((where, box, (width, height)))
    if not entries:
        raise CocoFileError(path, "no usable (non-crowd, non-empty) annotation, so the "
                            "training set is empty")
    return entries


def write_coco_file(
    path: str,
    boxes: Iterable[LabelledBox],
    image_sizes: Mapping[str, Tuple[int, int]],
    labels: Sequence[str],
) -> None:
    """Write ``boxes`` as a COCO detection file, atomically; ``image_sizes`` maps file name to
    (width, height) and ``labels`` gives the category order (ids from 1, as COCO's do).

    Raises:
        ValueError: a box that could not be read back, or no boxes at all.
    """
    boxes = list(boxes)
    for box in boxes:
        problem = box_problem(box)
        if problem:
            raise ValueError(f"cannot write {box}: {problem}")
    if not boxes:
        raise ValueError(f"refusing to write {path}: no boxes (the training set would be empty)")
    category_ids = {label: index for index, label in enumerate(labels, start=1)}
    image_ids = {name: index for index, name in enumerate(image_sizes, start=1)}
    dataset = {
        "images": [
            {"id": image_ids[name], "file_name": name, "width": width, "height": height}
            for name, (width, height) in image_sizes.items()
        ],
        "annotations": [
            {
                "id": index,
                "image_id": image_ids[box.image],
                "category_id": category_ids[box.label],
                "bbox": [box.xmin, box.ymin, box.xmax - box.xmin, box.ymax - box.ymin],
                "area": (box.xmax - box.xmin) * (box.ymax - box.ymin),
                "iscrowd": 0,
            }
            for index, box in enumerate(boxes, start=1)
        ],
        "categories": [{"id": index, "name": label} for label, index in category_ids.items()],
    }
    write_file_atomically(path, json.dumps(dataset, indent=1) + "\n")


def _check_shape(path: str, dataset: object) -> None:
    """Refuse, with what to fix, the JSON that pycocotools would choke on with a KeyError."""
    if not isinstance(dataset, dict):
        raise CocoFileError(path, "the JSON is not an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise CocoFileError(path, f"'{key}' is missing or not a list")
    required = {
        "images": (("id", (int, str)), ("file_name", str)),
        "annotations": (("image_id", (int, str)), ("category_id", (int, str)), ("bbox", list)),
        "categories": (("id", (int, str)), ("name", str)),
    }
    for key, fields in required.items():
        for index, entry in enumerate(dataset[key]):
            if not isinstance(entry, dict):
                raise CocoFileError(path, f"{key}[{index}] is not an object")
            for field, kind in fields:
                if not isinstance(entry.get(field), kind) or isinstance(entry.get(field), bool):
                    raise CocoFileError(path, f"{key}[{index}] has no valid '{field}'")
    for index, annotation in enumerate(dataset["annotations"]):
        bbox = annotation["bbox"]
        if len(bbox) != 4 or not all(_is_finite_number(value) for value in bbox):
            raise CocoFileError(path, f"annotations[{index}].bbox must be 4 finite numbers "
                                "[x, y, width, height]")


def _is_finite_number(value: object) -> bool:
    """A JSON number that is a finite float (a 400-digit integer is not: it overflows)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
