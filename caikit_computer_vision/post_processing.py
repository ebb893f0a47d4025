"""What transformers' ``YolosImageProcessor.post_process_object_detection`` computes for one
image, in numpy, bit for bit.

Why: while requests are served concurrently, every torch operation called from Python releases
the GIL and then waits to take it back, and with several request threads waiting that is a
hand-over to another thread and back, two context switches. The processor's post-processing is
about twenty tiny operations an image (softmax, max, box corners, scaling, three masks), and the
duplicate removal as many again: with 8 clients of the demo model they were a third of the
runtime's context switches (about 90 -> 63 a request), and its CPU a request went from 3.0 to
2.2 ms without them (docs/performance.md, "Post-processing without GIL hand-overs"). numpy
keeps the GIL on arrays this small.

Why the same bits: the softmax is still torch's (one operation); the rest are the same IEEE
float32 operations in the same order (differences, halvings, products, clamps, comparisons with
the threshold as float32, and max / first arg-max, which are exact), so the scores, labels and
boxes equal the processor's bit for bit. tests/test_post_processing.py compares them on random
outputs.
"""

# Standard
from typing import NamedTuple

# Third Party
import numpy as np
import torch


class ImageDetections(NamedTuple):
    """One image's detections above a threshold, in token order."""

    scores: np.ndarray  # (n,) float32
    labels: np.ndarray  # (n,) int64 class ids
    boxes: np.ndarray  # (n, 4) float32 (x0, y0, x1, y1) in the processed image's pixels


def post_process(
    logits: torch.Tensor, boxes: torch.Tensor, threshold: float, height: int, width: int
) -> ImageDetections:
    """The detections of one image from its row of a forward pass on the host: ``logits``
    (1, tokens, classes + 1) and ``boxes`` (1, tokens, 4; centre x, centre y, width, height,
    relative), scaled to the ``height`` x ``width`` image the processor made."""
    with torch.inference_mode():
        probabilities = torch.nn.functional.softmax(logits[0], -1).numpy()
    centres = boxes[0].numpy()
    classes = probabilities[:, :-1]  # the last class is "no object"
    scores, labels = classes.max(-1), classes.argmax(-1)
    above = scores > np.float32(threshold)
    scores, labels, centres = scores[above], labels[above], centres[above]
    centre_x, centre_y, box_width, box_height = centres.T
    corners = np.stack(
        [
            centre_x - 0.5 * box_width,
            centre_y - 0.5 * box_height,
            centre_x + 0.5 * box_width,
            centre_y + 0.5 * box_height,
        ],
        axis=-1,
    )
    scale = np.array([width, height, width, height], dtype=np.float32)
    return ImageDetections(scores, labels.astype(np.int64, copy=False), corners * scale)
