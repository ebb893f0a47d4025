"""What the peer servers and the load process share: models, answers and wire names.

Standard library only at import time: this module is imported by every peer server (each in its
own venv) and by the load process. An answer is, for one image, the list of its detections as
rows ``[label, score, xmin, ymin, xmax, ymax]``, most confident first (``Detector.detect``'s
order); every server sends these rows as JSON, so that one comparison covers them all.
"""

# Standard
from typing import Dict, List, Sequence, Tuple, Union
import argparse
import json
import os
import pathlib

# A row of an answer: label, score, xmin, ymin, xmax, ymax.
Row = List[Union[str, float, int]]
Answer = List[Row]

# The wire names every peer uses (HTTP routes, gRPC method, tensor names).
FASTAPI_ROUTE = "/detect/{model}"
GRPC_METHOD = "/bench.peers.Detector/Detect"
# "1" in a peer's environment: it prepares images and runs forward passes as the runtime does
# (load_detectors).
SPEEDUPS_ENV = "BENCH_PEERS_SPEEDUPS"
LITSERVE_ROUTE = "/predict"
TENSOR_IMAGE = "image"
TENSOR_THRESHOLD = "threshold"
TENSOR_DETECTIONS = "detections"
# Every peer listens here, and nowhere else.
LOOPBACK = "127.0.0.1"


def answer_rows(detections: Sequence) -> Answer:
    """The rows of ``Detector.detect``'s detections of one image."""
    return [
        [
            detection.label,
            detection.score,
            detection.xmin,
            detection.ymin,
            detection.xmax,
            detection.ymax,
        ]
        for detection in detections
    ]


def encode_answer(detections: Sequence) -> bytes:
    return json.dumps(answer_rows(detections)).encode()


def decode_answer(payload: Union[bytes, str]) -> Answer:
    return json.loads(payload)


def answers_differ(expected: Answer, got: Answer, score_tolerance: float) -> str:
    """Why ``got`` is not ``expected`` (labels and boxes exactly, scores within a tolerance);
    empty when they agree."""
    if len(expected) != len(got):
        return f"{len(got)} detections, expected {len(expected)}"
    for index, (want, have) in enumerate(zip(expected, got)):
        label, score, *box = want
        if have[0] != label or list(have[2:]) != box:
            return f"detection {index}: {have}, expected {want}"
        if abs(float(have[1]) - float(score)) > score_tolerance:
            return f"detection {index}: score {have[1]}, expected {score} (+-{score_tolerance:g})"
    return ""


def parse_models(values: Sequence[str]) -> Dict[str, pathlib.Path]:
    """``NAME=HF_DIR`` arguments as a mapping (HF_DIR: a saved model's ``hf_model/``)."""
    models = {}
    for value in values:
        name, separator, path = value.partition("=")
        if not separator or not name or not path:
            raise argparse.ArgumentTypeError(f"{value!r}: give NAME=HF_DIR")
        models[name] = pathlib.Path(path)
    return models


def server_arguments(description: str) -> argparse.ArgumentParser:
    """The command line every peer server takes: its models and its port(s)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=HF_DIR",
        help="a model to serve under NAME, from a saved model's hf_model/ (repeatable)",
    )
    parser.add_argument("--port", type=int, required=True, help=f"port on {LOOPBACK}")
    return parser


def load_detectors(models: Dict[str, pathlib.Path]) -> Dict:
    """``{name: Detector}`` for every model (caikit-free; torch's default threads, CPU).

    Images go through transformers' processor and the forward pass is eager, as a user's handler
    would run them, unless ``SPEEDUPS_ENV`` is "1" in the server's environment: then the peer
    does both as the runtime does, by a pixel table (caikit_computer_vision/pixel_table.py) and
    as a checked TorchScript graph (caikit_computer_vision/traced_forward.py).
    """
    # Third Party
    from caikit_computer_vision.detection import Detector  # the peers' one heavy import

    speedups = os.environ.get(SPEEDUPS_ENV) == "1"
    return {
        name: Detector.from_hf_dir(str(path), traced=speedups, pixel_table=speedups)
        for name, path in models.items()
    }


def detect_grouped(detectors: Dict, requests: Sequence[Tuple[str, bytes, float]]) -> List[List]:
    """Detections for each ``(model, image, threshold)``; requests for one model and threshold
    share a ``Detector.detect`` call (one forward pass where image sizes allow)."""
    answers: List = [None] * len(requests)
    groups: Dict[Tuple[str, float], List[int]] = {}
    for index, (model, _, threshold) in enumerate(requests):
        groups.setdefault((model, threshold), []).append(index)
    for (model, threshold), indices in groups.items():
        detected = detectors[model].detect([requests[i][1] for i in indices], threshold)
        for index, detections in zip(indices, detected):
            answers[index] = detections
    return answers
