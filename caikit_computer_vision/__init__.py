"""caikit_computer_vision: a caikit library that serves a Hugging Face YOLOS object detector.

Importing the package configures caikit with this library's defaults (``config/config.yml``)
and registers the data model and modules, which is what ``runtime.library:
caikit_computer_vision`` in a runtime config relies on.
"""

# Standard
import os

# First Party
import caikit

# Configure caikit before the data model and modules are imported: they read the config.
caikit.configure(os.path.join(os.path.dirname(__file__), "config", "config.yml"))

# Local
from . import data_model, modules  # noqa: E402
from .data_model import (  # noqa: E402
    BoundingBox,
    DetectedObject,
    ObjectDetectionResult,
    ObjectDetectionTask,
    ObjectDetectionTrainSet,
)
from .modules.object_detection import TransformersObjectDetector  # noqa: E402
