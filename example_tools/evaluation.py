"""Mean average precision at an IoU threshold (mAP@0.5 by default), and a detector's score.

The usual VOC / COCO-style definition, written out plainly so a reader can check it by hand:

* per class, predictions are taken by decreasing score (ties keep their input order);
* each is matched to the unmatched ground-truth box of its class and image with the highest IoU;
  it is a true positive when that IoU is >= the threshold, otherwise a false positive (so a second
  detection of an already found object is a false positive);
* AP is the area under the precision/recall curve after replacing each precision by the best
  precision at any higher recall (all-point interpolation, the monotone envelope).

Choices where definitions differ: a class with ground truth but no predictions has AP 0. The mean
is over the classes that have ground truth: a prediction of a class the ground truth never has is a
false positive of that class, but that class has no AP (its recall is undefined), so it is not in
the mean; ``MapReport.labels_not_in_ground_truth`` lists such classes so they are not invisible.
Predictions for an image without ground truth are false positives too.
"""

# Standard
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

# Local
from caikit_computer_vision.label_format import LabelledBox
# One prediction's shape, defined where the client (which must not import caikit) can use it.
from example_tools.coco_evaluation import ScoredBox

DEFAULT_IOU_THRESHOLD: float = 0.5


class BoxLike(Protocol):
    """Anything with pixel box edges: LabelledBox, ScoredBox, the data model's BoundingBox."""

    @property
    def xmin(self) -> float: ...

    @property
    def xmax(self) -> float: ...

    @property
    def ymin(self) -> float: ...

    @property
    def ymax(self) -> float: ...


@dataclass(frozen=True)
class MapReport:
    """AP of each class that has ground truth, their mean, and predicted classes without any."""

    per_class: Dict[str, float]
    mean: float
    labels_not_in_ground_truth: Tuple[str, ...] = ()


def box_iou(first: BoxLike, second: BoxLike) -> float:
    """Intersection over union of two boxes; 0 when they do not overlap or have no area."""
    width = min(first.xmax, second.xmax) - max(first.xmin, second.xmin)
    height = min(first.ymax, second.ymax) - max(first.ymin, second.ymin)
    if width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    union = _area(first) + _area(second) - intersection
    return intersection / union if union > 0 else 0.0


def average_precision(
    ground_truth: Mapping[str, Sequence[LabelledBox]],
    predictions: Mapping[str, Sequence[ScoredBox]],
    label: str,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
) -> float:
    """AP of one class; both mappings go from image name to that image's boxes (all classes).

    Raises:
        ValueError: ``label`` has no ground-truth box, so its recall (and AP) is undefined.
    """
    truths = {
        image: [box for box in boxes if box.label == label] for image, boxes in ground_truth.items()
    }
    truth_count = sum(len(boxes) for boxes in truths.values())
    if truth_count == 0:
        raise ValueError(f"label {label!r} has no ground-truth box, so its AP is undefined")
    ranked = sorted(
        (
            (prediction, image)
            for image, image_predictions in predictions.items()
            for prediction in image_predictions
            if prediction.label == label
        ),
        key=lambda pair: -pair[0].score,
    )
    matched = {image: [False] * len(boxes) for image, boxes in truths.items()}
    true_positives = 0
    recalls: List[float] = []
    precisions: List[float] = []
    for rank, (prediction, image) in enumerate(ranked, start=1):
        match = _best_unmatched(prediction, truths.get(image, []), matched.get(image, []))
        if match is not None and match[1] >= iou_threshold:
            matched[image][match[0]] = True
            true_positives += 1
        recalls.append(true_positives / truth_count)
        precisions.append(true_positives / rank)
    for index in range(len(precisions) - 2, -1, -1):
        precisions[index] = max(precisions[index], precisions[index + 1])
    area = 0.0
    previous_recall = 0.0
    for recall, precision in zip(recalls, precisions):
        area += (recall - previous_recall) * precision
        previous_recall = recall
    return area


def mean_average_precision(
    ground_truth: Mapping[str, Sequence[LabelledBox]],
    predictions: Mapping[str, Sequence[ScoredBox]],
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
) -> MapReport:
    """AP of every class in ``ground_truth`` and their mean; mappings go from image name to boxes.

    Raises:
        ValueError: ``ground_truth`` holds no box, so there is nothing to measure.
    """
    truth_labels = sorted({box.label for boxes in ground_truth.values() for box in boxes})
    if not truth_labels:
        raise ValueError("the ground truth holds no box, so mAP is undefined")
    per_class = {
        label: average_precision(ground_truth, predictions, label, iou_threshold)
        for label in truth_labels
    }
    predicted_labels = {box.label for boxes in predictions.values() for box in boxes}
    return MapReport(
        per_class=per_class,
        mean=sum(per_class.values()) / len(per_class),
        labels_not_in_ground_truth=tuple(sorted(predicted_labels - set(truth_labels))),
    )


def evaluate_detector(
    module: Any,
    img_dir_path: str,
    labels_file: str,
    threshold: float = 0.0,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
) -> MapReport:
    """Run ``module`` on every image of a labelled set and return its mAP against the labels.

    ``module.run(image_bytes, threshold=threshold)`` must return an object with
    ``detected_objects``, each with ``label``, ``score`` and ``box.xmin/xmax/ymin/ymax`` (the
    shape of ``ObjectDetectionResult``). The default threshold of 0 keeps every detection: AP
    ranks by score itself, and cutting low scores off only lowers recall.

    Raises:
        ValueError: the set is invalid (see ``load_labelled_images``).
    """
    ground_truth, predictions = collect_predictions(module, img_dir_path, labels_file, threshold)
    return mean_average_precision(ground_truth, predictions, iou_threshold)


def collect_predictions(
    module: Any, img_dir_path: str, labels_file: str, threshold: float = 0.0
) -> Tuple[Dict[str, Sequence[LabelledBox]], Dict[str, Sequence[ScoredBox]]]:
    """Run ``module`` on every image of a labelled set; return (ground truth, predictions),
    both mappings from image name to boxes, ready for ``mean_average_precision``,
    ``coco_evaluation.coco_scores`` or ``duplicate_rate``.

    Raises:
        ValueError: the set is invalid (see ``load_labelled_images``).
    """
    # The library reads the set; imported here so that the mAP functions above stay usable
    # where caikit must not be imported (the demo client).
    # Local
    from caikit_computer_vision.labelled_images import load_labelled_images

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
    ground_truth: Mapping[str, Sequence[LabelledBox]],
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


def _best_unmatched(
    prediction: ScoredBox, truths: Sequence[LabelledBox], matched: Sequence[bool]
) -> Optional[Tuple[int, float]]:
    """Index and IoU of the unmatched truth that ``prediction`` overlaps most, if any is left."""
    best: Optional[Tuple[int, float]] = None
    for index, truth in enumerate(truths):
        if matched[index]:
            continue
        iou = box_iou(prediction, truth)
        if best is None or iou > best[1]:
            best = (index, iou)
    return best


def _area(box: BoxLike) -> float:
    return max(box.xmax - box.xmin, 0.0) * max(box.ymax - box.ymin, 0.0)
