"""Tests of mAP on hand-made cases whose answers are worked out in the comments."""

# Standard
from types import SimpleNamespace
from typing import Dict, List

# Third Party
from PIL import Image
import pytest

# Local
from example_tools.evaluation import (
    MapReport,
    ScoredBox,
    average_precision,
    box_iou,
    evaluate_detector,
    mean_average_precision,
)
from caikit_computer_vision.label_format import LabelledBox, write_labels_file

CAT = LabelledBox("a.jpg", "cat", 0, 10, 0, 10)
DOG = LabelledBox("a.jpg", "dog", 20, 30, 20, 30)


def hit(truth: LabelledBox, score: float, label: str = "") -> ScoredBox:
    """A prediction exactly on ``truth`` (IoU 1), of its label unless ``label`` is given."""
    return ScoredBox(label or truth.label, score, truth.xmin, truth.xmax, truth.ymin, truth.ymax)


def miss(label: str, score: float) -> ScoredBox:
    """A prediction far from every ground-truth box of these tests (IoU 0)."""
    return ScoredBox(label, score, 100, 110, 100, 110)


def test_box_iou_of_overlapping_disjoint_and_touching_boxes():
    # Overlap 5x10 = 50; union 100 + 100 - 50 = 150.
    assert box_iou(CAT, LabelledBox("a.jpg", "cat", 5, 15, 0, 10)) == pytest.approx(1 / 3)
    assert box_iou(CAT, DOG) == 0.0
    assert box_iou(CAT, LabelledBox("a.jpg", "cat", 10, 20, 0, 10)) == 0.0
    assert box_iou(CAT, CAT) == 1.0


def test_perfect_predictions_score_one():
    predictions = {"a.jpg": [hit(CAT, 0.9), hit(DOG, 0.8)]}
    report = mean_average_precision({"a.jpg": [CAT, DOG]}, predictions)
    assert report == MapReport(per_class={"cat": 1.0, "dog": 1.0}, mean=1.0)


def test_no_predictions_score_zero():
    report = mean_average_precision({"a.jpg": [CAT, DOG]}, {})
    assert report == MapReport(per_class={"cat": 0.0, "dog": 0.0}, mean=0.0)


def test_true_positive_then_false_positive_scores_one():
    # Ranked: TP (R=1, P=1), FP (R=1, P=1/2). Envelope at R=1 is max(1, 1/2) = 1; AP = 1 * 1.
    predictions = {"a.jpg": [miss("cat", 0.8), hit(CAT, 0.9)]}
    assert average_precision({"a.jpg": [CAT]}, predictions, "cat") == pytest.approx(1.0)


def test_false_positive_then_true_positive_scores_one_half():
    # Ranked: FP (R=0, P=0), TP (R=1, P=1/2). The recall step 0 -> 1 has precision 1/2.
    predictions = {"a.jpg": [hit(CAT, 0.8), miss("cat", 0.9)]}
    assert average_precision({"a.jpg": [CAT]}, predictions, "cat") == pytest.approx(0.5)


def test_precision_envelope_uses_best_precision_at_higher_recall():
    # Two cats. Ranked: FP (R=0, P=0), TP (R=1/2, P=1/2), TP (R=1, P=2/3). The envelope lifts
    # the precision at R=1/2 to 2/3, so AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3 (the raw curve: 7/12).
    other_cat = LabelledBox("a.jpg", "cat", 40, 50, 40, 50)
    predictions = {"a.jpg": [miss("cat", 0.9), hit(CAT, 0.8), hit(other_cat, 0.7)]}
    ap = average_precision({"a.jpg": [CAT, other_cat]}, predictions, "cat")
    assert ap == pytest.approx(2 / 3)


def test_second_detection_of_the_same_object_is_a_false_positive():
    # Two cats; the first is found twice. Ranked: TP (R=1/2, P=1), duplicate FP (R=1/2, P=1/2),
    # TP (R=1, P=2/3). AP = 1/2 * 1 + 1/2 * 2/3 = 5/6 (it would be 1 if duplicates were ignored).
    other_cat = LabelledBox("a.jpg", "cat", 40, 50, 40, 50)
    predictions = {"a.jpg": [hit(CAT, 0.9), hit(CAT, 0.8), hit(other_cat, 0.7)]}
    ap = average_precision({"a.jpg": [CAT, other_cat]}, predictions, "cat")
    assert ap == pytest.approx(5 / 6)


