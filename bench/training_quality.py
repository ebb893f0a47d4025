"""Training quality: mAP@0.5 of my_model and of new_model trained through the runtime.

The training is the demo's: launch_vision_runtime.py --purge_dirs (random tiny YOLOS, 256
generated images), then a Train request over HTTP with the client's default epochs and learning
rate, polled until COMPLETED. Both models are then evaluated in-process on a held-out generated
set (another seed, never trained on). The full run also traces mAP against training seconds.
"""

# Standard
from typing import List
import pathlib
import tempfile
import time

# First Party
import caikit_computer_vision  # noqa: F401  (configures caikit before the imports below)
from caikit_computer_vision.defaults import DEFAULT_SEED, DEFAULT_TRAIN_BATCH_SIZE
from example_tools.evaluation import evaluate_detector
from caikit_computer_vision.labelled_images import load_labelled_images
from caikit_computer_vision.modules.object_detection import TransformersObjectDetector
from example_tools.synthetic_data import generate_train_data
from example_tools.tiny_yolos import build_tiny_yolos
from caikit_computer_vision.torch_device import select_device
from caikit_computer_vision.training import fine_tune
from example_tools.runtime_harness import start_runtime
import common

# Local
from bench.figures import Figure, Target

GROUP = "training_quality"
HELD_OUT_SEED = 1234
HELD_OUT_IMAGES = 100
QUICK_EPOCHS = 5
TRAIN_ROUTE = "/api/v1/ObjectDetectionTaskTransformersObjectDetectorTrain"
# Checkpoints of the in-process curve (epochs), full run only.
CURVE_EPOCHS = (20, 40, 60, 100, 150, 200)


def run(quick: bool) -> List[Figure]:
    epochs = QUICK_EPOCHS if quick else common.DEFAULT_NUM_EPOCHS
    with tempfile.TemporaryDirectory(prefix="ccv-bench-quality-") as scratch:
        work_dir = pathlib.Path(scratch)
        held_out = work_dir / "held_out"
        generate_train_data(str(held_out), num_images=HELD_OUT_IMAGES, seed=HELD_OUT_SEED)
        seconds = _train_through_runtime(work_dir, epochs)
        untrained = _map50(work_dir / "models" / common.BASE_MODEL_ID, held_out)
        trained = _map50(work_dir / "models" / common.TRAINED_MODEL_ID, held_out)
        figures = [
            Figure(GROUP, "mAP@0.5 my_model (untrained)", untrained, "",
                   note=f"{HELD_OUT_IMAGES} held-out images"),
            Figure(GROUP, "mAP@0.5 new_model", trained, "", target=Target(0.5, at_least=True),
                   note=f"{epochs} epochs, lr {common.DEFAULT_LEARNING_RATE:g}, "
                   f"{common.NUM_TRAIN_IMAGES} images, trained through the runtime"),
            Figure(GROUP, "training wall time", seconds, "s", target=Target(60.0),
                   note="Train request accepted -> COMPLETED seen by polling"),
        ]
        if not quick:
            figures.append(_curve(work_dir, held_out))
    return figures


def _train_through_runtime(work_dir: pathlib.Path, epochs: int) -> float:
    runtime = start_runtime(work_dir, ["--purge_dirs"])
    try:
        body = {
            "model_name": common.TRAINED_MODEL_ID,
            "parameters": {
                "model_path": f"models/{common.BASE_MODEL_ID}",
                "train_data": {
                    "img_dir_path": "train_data/images",
                    "labels_file": "train_data/labels.txt",
                },
                "num_epochs": epochs,
                "learning_rate": common.DEFAULT_LEARNING_RATE,
            },
        }
        started = time.monotonic()
        training_id = runtime.http_json(TRAIN_ROUTE, body)["training_id"]
        while True:
            state = runtime.http_json(f"/management/trainings?training_id={training_id}")["state"]
            if state in ("COMPLETED", "ERRORED", "CANCELED"):
                break
            time.sleep(0.2)
        if state != "COMPLETED":
            raise RuntimeError(f"benchmark training ended {state}:\n{runtime.log()}")
        return time.monotonic() - started
    finally:
        runtime.stop()


def _map50(model_dir: pathlib.Path, held_out: pathlib.Path) -> float:
    module = TransformersObjectDetector.load(str(model_dir))
    return evaluate_detector(
        module, str(held_out / "images"), str(held_out / "labels.txt"), threshold=0.0
    ).mean


def _curve(work_dir: pathlib.Path, held_out: pathlib.Path) -> Figure:
    """mAP@0.5 against seconds of in-process training (the runtime's own code path)."""
    model, processor = build_tiny_yolos()
    module = TransformersObjectDetector(model, processor)
    images = load_labelled_images(
        str(work_dir / "train_data" / "images"), str(work_dir / "train_data" / "labels.txt")
    )
    points = {}
    seconds = [0.0]

    def checkpoint(report) -> None:
        seconds[0] += report.seconds
        if report.epoch in CURVE_EPOCHS:
            module.model.eval()
            points[f"mAP at {report.epoch} epochs ({seconds[0]:.0f} s)"] = evaluate_detector(
                module, str(held_out / "images"), str(held_out / "labels.txt"), threshold=0.0
            ).mean
            module.model.train()

    fine_tune(
        model=model,
        processor=processor,
        images=images,
        num_epochs=max(CURVE_EPOCHS),
        learning_rate=common.DEFAULT_LEARNING_RATE,
        batch_size=DEFAULT_TRAIN_BATCH_SIZE,
        seed=DEFAULT_SEED,
        device=select_device(),
        longest_edge=module.longest_edge,
        max_aspect_ratio=module.max_aspect_ratio,
        on_epoch=checkpoint,
    )
    best = max(points.values())
    return Figure(GROUP, "best mAP@0.5 on the curve", best, "", target=Target(0.5, at_least=True),
                  note="in-process training, mAP vs seconds in details", details=points)
