"""post_processing.post_process gives transformers' post-processing bit for bit."""

# Third Party
from transformers.models.yolos.image_processing_pil_yolos import YolosImageProcessorPil
from transformers.models.yolos.modeling_yolos import YolosObjectDetectionOutput
import numpy as np
import pytest
import torch

# Local
from caikit_computer_vision.post_processing import post_process

PROCESSOR = YolosImageProcessorPil()


def _processors_answer(logits, boxes, threshold, height, width):
    with torch.inference_mode():
        found = PROCESSOR.post_process_object_detection(
            YolosObjectDetectionOutput(logits=logits, pred_boxes=boxes),
            threshold=threshold,
            target_sizes=[(height, width)],
        )[0]
    return found["scores"].numpy(), found["labels"].numpy(), found["boxes"].numpy()


def _assert_same_bits(logits, boxes, threshold, height, width):
    expected = _processors_answer(logits, boxes, threshold, height, width)
    got = post_process(logits, boxes, threshold, height, width)
    for name, want, have in zip(("scores", "labels", "boxes"), expected, got):
        assert have.dtype == want.dtype, name
        assert have.shape == want.shape, name
        # Bits, not closeness: equal_nan for rows the processor also keeps as NaN.
        assert np.array_equal(have, want, equal_nan=True), (name, threshold, have, want)


@pytest.mark.parametrize("seed", range(40))
def test_random_outputs_give_the_processors_bits(seed):
    generator = torch.Generator().manual_seed(seed)
    tokens = int(torch.randint(1, 150, (1,), generator=generator))
    classes = int(torch.randint(1, 6, (1,), generator=generator)) + 1
    spread = float(torch.rand(1, generator=generator)) * 10
    logits = torch.randn(1, tokens, classes, generator=generator) * spread
    # Some boxes reach past the image, as untrained models' do.
    boxes = torch.rand(1, tokens, 4, generator=generator) * 1.4 - 0.2
    height, width = (int(side) for side in torch.randint(1, 2000, (2,), generator=generator))
    probabilities = torch.softmax(logits[0], -1)[:, :-1].max(-1).values
    # Thresholds at a score: equal to it, and just below it in double precision but equal in
    # float32, the precision the processor compares in (so that score is out both times).
    score = float(probabilities[tokens // 2])
    for threshold in (0.0, 0.05, 0.5, 0.9, score, score - 1e-12):
        _assert_same_bits(logits, boxes, threshold, height, width)


def test_ties_nans_and_no_detections_give_the_processors_bits():
    logits = torch.tensor([[[1.0, 1.0, 0.0], [float("nan"), 0.0, 0.0], [0.0, 2.0, 2.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.3, 0.3], [0.9, 0.9, 0.5, 0.5]]])
    for threshold in (0.0, 0.3, 0.99):
        _assert_same_bits(logits, boxes, threshold, 480, 640)
    assert len(post_process(logits, boxes, 0.99, 480, 640).scores) == 0
