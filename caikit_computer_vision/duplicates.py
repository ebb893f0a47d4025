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
import torch

DUPLICATE_IOU = 0.2


def keep_best_of_duplicates(
    scores: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, iou: float = DUPLICATE_IOU
) -> torch.Tensor:
    """Indices (best score first) of the detections to keep; ``boxes`` are (x0, y0, x1, y1).

    Computed on the host whatever device the detections come from: there are at most a few
    hundred, and the greedy pass decides box by box (on a GPU, a host sync per box). The
    indices are returned on the detections' device.
    """
    device = scores.device
    scores, labels, boxes = scores.cpu(), labels.cpu(), boxes.cpu()
    order = scores.argsort(descending=True, stable=True)
    boxes, labels = boxes[order].float(), labels[order]
    areas = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(-1)
    overlaps = intersection / (areas[:, None] + areas[None, :] - intersection).clamp(min=1e-9)
    duplicate_of = (overlaps > iou) & (labels[:, None] == labels[None, :])
    kept = torch.ones(len(order), dtype=torch.bool)
    for index in range(len(order)):
        if kept[index]:
            # Everything after a kept box that duplicates it goes (greedy, like every NMS).
            later = duplicate_of[index].clone()
            later[: index + 1] = False
            kept &= ~later
    return order[kept].to(device)


def clip_to_image(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """``boxes`` (x0, y0, x1, y1) clipped to the image ``width`` x ``height``.

    Done before ``keep_best_of_duplicates`` so that duplicates are judged on the boxes the
    caller gets: a box reaching past the edge overlaps its twin less than its clipped self does.
    """
    limits = boxes.new_tensor([width, height, width, height])
    return torch.minimum(boxes.clamp(min=0), limits)
