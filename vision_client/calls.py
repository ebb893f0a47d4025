"""The three calls of the demo: start a training, wait for it, predict with the new model."""

# Standard
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Sequence, TextIO
import math
import signal
import sys
import time

# Third Party
import grpc

# Local
from example_tools.evaluation import ScoredBox, box_iou

# caikit_data_model.common.JobStatus values that end a training.
_FINISHED = ("COMPLETED", "CANCELED", "ERRORED")
# While the runtime's poller has not loaded a new model yet, predict answers NOT_FOUND.
_NOT_LOADED_YET = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)


class TrainingFailed(RuntimeError):
    """The training ended in another state than COMPLETED, or did not end in time."""


@dataclass
class TrainingOutcome:
    training_id: str
    state: str
    seconds: float
    # time.monotonic() when the client first saw COMPLETED
    completed_at: float


def start_training(
    stubs: SimpleNamespace,
    channel: grpc.Channel,
    model_name: str,
    model_path: str,
    img_dir_path: str,
    labels_file: str,
    num_epochs: int,
    learning_rate: float,
) -> str:
    """Call ObjectDetectionTaskTransformersObjectDetectorTrain; return the training id.

    The paths are read by the runtime, so they are relative to the runtime's working directory.
    """
    request = stubs.train_request.ObjectDetectionTaskTransformersObjectDetectorTrainRequest(
        model_name=model_name,
        parameters=stubs.train_parameters.ObjectDetectionTaskTransformersObjectDetectorTrainParameters(
            model_path=model_path,
            train_data=stubs.train_set.ObjectDetectionTrainSet(
                img_dir_path=img_dir_path, labels_file=labels_file
            ),
            num_epochs=num_epochs,
            learning_rate=learning_rate,
        ),
    )
    service = stubs.train_service.ComputerVisionTrainingServiceStub(channel)
    return service.ObjectDetectionTaskTransformersObjectDetectorTrain(request).training_id


class ProgressLine:
    """One status line that updates in place on a terminal, or one line per state elsewhere.

    On a TTY each update rewrites the same line (carriage return), so a training shows one
    line however often it is polled. Piped to a file or a CI log, where ``\r`` would pile up,
    a line is printed when the state changes (and, if ``sparse_every_s`` is given, again after
    that many seconds in the same state); never one per poll.
    """

    def __init__(self, stream: TextIO = sys.stdout, sparse_every_s: float = math.inf) -> None:
        self._stream = stream
        self._interactive = stream.isatty()
        self._sparse_every_s = sparse_every_s
        self._last_state: Optional[str] = None
        self._last_printed = -math.inf
        self._width = 0

    def update(self, state: str, text: str) -> None:
        """Show ``text``; ``state`` is what makes a sparse line due at once when it changes."""
        now = time.monotonic()
        if self._interactive:
            # Pad over the previous text, in case the new one is shorter.
            self._stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
            self._stream.flush()
        elif state != self._last_state or now - self._last_printed >= self._sparse_every_s:
            self._stream.write(text + "\n")
            self._stream.flush()
            self._last_printed = now
        self._last_state = state

    def finish(self, text: str) -> None:
        """Replace the line with ``text`` for good (and end it)."""
        prefix = "\r" if self._interactive else ""
        self._stream.write(prefix + text.ljust(self._width if self._interactive else 0) + "\n")
        self._stream.flush()


class RememberedCtrlC:
    """Within it, Ctrl-C raises KeyboardInterrupt as usual and is also remembered (``pressed``).

    grpc's blocking calls run Python's signal handlers while they wait, and can lose the
    KeyboardInterrupt one raises: the call then returns as if nothing had happened (seen in
    tests/test_newcomer.py's Ctrl-C test on a busy machine: the client went on polling a
    training it was asked to cancel). Main thread only, as every signal handler.
    """

    def __init__(self) -> None:
        self._pressed = False
        self._previous = None

    def pressed(self) -> bool:
        return self._pressed

    def __enter__(self) -> "RememberedCtrlC":
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *_exc) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, _signum, _frame) -> None:
        self._pressed = True
        raise KeyboardInterrupt


def wait_for_training(
    stubs: SimpleNamespace,
    channel: grpc.Channel,
    training_id: str,
    timeout_s: float,
    poll_interval_s: float,
    progress: Optional[ProgressLine] = None,
    interrupted: Callable[[], bool] = lambda: False,
) -> TrainingOutcome:
    """Poll GetTrainingStatus until the training ends; raise TrainingFailed unless COMPLETED.

    ``progress`` (default: one on stdout) shows the state and the seconds so far. Ctrl-C
    (KeyboardInterrupt) ends the progress line and is raised on: the caller cancels. So is an
    ``interrupted()`` that says yes after a call (``RememberedCtrlC.pressed``: a Ctrl-C that the
    call lost).
    """
    progress = progress or ProgressLine()
    management = stubs.training_management.TrainingManagementStub(channel)
    request = stubs.training_info.TrainingInfoRequest(training_id=training_id)
    state_name = stubs.job_status.JobStatus.Name
    started = time.monotonic()
    while True:
        try:
            response = management.GetTrainingStatus(request)
            if interrupted():
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            progress.finish(f"  training {training_id}: interrupted")
            raise
        state = state_name(response.state)
        now = time.monotonic()
        if state in _FINISHED:
            progress.finish(f"  training {training_id}: {state} after {now - started:.1f} s")
            break
        progress.update(state, f"  training {training_id}: {state} {now - started:.0f} s")
        if now - started > timeout_s:
            progress.finish(f"  training {training_id}: still {state} after {timeout_s:.0f} s")
            raise TrainingFailed(
                f"training {training_id} still {state} after {timeout_s:.0f} s; "
                "raise --timeout or lower --num-epochs"
            )
        try:
            time.sleep(poll_interval_s)
        except KeyboardInterrupt:
            progress.finish(f"  training {training_id}: interrupted after {now - started:.0f} s")
            raise
    if state != "COMPLETED":
        reasons = "; ".join(response.reasons) or "no reason given"
        raise TrainingFailed(f"training {training_id} ended {state}: {reasons}")
    return TrainingOutcome(training_id, state, now - started, completed_at=now)


