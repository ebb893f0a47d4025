"""Memory: the runtime's resident set (VmRSS) idle, after many predictions, with five models.

One runtime serving the demo model: its RSS once started and idle, after 1000 gRPC predictions
(sequential), and after four more copies of the demo model are added to models/ (atomically, as
the trainer saves) and each has answered a predict. For scale, the RSS of a bare Python process
that has only imported torch, measured in the same run.
"""

# Standard
from typing import List
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

# Third Party
import grpc

# Local
from bench.figures import Figure, Target
from example_tools.load_generator import read_rss_kib
from bench.served_models import DEMO_MODEL_ID, grpc_predict, save_models, serving
from caikit_computer_vision.atomic_dirs import staged_directory
from example_tools.synthetic_data import render_example

GROUP = "memory"
MIB = 1024.0
IDLE_TARGET_MIB = Target(700.0)
PREDICTIONS = {False: 1000, True: 200}
MODELS_LOADED = 5
# Let start-up allocations settle before the idle reading.
SETTLE_S = 2.0
LOAD_TIMEOUT_S = 60.0
BARE_TORCH_RSS = (
    "import torch\n"
    "print(next(line.split()[1] for line in open('/proc/self/status')\n"
    "           if line.startswith('VmRSS:')))"
)


def run(quick: bool) -> List[Figure]:
    """RSS of the runtime idle, after predictions and with five models loaded."""
    image, _ = render_example("cat")
    predictions = PREDICTIONS[quick]
    with tempfile.TemporaryDirectory(prefix="ccv-bench-memory-") as temporary:
        work = pathlib.Path(temporary)
        save_models(work / "saved", {DEMO_MODEL_ID: "tiny"})
        with serving(work / "runtime", work / "saved") as runtime, grpc_predict(
            runtime.ports["grpc"]
        ) as predict:
            pid = runtime.process.pid
            time.sleep(SETTLE_S)
            idle_kib = read_rss_kib(pid)
            for _ in range(predictions):
                predict(image)
            after_predictions_kib = read_rss_kib(pid)
            models_dir = runtime.work_dir / "models"
            for index in range(1, MODELS_LOADED):
                model_id = f"{DEMO_MODEL_ID}_{index}"
                with staged_directory(models_dir / model_id) as staging:
                    shutil.copytree(models_dir / DEMO_MODEL_ID, staging, dirs_exist_ok=True)
                _predict_once_loaded(predict, image, model_id)
            five_models_kib = read_rss_kib(pid)
    bare_kib = float(
        subprocess.run(
            [sys.executable, "-c", BARE_TORCH_RSS], check=True, capture_output=True, text=True
        ).stdout
    )
    scale = f"bare 'import torch' process: {bare_kib / MIB:.0f} MiB"
    return [
        Figure(
            GROUP,
            "runtime RSS idle, demo model",
            idle_kib / MIB,
            "MiB",
            target=IDLE_TARGET_MIB,
            note=f"{idle_kib / bare_kib:.1f}x a {scale}",
            details={"bare_import_torch_mib": bare_kib / MIB},
        ),
        Figure(
            GROUP,
            f"runtime RSS after {predictions} predictions",
            after_predictions_kib / MIB,
            "MiB",
            note=f"{(after_predictions_kib - idle_kib) / MIB:+.1f} MiB over idle",
        ),
        Figure(
            GROUP,
            f"runtime RSS with {MODELS_LOADED} models loaded",
            five_models_kib / MIB,
            "MiB",
            note=f"{(five_models_kib - after_predictions_kib) / MIB / (MODELS_LOADED - 1):+.1f} "
            "MiB per extra tiny model",
        ),
    ]


def _predict_once_loaded(predict, image: bytes, model_id: str) -> None:
    """Predict with ``model_id``, retrying while the runtime has not loaded it yet."""
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while True:
        try:
            predict(image, model_id=model_id)
            return
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
        time.sleep(0.05)
