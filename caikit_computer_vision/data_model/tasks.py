"""Tasks implemented by caikit_computer_vision modules."""

# First Party
from caikit.core import TaskBase, task

# Local
from .object_detection import ObjectDetectionResult


@task(
    # Only ``bytes``: caikit builds the request's ``inputs`` field from this type, so a client
    # can send image bytes and never a file path for the server to open.
    required_parameters={"inputs": bytes},
    output_type=ObjectDetectionResult,
)
class ObjectDetectionTask(TaskBase):
    """Find the objects in an image: a label, a confidence score and a box for each."""
