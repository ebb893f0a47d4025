"""How good a detector is: COCO's mAP, computed by pycocotools, and how often it repeats a box.

Imports neither caikit nor torch (the library's readers it uses are pure), so the demo client,
which must not import caikit (see ``vision_client``), scores models with it too.

Boxes are duck-typed: anything with ``label``, ``xmin``, ``xmax``, ``ymin``, ``ymax`` in pixels
(and ``score`` for predictions), such as the library's ``LabelledBox`` or ``ScoredBox`` below.
"""

# Standard
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple
import contextlib
import io

# Third Party
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# Local
from caikit_computer_vision.coco_format import read_coco_boxes
from caikit_computer_vision.label_format import LabelledBox
from caikit_computer_vision.labelled_images import load_labelled_images

# The IoU from which a prediction counts as finding an object (COCO's AP50, the demo's figure).
DEFAULT_IOU_THRESHOLD: float = 0.5


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
class CocoScores:
    """COCO's headline figures: mAP over IoU 0.50:0.05:0.95, and at IoU 0.5 alone."""

    map_50_95: float
    map_50: float


def box_iou(first: Any, second: Any) -> float:
    """Intersection over union of two boxes; 0 when they do not overlap or have no area."""
    width = min(first.xmax, second.xmax) - max(first.xmin, second.xmin)
    height = min(first.ymax, second.ymax) - max(first.ymin, second.ymin)
    if width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    union = _area(first) + _area(second) - intersection
    return intersection / union if union > 0 else 0.0


def read_coco_ground_truth(path: str) -> Dict[str, List[LabelledBox]]:
    """Boxes of a COCO detection file by image file name, read and checked as training reads
    them (``coco_format.read_coco_boxes``: crowd and empty boxes left out); an image without a
    box is not listed."""
    boxes: Dict[str, List[LabelledBox]] = {}
    for _, box, _ in read_coco_boxes(path):
        boxes.setdefault(box.image, []).append(box)
    return boxes


def coco_scores(
    ground_truth: Mapping[str, Sequence[Any]], predictions: Mapping[str, Sequence[Any]]
) -> CocoScores:
    """Score ``predictions`` against ``ground_truth`` (both: image name -> boxes) with COCOeval.

    Predictions of a label the ground truth never has, or of an image it does not list, count
    for nothing. At most 100 predictions per image count (COCO's maxDets): keep the
    best-scoring ones.

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
            "area": _area(box),
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


def collect_predictions(
    module: Any, img_dir_path: str, labels_file: str, threshold: float = 0.0
) -> Tuple[Dict[str, Sequence[LabelledBox]], Dict[str, Sequence[ScoredBox]]]:
    """Run ``module`` on every image of a labelled set; return (ground truth, predictions),
    both mappings from image name to boxes, ready for ``coco_scores`` or ``duplicate_rate``.

    ``module.run(image_bytes, threshold=threshold)`` must return an object with
    ``detected_objects``, each with ``label``, ``score`` and ``box.xmin/xmax/ymin/ymax`` (the
    shape of ``ObjectDetectionResult``). The default threshold of 0 keeps every detection: AP
    ranks by score itself, and cutting low scores off only lowers recall.

    Raises:
        ValueError: the set is invalid (see ``load_labelled_images``).
    """
    ground_truth: Dict[str, Sequence[LabelledBox]] = {}
    predictions: Dict[str, Sequence[ScoredBox]] = {}
    for image in load_labelled_images(img_dir_path, labels_file):
        name = image.boxes[0].image
        ground_truth[name] = image.boxes
        result = module.run(image.path.read_bytes(), threshold=threshold)
        predictions[name] = [
            ScoredBox(
                label=detected.label,
                score=float(detected.score),
                xmin=float(detected.box.xmin),
                xmax=float(detected.box.xmax),
                ymin=float(detected.box.ymin),
                ymax=float(detected.box.ymax),
            )
            for detected in result.detected_objects
        ]
    return ground_truth, predictions


def duplicate_rate(
    ground_truth: Mapping[str, Sequence[Any]],
    predictions: Mapping[str, Sequence[ScoredBox]],
    threshold: float,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
) -> float:
    """Boxes scoring above ``threshold`` per real object beyond the first, averaged over objects.

    For each ground-truth object, count the predictions of its label above ``threshold`` that
    overlap it with IoU >= ``iou_threshold``; every one after the first is a duplicate. 0 means
    at most one box per object, the goal; 1 would mean two boxes for every object.

    Raises:
        ValueError: ``ground_truth`` holds no box.
    """
    objects = [(image, box) for image, boxes in ground_truth.items() for box in boxes]
    if not objects:
        raise ValueError("the ground truth holds no box, so the duplicate rate is undefined")
    extra = 0
    for image, truth in objects:
        found = sum(
            1
            for prediction in predictions.get(image, ())
            if prediction.label == truth.label
            and prediction.score > threshold
            and box_iou(prediction, truth) >= iou_threshold
        )
        extra += max(found - 1, 0)
    return extra / len(objects)


def _area(box: Any) -> float:
    return max(box.xmax - box.xmin, 0.0) * max(box.ymax - box.ymin, 0.0)


def _xywh(box: Any) -> List[float]:
    return [
        float(box.xmin), float(box.ymin), float(box.xmax - box.xmin), float(box.ymax - box.ymin)
    ]
