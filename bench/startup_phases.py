"""Where a runtime's start-up time goes, timed in a fresh process.

    python -m bench.startup_phases WORK_DIR     # WORK_DIR holds models/ (run from the repo root)

Does what launch_vision_runtime.py does before it serves, one phase at a time, and prints one
JSON object: ``{"marks": [[phase, time.monotonic()], ...]}``. ``time.monotonic`` is the same
clock in every process of the machine, so the parent can add the interpreter's own start-up
(from just before it spawned this process to the first mark). Nothing heavy is imported before
the first mark: this module uses the standard library only until then.
"""

# Standard
from typing import List, Tuple
import json
import os
import sys
import time


def main() -> int:
    marks: List[Tuple[str, float]] = [("interpreter", time.monotonic())]

    def mark(phase: str) -> None:
        marks.append((phase, time.monotonic()))

    # pylint: disable=import-outside-toplevel,unused-import
    # Third Party
    import torch  # noqa: F401

    mark("import torch")
    from transformers import YolosForObjectDetection  # noqa: F401
    from transformers.models.yolos import image_processing_pil_yolos  # noqa: F401

    mark("import transformers (YOLOS)")
    # First Party
    from caikit.runtime.grpc_server import RuntimeGRPCServer
    from caikit.runtime.http_server import RuntimeHTTPServer
    from caikit.runtime.model_management.model_manager import ModelManager

    mark("import caikit runtime")
    # Local
    import common

    os.chdir(sys.argv[1])
    common.configure_caikit()
    from caikit_computer_vision.caikit_workarounds import build_servers_with
    from caikit_computer_vision.runtime_server import LOOPBACK

    mark("configure + import library")
    # The model manager loads every model in models/ when it is first made, as the gRPC
    # server's predict servicer does at start-up (runtime.wait_for_initial_model_loads).
    ModelManager.get_instance()
    mark("load models")
    with build_servers_with(LOOPBACK):
        RuntimeGRPCServer()
        mark("build gRPC services (protos)")
        RuntimeHTTPServer()
        mark("build HTTP app (pydantic, routes)")
    print(json.dumps({"marks": marks}), flush=True)
    # The model manager's threads would keep the process up: the figures are out, stop here.
    os._exit(0)  # pylint: disable=protected-access


if __name__ == "__main__":
    main()
