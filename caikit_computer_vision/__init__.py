"""caikit_computer_vision: a caikit library that serves a Hugging Face YOLOS object detector.

Its data model and modules are registered with caikit on the first access to ``data_model``,
``modules`` or a name they define, as when caikit loads ``runtime.library:
caikit_computer_vision``; the pure helpers (``images``, ``label_format``, ``coco_format``, ...)
import without caikit.
"""

# Standard
from typing import Any
import importlib
import pathlib

# The names that need caikit: where each is defined, relative to this package.
_CAIKIT_NAMES = {
    "data_model": ".data_model",
    "modules": ".modules",
    "BoundingBox": ".data_model",
    "DetectedObject": ".data_model",
    "ObjectDetectionResult": ".data_model",
    "ObjectDetectionTask": ".data_model",
    "ObjectDetectionTrainSet": ".data_model",
    "TransformersObjectDetector": ".modules.object_detection",
}

__all__ = sorted(_CAIKIT_NAMES)


def __getattr__(name: str) -> Any:
    """Import the data model and modules the first time one of their names is read (PEP 562)."""
    if name not in _CAIKIT_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _register_with_caikit()
    if name in ("data_model", "modules"):
        return globals()[name]
    value = getattr(importlib.import_module(_CAIKIT_NAMES[name], __name__), name)
    globals()[name] = value
    return value


def _register_with_caikit() -> None:
    """Configure caikit with the library's defaults, then import the data model and modules.

    ``config/config.yml`` sets ``runtime.library`` alone, to this library, as a runtime config
    that serves it does too.
    """
    if "modules" in globals():
        return
    # First Party
    import caikit  # pylint: disable=import-outside-toplevel

    caikit.configure(str(pathlib.Path(__file__).parent / "config" / "config.yml"))
    globals()["data_model"] = importlib.import_module(".data_model", __name__)
    globals()["modules"] = importlib.import_module(".modules", __name__)
