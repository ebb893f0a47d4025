"""Scoring a detector: pycocotools' mAP as we feed it, IoU, duplicates, predictions collected."""

# Standard
from types import SimpleNamespace
from typing import Dict, List

# Third Party
from PIL import Image
import pytest

# Local
from caikit_computer_vision.label_format import LabelledBox, write_labels_file
from example_tools.evaluation import (
    ScoredBox,
    box_iou,
    coco_scores,
    collect_predictions,
    duplicate_rate,
)

CAT = LabelledBox("a.jpg", "cat", 0, 10, 0, 10)
DOG = LabelledBox("a.jpg", "dog", 20, 30, 20, 30)


def hit(truth: LabelledBox, score: float, label: str = "") -> ScoredBox:
    """A prediction exactly on ``truth`` (IoU 1), of its label unless ``label`` is given."""
    return ScoredBox(label or truth.label, score, truth.xmin, truth.xmax, truth.ymin, truth.ymax)


def miss(label: str, score: float) -> ScoredBox:
    """A prediction far from every ground-truth box of these tests (IoU 0)."""
    return ScoredBox(label, score, 100, 110, 100, 110)


def test_box_iou_of_overlapping_disjoint_and_touching_boxes():
    # 10x10 boxes sharing a 5x10 strip: 50 / (100 + 100 - 50).
    assert box_iou(CAT, LabelledBox("a.jpg", "cat", 5, 15, 0, 10)) == pytest.approx(1 / 3)
    assert box_iou(CAT, DOG) == 0.0
    assert box_iou(CAT, LabelledBox("a.jpg", "cat", 10, 20, 0, 10)) == 0.0
    assert box_iou(CAT, CAT) == 1.0
    assert box_iou(CAT, LabelledBox("a.jpg", "cat", 3, 3, 0, 10)) == 0.0


def test_perfect_predictions_score_one_and_none_score_zero():
    perfect = coco_scores({"a.jpg": [CAT, DOG]}, {"a.jpg": [hit(CAT, 0.9), hit(DOG, 0.8)]})
    assert perfect.map_50 == pytest.approx(1.0) and perfect.map_50_95 == pytest.approx(1.0)
    assert coco_scores({"a.jpg": [CAT, DOG]}, {}) == (coco_scores({"a.jpg": [CAT]}, {}))
    assert coco_scores({"a.jpg": [CAT]}, {}).map_50 == 0.0


def test_a_missed_class_halves_the_mean():
    # cat found (AP 1), dog never (AP 0): the mean over the ground truth's two classes.
    scores = coco_scores({"a.jpg": [CAT, DOG]}, {"a.jpg": [hit(CAT, 0.9), miss("dog", 0.9)]})
    assert scores.map_50 == pytest.approx(0.5)


def test_labels_and_images_the_ground_truth_lacks_count_for_nothing():
    truth = {"a.jpg": [CAT]}
    extra = {"a.jpg": [hit(CAT, 0.9), hit(CAT, 0.95, label="bird")], "z.jpg": [hit(CAT, 0.99)]}
    assert coco_scores(truth, extra).map_50 == pytest.approx(1.0)


def test_empty_ground_truth_is_an_error():
    with pytest.raises(ValueError, match="holds no box"):
        coco_scores({"a.jpg": []}, {})


def test_duplicate_rate_counts_boxes_beyond_the_first_per_object():
    on_cat = ScoredBox("cat", 0.9, 0, 10, 0, 10)
    predictions = {"a.jpg": [on_cat, on_cat, ScoredBox("cat", 0.8, 1, 10, 0, 10),
                             ScoredBox("cat", 0.3, 0, 10, 0, 10),
                             ScoredBox("dog", 0.9, 20, 30, 20, 30)]}
    # The cat has three boxes above 0.5 (two extra), the dog one: 2 extra / 2 objects.
    assert duplicate_rate({"a.jpg": [CAT, DOG]}, predictions, threshold=0.5) == 1.0
    assert duplicate_rate({"a.jpg": [CAT, DOG]}, predictions, threshold=0.85) == 0.5


class FakeDetector:
    """Answers ``run`` from a table keyed by image bytes, in ObjectDetectionResult's shape."""

    def __init__(self, answers: Dict[bytes, List[ScoredBox]]):
        self.answers = answers
        self.thresholds: List[float] = []

    def run(self, image_bytes: bytes, threshold: float) -> SimpleNamespace:
        self.thresholds.append(threshold)
        return SimpleNamespace(
            detected_objects=[
                SimpleNamespace(
                    label=box.label,
                    score=box.score,
                    box=SimpleNamespace(xmin=box.xmin, xmax=box.xmax, ymin=box.ymin, ymax=box.ymax),
                )
                for box in self.answers[image_bytes]
            ]
        )


def test_collect_predictions_runs_the_module_on_each_image_file(tmp_path):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for name, colour in (("a.jpg", (200, 30, 30)), ("b.jpg", (30, 30, 200))):
        Image.new("RGB", (64, 64), colour).save(image_dir / name, format="JPEG", quality=90)
    cat = LabelledBox("a.jpg", "cat", 0, 10, 0, 10)
    dog = LabelledBox("b.jpg", "dog", 20, 30, 20, 30)
    labels_file = tmp_path / "labels.txt"
    write_labels_file(str(labels_file), [cat, dog])
    answers = {
        (image_dir / "a.jpg").read_bytes(): [hit(cat, 0.9)],
        (image_dir / "b.jpg").read_bytes(): [miss("dog", 0.8), hit(dog, 0.7)],
    }
    detector = FakeDetector(answers)
    ground_truth, predictions = collect_predictions(
        detector, str(image_dir), str(labels_file), threshold=0.25
    )
    assert ground_truth == {"a.jpg": (cat,), "b.jpg": (dog,)}
    assert predictions == {"a.jpg": [hit(cat, 0.9)], "b.jpg": [miss("dog", 0.8), hit(dog, 0.7)]}
    assert detector.thresholds == [0.25, 0.25]
