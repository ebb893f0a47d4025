"""A teaching aid: a second ObjectDetectionTask module whose ``threshold`` is a ``str``.

Importing this file registers ``ConflictingThresholdDetector`` with caikit. It is imported only
on demand (``python3 dump_protos.py --show-conflict``) and never by the package itself, so the
real library, its runtime and its tests never see it. It lives inside the library package, not
with the example's tools, because caikit 0.29 generates services only for modules whose top-level
package is ``runtime.library`` (``ServicePackageFactory._get_and_filter_modules``).

Why it exists: caikit builds one ``ObjectDetectionTaskRequest`` for the task from the ``run``
signatures of *all* modules that implement it. The real module declares ``threshold: float``,
this one ``threshold: str``; caikit cannot merge the two, logs
``Cannot generate task rpc for <class '...ObjectDetectionTask'>: Conflicting value types for arg
threshold: <class 'str'> != <class 'float'>`` and leaves the task's request message, predict rpc
and ``{package}.objectdetectiontaskrequest.proto`` out of the dump. caikit visits modules in order
of module id, so the side printed first is this module's (its id sorts before the real one's).

caikit 0.29 catches the conflict only for the predict rpc: the inference-job rpcs (enabled by
default) hit the same conflict uncaught and the whole dump stops with ``AssertionError``. The demo
therefore dumps with inference jobs switched off (``DEMO_CONFIG_OVERRIDES``).
"""

# Standard
from typing import List
import pathlib

# First Party
from caikit.config import get_config
from caikit.core import ModuleBase, module
from caikit.interfaces.vision.data_model.backends import image_pil_backend

# Local
from .data_model import ObjectDetectionResult, ObjectDetectionTask

# Without this, caikit 0.29 raises instead of warning (see the module docstring).
DEMO_CONFIG_OVERRIDES = {"runtime": {"service_generation": {"enable_inference_jobs": False}}}

# The phrase of caikit's warning that names the conflict (the whole line also names the task).
CONFLICT_WARNING_PHRASE = "Conflicting value types for arg threshold"


@module(
    id="294ab192-91c3-4ee8-9a8c-7f7cdc5864c0",
    name="Conflicting Threshold Detector (demo)",
    version="0.1.0",
    task=ObjectDetectionTask,
)
class ConflictingThresholdDetector(ModuleBase):
    """Declares ``threshold: str`` where the real module has ``float``; never runs."""

    def run(
        self, inputs: image_pil_backend.PIL_SOURCE_TYPES, threshold: str = "foo"
    ) -> ObjectDetectionResult:
        raise NotImplementedError("Not a real module: it only exists to show a type conflict")


def task_request_proto_name() -> str:
    """File name of the task's request proto under the configured service package.

    caikit lower-cases ``{runtime.service_generation.package}.ObjectDetectionTaskRequest``.
    """
    package = get_config().runtime.service_generation.package
    return f"{package}.{ObjectDetectionTask.__name__}Request.proto".lower()


def check_outcome(dumped_files: List[pathlib.Path]) -> str:
    """Explain the demo's result to the user; raise if the conflict did not take effect."""
    request_proto = task_request_proto_name()
    if any(path.name == request_proto for path in dumped_files):
        raise RuntimeError(
            f"{request_proto} was generated: the conflicting module did not take effect"
        )
    return (
        f"Conflict demo: the log above shows caikit's warning 'Cannot generate task rpc for "
        f"<class '...{ObjectDetectionTask.__name__}'>: {CONFLICT_WARNING_PHRASE}: "
        f"<class 'str'> != <class 'float'>' (with its traceback, once for the gRPC dump and once "
        f"for the HTTP app), and {request_proto} is absent from the dump. Run dump_protos.py "
        f"without --show-conflict to get the real interfaces back."
    )
