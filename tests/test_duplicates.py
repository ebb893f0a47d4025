"""Class-aware duplicate suppression: one box per object, separate objects kept."""

# Third Party
import torch

# Local
from caikit_computer_vision.duplicates import keep_best_of_duplicates


def _keep(scores, labels, boxes):
    kept = keep_best_of_duplicates(
        torch.tensor(scores), torch.tensor(labels), torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    )
    return kept.tolist()


def test_overlapping_boxes_of_one_label_keep_only_the_best_scoring():
    # IoU of the first two: 90 / 110 > 0.5.
    assert _keep([0.6, 0.9], [0, 0], [[0, 0, 10, 10], [1, 0, 11, 10]]) == [1]


def test_overlapping_boxes_of_different_labels_are_both_kept():
    assert _keep([0.6, 0.9], [0, 1], [[0, 0, 10, 10], [1, 0, 11, 10]]) == [1, 0]


def test_boxes_that_barely_overlap_are_separate_objects():
    # IoU 25 / 175 < 0.5.
    assert _keep([0.6, 0.9, 0.7], [0, 0, 0], [[0, 0, 10, 10], [5, 5, 15, 15], [40, 40, 50, 50]]) \
        == [1, 2, 0]


def test_a_chain_is_cut_by_the_kept_boxes_only():
    # b overlaps a and c; a is kept, b goes, so c (which overlaps only b) stays.
    boxes = [[0, 0, 10, 10], [3, 0, 13, 10], [7, 0, 17, 10]]
    assert _keep([0.9, 0.8, 0.7], [0, 0, 0], boxes) == [0, 2]


def test_no_detections_keep_nothing():
    assert _keep([], [], []) == []
