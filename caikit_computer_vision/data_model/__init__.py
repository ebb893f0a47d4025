"""Data model of caikit_computer_vision: the messages that travel over gRPC and HTTP."""

# Local
from .object_detection import (
    BoundingBox,
    DetectedObject,
    ObjectDetectionResult,
    ObjectDetectionTrainSet,
)
from .tasks import ObjectDetectionTask
