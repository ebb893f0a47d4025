"""The forward pass as a checked TorchScript graph (caikit_computer_vision/traced_forward.py).

What serving relies on: a graph's answer is the eager pass's bit for bit, for every shape it is
used with; a shape is only run on the graph after one eager pass there gave the same answer; a
graph that answers otherwise, or a trace that fails, leaves the model answering eagerly.
"""

# Third Party
import pytest
import torch

# Local
from caikit_computer_vision import traced_forward
from caikit_computer_vision.detection import Detector
from caikit_computer_vision.traced_forward import TracedForward
from example_tools.tiny_yolos import build_tiny_yolos

from .conftest import encode_image, noise_image

# Sizes the demo model's processor turns into different pixel shapes (and one it shares).
SIZES = [(64, 64), (33, 200), (300, 120), (80, 60)]


@pytest.fixture(scope="module")
def model_and_processor():
    return build_tiny_yolos()


class EagerCalls:
    """Counts the model's eager passes (a forward hook does not run inside a graph)."""

    def __init__(self, model):
        self.count = 0
        self._handle = model.register_forward_pre_hook(self._seen)

    def _seen(self, *_args):
        self.count += 1

    def remove(self):
        self._handle.remove()


def _pixels(seed: int, shape=(1, 3, 32, 32)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_the_graph_answers_bit_for_bit_as_eager_for_every_shape_and_batch(model_and_processor):
    model, processor = model_and_processor
    traced = Detector(model, processor, torch.device("cpu"), traced=True)
    eager = Detector(model, processor, torch.device("cpu"))
    prepared = [
        traced.prepare(encode_image(noise_image(width, height, seed=index)))
        for index, (width, height) in enumerate(SIZES)
    ]
    assert len({image.shape for image in prepared}) >= 3
    for image in prepared:
        for batch in ([image], [image] * 3):
            for _ in range(2):  # the first pass checks the shape, the second runs the graph
                for mine, theirs in zip(traced.forward(batch), eager.forward(batch)):
                    assert torch.equal(mine[0], theirs[0]) and torch.equal(mine[1], theirs[1])
    assert traced.traced.failure is None and not traced.traced.refused_shapes
    assert {shape[-2:] for shape in traced.traced.trusted_shapes} == {
        image.shape for image in prepared
    }


def test_a_trusted_shape_runs_on_the_graph_and_a_new_shape_is_checked_first(model_and_processor):
    model, _ = model_and_processor
    forward = TracedForward(model)
    calls = EagerCalls(model)
    try:
        with torch.inference_mode():
            forward(_pixels(0))
            first = calls.count  # the eager pass, and the trace
            forward(_pixels(1))
            forward(_pixels(2))
            assert calls.count == first  # trusted: the graph alone
            forward(_pixels(3, (2, 3, 32, 32)))
            assert calls.count == first + 1  # a new batch size: eager once more
    finally:
        calls.remove()
    assert forward.trusted_shapes == {(1, 3, 32, 32), (2, 3, 32, 32)}


def test_a_shape_whose_graph_answers_otherwise_stays_eager(model_and_processor, monkeypatch):
    model, _ = model_and_processor

    def off_by_a_bit(pixel_values):
        outputs = model(pixel_values=pixel_values)
        return {"logits": outputs.logits + 1e-6, "pred_boxes": outputs.pred_boxes}

    monkeypatch.setattr(traced_forward, "_trace", lambda _model, _pixels: off_by_a_bit)
    forward = TracedForward(model)
    pixels = _pixels(0)
    with torch.inference_mode():
        expected = model(pixel_values=pixels)
        for _ in range(3):
            logits, boxes = forward(pixels)
            assert torch.equal(logits, expected.logits) and torch.equal(boxes, expected.pred_boxes)
    assert forward.refused_shapes == {(1, 3, 32, 32)} and not forward.trusted_shapes


def test_a_failing_trace_leaves_the_model_answering_eagerly(model_and_processor, monkeypatch):
    model, _ = model_and_processor

    def no_trace(_model, _pixels):
        raise RuntimeError("cannot trace this model")

    monkeypatch.setattr(traced_forward, "_trace", no_trace)
    forward = TracedForward(model)
    with torch.inference_mode():
        expected = model(pixel_values=_pixels(0))
        logits, _ = forward(_pixels(0))
        forward(_pixels(1, (2, 3, 32, 32)))
    assert torch.equal(logits, expected.logits)
    assert forward.failure == "RuntimeError: cannot trace this model"
    assert not forward.trusted_shapes and not forward.refused_shapes


def test_shapes_are_checked_up_to_a_bound(model_and_processor):
    model, _ = model_and_processor
    forward = TracedForward(model, max_shapes=1)
    calls = EagerCalls(model)
    try:
        with torch.inference_mode():
            forward(_pixels(0))
            forward(_pixels(1, (2, 3, 32, 32)))
            before = calls.count
            forward(_pixels(2, (2, 3, 32, 32)))  # unchecked: eager every time
            assert calls.count == before + 1
    finally:
        calls.remove()
    assert forward.trusted_shapes == {(1, 3, 32, 32)}
