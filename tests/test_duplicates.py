"""Class-aware duplicate suppression: one box per object, separate objects kept."""

# Third Party
import numpy as np

# Local
from caikit_computer_vision.duplicates import clip_to_image, keep_best_of_duplicates


def _keep(scores, labels, boxes):
    kept = keep_best_of_duplicates(
        np.array(scores, dtype=np.float32),
        np.array(labels, dtype=np.int64),
        np.array(boxes, dtype=np.float32).reshape(-1, 4),
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


def test_clip_to_image_keeps_boxes_inside_the_image():
    boxes = np.array([[-5.0, 2.0, 30.0, 12.0], [3.0, -1.0, 8.0, 50.0]], dtype=np.float32)
    assert clip_to_image(boxes, 20, 16).tolist() == [[0.0, 2.0, 20.0, 12.0], [3.0, 0.0, 8.0, 16.0]]


def test_boxes_that_overlap_only_once_clipped_are_duplicates():
    """One box on a 10 x 10 object at the right edge, one reaching far past the edge: apart
    they overlap 100 / 600 (two objects), clipped to the 10 px wide image they are the same
    box (what the caller would get twice)."""
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 60.0, 10.0]], dtype=np.float32)
    scores, labels = np.array([0.9, 0.8], dtype=np.float32), np.array([0, 0])
    assert keep_best_of_duplicates(scores, labels, boxes).tolist() == [0, 1]
    assert keep_best_of_duplicates(scores, labels, clip_to_image(boxes, 10, 10)).tolist() == [0]