@pytest.mark.parametrize(
    "ymax, expected_ap",
    [
        # The prediction covers the top of CAT: IoU = (10 * ymax) / 100.
        (4.9, 0.0),  # IoU 0.49: below 0.5, a false positive
        (5.0, 1.0),  # IoU 0.50 exactly: at the threshold counts
        (5.1, 1.0),  # IoU 0.51
    ],
)
def test_iou_threshold_decides_true_positive(ymax, expected_ap):
    prediction = ScoredBox("cat", 0.9, 0, 10, 0, ymax)
    ap = average_precision({"a.jpg": [CAT]}, {"a.jpg": [prediction]}, "cat")
    assert ap == pytest.approx(expected_ap)


def test_iou_threshold_is_a_parameter():
    # IoU 0.51 passes at 0.5 but not at 0.75.
    predictions = {"a.jpg": [ScoredBox("cat", 0.9, 0, 10, 0, 5.1)]}
    assert mean_average_precision({"a.jpg": [CAT]}, predictions, iou_threshold=0.75).mean == 0.0


def test_prediction_is_matched_to_the_ground_truth_it_overlaps_most():
    # Cats at x 0-10 and x 4-14 (IoU 60/140 = 0.43). The first prediction (x 3-13) overlaps them
    # with IoU 70/130 = 0.54 and 90/110 = 0.82: it takes the second. The next one is exactly
    # on the first cat: TP too, AP 1. Taking the first cat over 0.5 instead would leave the
    # second prediction only IoU 0.43 with the second cat: a false positive and AP 1/2.
    second_cat = LabelledBox("a.jpg", "cat", 4, 14, 0, 10)
    predictions = {"a.jpg": [ScoredBox("cat", 0.9, 3, 13, 0, 10), hit(CAT, 0.8)]}
    ap = average_precision({"a.jpg": [CAT, second_cat]}, predictions, "cat")
    assert ap == pytest.approx(1.0)


def test_boxes_only_match_within_the_same_image():
    # Ranked: the cat box predicted on b.jpg (no cats there) is a FP, then the TP on a.jpg.
    predictions = {"b.jpg": [hit(CAT, 0.9)], "a.jpg": [hit(CAT, 0.8)]}
    ap = average_precision({"a.jpg": [CAT], "b.jpg": []}, predictions, "cat")
    assert ap == pytest.approx(0.5)


def test_mean_is_the_average_over_ground_truth_classes():
    # cat: one TP, AP 1. dog: FP then TP, AP 1/2. Mean (1 + 1/2) / 2 = 3/4.
    predictions = {"a.jpg": [hit(CAT, 0.9), miss("dog", 0.8), hit(DOG, 0.7)]}
    report = mean_average_precision({"a.jpg": [CAT, DOG]}, predictions)
    assert report.per_class == pytest.approx({"cat": 1.0, "dog": 0.5})
    assert report.mean == pytest.approx(0.75)


def test_class_absent_from_ground_truth_is_reported_but_not_averaged():
    # The cat is called a bird: cat AP 0; "bird" has no ground truth, so no AP and not in the mean.
    report = mean_average_precision({"a.jpg": [CAT]}, {"a.jpg": [hit(CAT, 0.9, label="bird")]})
    assert report == MapReport(
        per_class={"cat": 0.0}, mean=0.0, labels_not_in_ground_truth=("bird",)
    )


def test_average_precision_of_a_class_without_ground_truth_is_an_error():
    with pytest.raises(ValueError, match="'bird' has no ground-truth box"):
        average_precision({"a.jpg": [CAT]}, {}, "bird")


def test_mean_average_precision_of_empty_ground_truth_is_an_error():
    with pytest.raises(ValueError, match="holds no box"):
        mean_average_precision({"a.jpg": []}, {})


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


def test_evaluate_detector_runs_the_module_on_each_image_file(tmp_path):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for name, colour in (("a.jpg", (200, 30, 30)), ("b.jpg", (30, 30, 200))):
        Image.new("RGB", (64, 64), colour).save(image_dir / name, format="JPEG", quality=90)
    cat = LabelledBox("a.jpg", "cat", 0, 10, 0, 10)
    dog = LabelledBox("b.jpg", "dog", 20, 30, 20, 30)
    labels_file = tmp_path / "labels.txt"
    write_labels_file(str(labels_file), [cat, dog])
    # a.jpg: the cat found (cat AP 1). b.jpg: a missed dog, then the dog (dog AP 1/2). Mean 3/4.
    detector = FakeDetector(
        {
            (image_dir / "a.jpg").read_bytes(): [hit(cat, 0.9)],
            (image_dir / "b.jpg").read_bytes(): [miss("dog", 0.8), hit(dog, 0.7)],
        }
    )
    report = evaluate_detector(detector, str(image_dir), str(labels_file), threshold=0.25)
    assert report.per_class == pytest.approx({"cat": 1.0, "dog": 0.5})
    assert report.mean == pytest.approx(0.75)
    assert detector.thresholds == [0.25, 0.25]
