"""COCO's own detection metrics, mAP@[.5:.95] and mAP@.5, computed by pycocotools.

``evaluation.py`` writes mAP@0.5 out plainly so a reader can follow it; this module asks the
reference implementation for the same number (and the stricter COCO average over IoU 0.5 to
0.95), and tests check that the two agree. Imports neither caikit nor the library, so the demo
client, which must not import caikit (see ``vision_client``), scores models with it too.

Boxes are duck-typed: anything with ``label``, ``xmin``, ``xmax``, ``ymin``, ``ymax`` in pixels
(and ``score`` for predictions), such as ``LabelledBox`` or ``ScoredBox`` below.
"""

# Standard
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence
import contextlib
import io
import json

# Third Party
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@dataclass(frozen=True)
class ScoredBox:
    """One prediction: a label with the detector's score and a box in pixels."""

    label: str
    score: float
    xmin: float
    xmax: float
    ymin: float
    ymax: float


@dataclass(frozen=True)
class Box:
    """A ground-truth box read from a COCO file."""

    label: str
    xmin: float
    xmax: float
    ymin: float
    ymax: float


@dataclass(frozen=True)
class CocoScores:
    """COCO's headline figures: mAP over IoU 0.50:0.05:0.95, and at IoU 0.5 alone."""

    map_50_95: float
    map_50: float


def read_coco_ground_truth(path: str) -> Dict[str, List[Box]]:
    """Boxes of a COCO detection file by image file name (crowd annotations left out)."""
    with open(path, encoding="utf-8-sig") as coco_file:
        dataset = json.load(coco_file)
    names = {category["id"]: category["name"] for category in dataset["categories"]}
    files = {image["id"]: image["file_name"] for image in dataset["images"]}
    boxes: Dict[str, List[Box]] = {name: [] for name in files.values()}
    for annotation in dataset["annotations"]:
        if annotation.get("iscrowd", 0):
            continue
        x, y, width, height = annotation["bbox"]
        boxes[files[annotation["image_id"]]].append(
            Box(names[annotation["category_id"]], x, x + width, y, y + height)
        )
    return boxes


def coco_scores(
    ground_truth: Mapping[str, Sequence[Any]], predictions: Mapping[str, Sequence[Any]]
) -> CocoScores:
    """Score ``predictions`` against ``ground_truth`` (both: image name -> boxes) with COCOeval.

    Predictions of a label the ground truth never has count for no category, as in
    ``evaluation.mean_average_precision``. At most 100 predictions per image count (COCO's
    maxDets): keep the best-scoring ones.

    Raises:
        ValueError: the ground truth holds no box.
    """
    labels = sorted({box.label for boxes in ground_truth.values() for box in boxes})
    if not labels:
        raise ValueError("the ground truth holds no box, so mAP is undefined")
    category_ids = {label: index for index, label in enumerate(labels, start=1)}
    image_ids = {name: index for index, name in enumerate(ground_truth, start=1)}
    annotations = [
        {
            "id": number,
            "image_id": image_ids[name],
            "category_id": category_ids[box.label],
            "bbox": _xywh(box),
            "area": (box.xmax - box.xmin) * (box.ymax - box.ymin),
            "iscrowd": 0,
        }
        for number, (name, box) in enumerate(
            ((name, box) for name, boxes in ground_truth.items() for box in boxes), start=1
        )
    ]
    detections = [
        {
            "image_id": image_ids[name],
            "category_id": category_ids[box.label],
            "bbox": _xywh(box),
            "score": float(box.score),
        }
        for name, boxes in predictions.items()
        if name in image_ids
        for box in boxes
        if box.label in category_ids
    ]
    truth = COCO()
    truth.dataset = {
        "images": [{"id": index} for index in image_ids.values()],
        "annotations": annotations,
        "categories": [{"id": index, "name": label} for label, index in category_ids.items()],
    }
    # pycocotools reports its progress with print(); the caller prints what matters.
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        if not detections:
            return CocoScores(0.0, 0.0)
        evaluation = COCOeval(truth, truth.loadRes(detections), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # stats[0]: AP @[.50:.95], all areas, 100 dets; stats[1]: AP @.50. -1 means "no data".
    return CocoScores(max(float(evaluation.stats[0]), 0.0), max(float(evaluation.stats[1]), 0.0))


def _xywh(box: Any) -> List[float]:
    return [float(box.xmin), float(box.ymin), float(box.xmax - box.xmin), float(box.ymax - box.ymin)]
