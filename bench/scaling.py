"""Scaling: how predict latency grows with the image, and training time with the data set.

* Predict: in-process ``module.run`` of the demo model on generated JPEGs of 64, 256, 1024 and
  4096 px a side, interleaved, as a ratio to the 64 px image of the same round. The tiny model
  sees at most 128 px (its processor's longest edge), so what grows is decoding and resizing.
* Training: ``TransformersObjectDetector.train`` in this process (the runtime's torch settings)
  on 50, 100, 200 and 400 generated images for a few epochs, interleaved, as a ratio to 50.
"""

# Standard
from dataclasses import dataclass
from typing import Dict, List, Tuple
import pathlib
import tempfile

# Local
from bench.figures import Figure, Spread, interleaved_rounds, paired, ratio
from bench.served_models import DEMO_MODEL_ID, save_models
from caikit_computer_vision.data_model import ObjectDetectionTrainSet
from example_tools.demo_assets import train_data_paths
from caikit_computer_vision.modules.object_detection import TransformersObjectDetector
from example_tools.synthetic_data import generate_train_data, render_example

GROUP = "scaling"
MS = 1000.0
IMAGE_SIDES = (64, 256, 1024, 4096)
DATA_SET_SIZES = (50, 100, 200, 400)
LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class Plan:
    predict_rounds: int
    train_rounds: int
    train_epochs: int
    data_set_sizes: Tuple[int, ...]


PLANS = {
    False: Plan(predict_rounds=40, train_rounds=2, train_epochs=3, data_set_sizes=DATA_SET_SIZES),
    True: Plan(predict_rounds=5, train_rounds=1, train_epochs=1, data_set_sizes=DATA_SET_SIZES),
}


def run(quick: bool) -> List[Figure]:
    """Predict latency by image side and training time by number of images."""
    plan = PLANS[quick]
    with tempfile.TemporaryDirectory(prefix="ccv-bench-scaling-") as temporary:
        work = pathlib.Path(temporary)
        module = save_models(work / "saved", {DEMO_MODEL_ID: "tiny"})[DEMO_MODEL_ID]
        figures = _predict_figures(module, plan)
        figures += _training_figures(work, str(work / "saved" / DEMO_MODEL_ID), plan)
    return figures


def _predict_figures(module: TransformersObjectDetector, plan: Plan) -> List[Figure]:
    images: Dict[int, bytes] = {
        side: render_example("cat", image_size=side)[0] for side in IMAGE_SIDES
    }
    seconds = interleaved_rounds(
        {side: (lambda image=image: module.run(image)) for side, image in images.items()},
        plan.predict_rounds,
    )
    base = IMAGE_SIDES[0]
    figures = []
    for side in IMAGE_SIDES:
        figures.append(
            Figure.of_samples(
                GROUP,
                f"predict {side}x{side} px",
                seconds[side],
                "ms",
                MS,
                note=f"{Spread.of(paired(seconds[base], seconds[side], ratio)).p50:.1f}x "
                f"{base} px; JPEG {len(images[side]) / 1024:.0f} KiB; in-process, "
                f"{plan.predict_rounds} rounds",
            )
        )
    return figures


def _training_figures(work: pathlib.Path, model_path: str, plan: Plan) -> List[Figure]:
    train_sets = {}
    for size in plan.data_set_sizes:
        generate_train_data(str(work / f"train-{size}"), num_images=size)
        paths = train_data_paths(work / f"train-{size}")
        train_sets[size] = ObjectDetectionTrainSet(
            img_dir_path=str(paths["img_dir_path"]), labels_file=str(paths["labels_file"])
        )

    seconds = interleaved_rounds(
        {
            size: (
                lambda size=size: TransformersObjectDetector.train(
                    model_path, train_sets[size], plan.train_epochs, LEARNING_RATE
                )
            )
            for size in plan.data_set_sizes
        },
        plan.train_rounds,
        warm_up_rounds=0,
    )
    base = plan.data_set_sizes[0]
    figures = []
    for size in plan.data_set_sizes:
        per_image_epoch_ms = MS * Spread.of(seconds[size]).p50 / size / plan.train_epochs
        figures.append(
            Figure.of_samples(
                GROUP,
                f"train {size} images x {plan.train_epochs} epochs",
                seconds[size],
                "s",
                note=f"{Spread.of(paired(seconds[base], seconds[size], ratio)).p50:.2f}x {base} "
                f"images; {per_image_epoch_ms:.1f} ms per image-epoch",
            )
        )
    return figures
