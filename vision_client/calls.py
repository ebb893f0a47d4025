"""The three calls of the demo: start a training, wait for it, predict with the new model."""

# Standard
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, List, Optional
import time

# Third Party
import grpc

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


def wait_for_training(
    stubs: SimpleNamespace,
    channel: grpc.Channel,
    training_id: str,
    timeout_s: float,
    poll_interval_s: float,
    report: Callable[[str], None] = print,
) -> TrainingOutcome:
    """Poll GetTrainingStatus until the training ends; raise TrainingFailed unless COMPLETED."""
    management = stubs.training_management.TrainingManagementStub(channel)
    request = stubs.training_info.TrainingInfoRequest(training_id=training_id)
    state_name = stubs.job_status.JobStatus.Name
    started = time.monotonic()
    last_state, last_report = None, started
    while True:
        response = management.GetTrainingStatus(request)
        state = state_name(response.state)
        now = time.monotonic()
        if state != last_state or now - last_report >= 5:
            report(f"  training {training_id}: {state} after {now - started:.1f} s")
            last_state, last_report = state, now
        if state in _FINISHED:
            break
        if now - started > timeout_s:
            raise TrainingFailed(
                f"training {training_id} still {state} after {timeout_s:.0f} s; "
                "raise --timeout or lower --num-epochs"
            )
        time.sleep(poll_interval_s)
    if state != "COMPLETED":
        reasons = "; ".join(response.reasons) or "no reason given"
        raise TrainingFailed(f"training {training_id} ended {state}: {reasons}")
    return TrainingOutcome(training_id, state, now - started, completed_at=now)


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
