"""Class-aware non-maximum suppression: at most one box per object in ``run``'s answer.

DETR-style training matches each object to one detection token, which in principle makes
duplicates unnecessary; a model as small as the demo's (10 tokens, 2 layers) still lets two
tokens find the same object, and the demo used to answer five to nine overlapping boxes for
one square; and the training's one-to-many matching (training.Recipe) teaches several tokens
to find each object on purpose, because that trains faster. Keeping, per label, only the
best-scoring of boxes that overlap more than ``DUPLICATE_IOU`` removes those.

Why 0.2 and not the usual 0.5: two boxes that each overlap one object with IoU >= 0.5 (both
"found it" for mAP@0.5) can overlap each other far less, one shifted each way: measured on
the demo's held-out set, 0.08-0.23 extra boxes per object survived at 0.5, and at 0.3 one in
135 objects still got two "cat" boxes 0.52 and 0.55 from it but 0.25 from each other. The
cost: two real objects of one label overlapping more than 0.2 lose the weaker box. Generated
objects never overlap above 0.1; for crowded real data, raise it.
"""

# Third Party
import numpy as np

DUPLICATE_IOU = 0.2


def keep_best_of_duplicates(
    scores: np.ndarray, labels: np.ndarray, boxes: np.ndarray, iou: float = DUPLICATE_IOU
) -> np.ndarray:
    """Indices (best score first) of the detections to keep; ``boxes`` are (x0, y0, x1, y1).

    numpy on the host: there are at most a few hundred detections, the greedy pass decides box
    by box, and numpy keeps the GIL on arrays this small where each torch operation would hand
    it to another request's thread and wait to get it back (post_processing.py). Overlaps are
    float32, like the boxes.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, labels = boxes[order].astype(np.float32, copy=False), labels[order]
    sides = np.maximum(boxes[:, 2:] - boxes[:, :2], np.float32(0))
    areas = sides[:, 0] * sides[:, 1]
    top_left = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    overlap_sides = np.maximum(bottom_right - top_left, np.float32(0))
    intersection = overlap_sides[..., 0] * overlap_sides[..., 1]
    union = np.maximum(areas[:, None] + areas[None, :] - intersection, np.float32(1e-9))
    duplicate_of = (intersection / union > np.float32(iou)) & (labels[:, None] == labels[None, :])
    kept = np.ones(len(order), dtype=bool)
    for index in range(len(order)):
        if kept[index]:
            # Everything after a kept box that duplicates it goes (greedy, like every NMS).
            kept[index + 1 :] &= ~duplicate_of[index, index + 1 :]
    return order[kept]


def clip_to_image(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """``boxes`` (x0, y0, x1, y1, float32) clipped to the image ``width`` x ``height``.

    Done before ``keep_best_of_duplicates`` so that duplicates are judged on the boxes the
    caller gets: a box reaching past the edge overlaps its twin less than its clipped self does.
    """
    limits = np.array([width, height, width, height], dtype=np.float32)
    return np.minimum(np.maximum(boxes, np.float32(0)), limits)