def cancel_training(
    stubs: SimpleNamespace, channel: grpc.Channel, training_id: str, timeout_s: float = 10.0
) -> str:
    """Call CancelTraining; return the state the runtime reports afterwards (e.g. CANCELED)."""
    management = stubs.training_management.TrainingManagementStub(channel)
    request = stubs.training_info.TrainingInfoRequest(training_id=training_id)
    response = management.CancelTraining(request, timeout=timeout_s)
    return stubs.job_status.JobStatus.Name(response.state)


def predict(
    stubs: SimpleNamespace,
    channel: grpc.Channel,
    model_id: str,
    image: bytes,
    threshold: Optional[float] = None,
    wait_for_model_s: float = 0.0,
):
    """Call ObjectDetectionTaskPredict on ``model_id`` (sent as the mm-model-id header).

    With ``wait_for_model_s`` > 0, NOT_FOUND is retried for that long: a freshly trained model
    is served once the runtime's poller has loaded it from models/.
    """
    service = stubs.predict_service.ComputerVisionServiceStub(channel)
    request = stubs.predict_request.ObjectDetectionTaskRequest(inputs=image)
    if threshold is not None:
        request.threshold = threshold
    deadline = time.monotonic() + wait_for_model_s
    while True:
        try:
            return service.ObjectDetectionTaskPredict(
                request, metadata=[("mm-model-id", model_id)], timeout=30
            )
        except grpc.RpcError as err:
            if err.code() not in _NOT_LOADED_YET or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def format_detections(result) -> List[str]:
    """Lines of a small table: label, score and box of each detected object."""
    lines = [f"{'label':<12} {'score':>6}  {'xmin':>5} {'xmax':>5} {'ymin':>5} {'ymax':>5}"]
    for detected in result.detected_objects:
        box = detected.box
        lines.append(
            f"{detected.label:<12} {detected.score:6.3f}  "
            f"{box.xmin:5d} {box.xmax:5d} {box.ymin:5d} {box.ymax:5d}"
        )
    if not result.detected_objects:
        lines.append("(nothing above the threshold)")
    return lines


def detections_of(result) -> List[ScoredBox]:
    """The detected objects of an ObjectDetectionResult as ``ScoredBox``es."""
    return [
        ScoredBox(obj.label, obj.score, obj.box.xmin, obj.box.xmax, obj.box.ymin, obj.box.ymax)
        for obj in result.detected_objects
    ]


def predict_each(
    stubs: SimpleNamespace,
    channel: grpc.Channel,
    model_id: str,
    images: Dict[str, bytes],
    threshold: float = 0.0,
) -> Dict[str, List[ScoredBox]]:
    """Predict every image (name -> bytes) with ``model_id``; return name -> detections.

    Threshold 0 by default: mAP ranks predictions by score itself, a cut only lowers recall.
    """
    return {
        name: detections_of(predict(stubs, channel, model_id, image, threshold))
        for name, image in images.items()
    }


def format_expected_beside_predicted(expected: Sequence, result) -> List[str]:
    """Lines of a table: each expected object, then each prediction with the expected object
    of its label it overlaps most (IoU), so a reader sees at once what is right and what is not.
    """
    header = f"{'':<10} {'label':<12} {'score':>6}  {'xmin':>5} {'xmax':>5} {'ymin':>5} {'ymax':>5}"
    lines = [header]
    for box in expected:
        lines.append(
            f"{'expected':<10} {box.label:<12} {'':>6}  "
            f"{box.xmin:5.0f} {box.xmax:5.0f} {box.ymin:5.0f} {box.ymax:5.0f}"
        )
    for detection in detections_of(result):
        overlaps = [box_iou(detection, box) for box in expected if box.label == detection.label]
        verdict = f"IoU {max(overlaps):.2f} with the expected {detection.label}" if overlaps \
            else f"no {detection.label} expected"
        lines.append(
            f"{'predicted':<10} {detection.label:<12} {detection.score:6.3f}  "
            f"{detection.xmin:5.0f} {detection.xmax:5.0f} {detection.ymin:5.0f} "
            f"{detection.ymax:5.0f}  {verdict}"
        )
    if not result.detected_objects:
        lines.append(f"{'predicted':<10} (nothing above the threshold)")
    return lines

