"""Training speed by device: the demo on this machine's CPU and on its CUDA GPU, if it has one,
and the time per image per epoch of a yolos-tiny-size model at 512 px.

* **Demo, CPU**: ``fine_tune`` in this process with the demo's defaults (the training the Train
  RPC runs), torch using one thread and every core.
* **Demo, CUDA** (only with a GPU): the same training on the GPU, on 3 data seeds; the figure is
  the slowest run, the speed-up is the faster CPU run's time over it, and the held-out mAP@0.5
  is the minimum. Beside them, one run each with deterministic algorithms off and with CUDA
  graphs off (every kernel launched by the host), and the training through the runtime (Train
  request to COMPLETED), which picks the GPU.
* **yolos-tiny at 512 px**: hustvl/yolos-tiny's architecture (random weights, 6.5 M parameters)
  on 512 x 512 generated images, a few epochs at several batch sizes: milliseconds per image per
  epoch, the slowest epoch after the first (which pays for kernel selection and warm-up).
  Encoding the images once before the first epoch is not counted. On a CPU only a short run.
"""

# Standard
from typing import Dict, List, Optional, Sequence, Tuple
import os
import pathlib
import sys
import tempfile

# Third Party
import torch

# First Party
from caikit_computer_vision.defaults import DEFAULT_SEED
from caikit_computer_vision.labelled_images import load_labelled_images
from caikit_computer_vision.training import EpochReport, Recipe
from example_tools.synthetic_data import generate_train_data
import common

# Local
from bench.figures import Figure, Target
from bench.training_quality import (
    DATA_SEEDS,
    HELD_OUT_IMAGES,
    HELD_OUT_SEED,
    MAX_TRAINING_S,
    MIN_MAP50,
    held_out_scores,
    train_in_process,
    train_through_runtime,
)

GROUP = "training_speed"
MS = 1000.0
# The targets: the GPU at least 3x faster than the same machine's CPU on the demo, and
# at most 5 ms per image per epoch for a yolos-tiny-size model at 512 px (on an H100).
MIN_GPU_SPEEDUP = 3.0
MAX_YOLOS_TINY_MS_PER_IMAGE = 5.0
YOLOS_TINY_SIDE = 512
# (images, epochs, batch sizes) of the yolos-tiny-size run, on a GPU and on a CPU.
YOLOS_TINY_PLAN = {
    "cuda": (256, 3, (32, 64, 128)),
    "cpu": (32, 2, (16,)),
}
# Any small learning rate: this run measures time, not quality.
YOLOS_TINY_LEARNING_RATE = 1e-4


def run(quick: bool) -> List[Figure]:
    epochs = 5 if quick else common.DEFAULT_NUM_EPOCHS
    cuda = torch.cuda.is_available()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="ccv-bench-speed-") as scratch:
        work_dir = pathlib.Path(scratch)
        held_out = work_dir / "held_out"
        generate_train_data(str(held_out), num_images=HELD_OUT_IMAGES, seed=HELD_OUT_SEED)
        data_sets = {}
        for seed in DATA_SEEDS[: 1 if quick else None]:
            data = work_dir / f"train_seed_{seed}"
            generate_train_data(str(data), num_images=common.NUM_TRAIN_IMAGES, seed=seed)
            data_sets[seed] = load_labelled_images(str(data / "images"), str(data / "labels.txt"))
        recipe = (
            f"{epochs} epochs of {common.NUM_TRAIN_IMAGES} images, the demo's defaults"
        )
        # The GPU first: on a machine lent for minutes, its figures matter most.
        figures, gpu_seconds = [], None
        if cuda:
            figures, gpu_seconds = _cuda_demo_figures(work_dir, data_sets, epochs, cores,
                                                      held_out, recipe, quick)
        figures += _yolos_tiny_figures(work_dir, torch.device("cuda" if cuda else "cpu"), quick)
        # The CPU at one thread (the runtime's torch_threads) and at every core: the tiny
        # model often trains faster on one, so the speed-up is over the faster of the two.
        cpu_runs = {}
        for threads in sorted({1, cores}):
            cpu_runs[threads] = _demo_run(data_sets[DATA_SEEDS[0]], epochs, threads,
                                          torch.device("cpu"), held_out, f"cpu, {threads} threads")
            seconds, map50 = cpu_runs[threads]
            figures += [
                Figure(GROUP, f"demo training on the CPU, {threads} thread(s)", seconds, "s",
                       target=Target(MAX_TRAINING_S),
                       note=f"in-process fine_tune, data seed {DATA_SEEDS[0]}; {recipe}"),
                Figure(GROUP, f"mAP@0.5 after CPU training, {threads} thread(s)", map50, "",
                       target=Target(MIN_MAP50, at_least=True), note="held-out set"),
            ]
        fastest_threads = min(cpu_runs, key=lambda threads: cpu_runs[threads][0])
        if gpu_seconds is not None:
            figures.append(Figure(
                GROUP, "GPU speed-up over this machine's CPU (demo)",
                cpu_runs[fastest_threads][0] / gpu_seconds, "x",
                target=Target(MIN_GPU_SPEEDUP, at_least=True),
                note=f"fastest CPU run ({fastest_threads} threads, data seed {DATA_SEEDS[0]}) "
                "/ slowest GPU run"))
    return figures


def _demo_run(
    images,
    epochs: int,
    threads: int,
    device: torch.device,
    held_out: pathlib.Path,
    name: str,
    recipe: Optional[Recipe] = None,
) -> Tuple[float, float]:
    module, seconds, _ = train_in_process(images, epochs, threads, device, recipe)
    scores = held_out_scores(module, held_out)
    print(f"  {GROUP}: demo on {name}: {seconds:.1f} s, {scores}", file=sys.stderr, flush=True)
    return seconds, scores["map50"]


def _cuda_demo_figures(
    work_dir: pathlib.Path,
    data_sets: Dict[int, Sequence],
    epochs: int,
    cores: int,
    held_out: pathlib.Path,
    recipe: str,
    quick: bool,
) -> Tuple[List[Figure], float]:
    """The demo's figures on the GPU, and its slowest training time there."""
    cuda = torch.device("cuda")
    runs = {
        seed: _demo_run(images, epochs, cores, cuda, held_out, f"cuda, data seed {seed}")
        for seed, images in data_sets.items()
    }
    # What torch's deterministic algorithms cost on the GPU (they buy runs that agree to float
    # rounding, not bit for bit: training.py, _deterministic).
    free_seconds, free_map = _demo_run(
        data_sets[DATA_SEEDS[0]], epochs, cores, cuda, held_out,
        f"cuda, data seed {DATA_SEEDS[0]}, deterministic algorithms off",
        Recipe(deterministic=False),
    )
    # What replaying the step as a CUDA graph buys (step_graphs.py): the same training with
    # every kernel launched by the host.
    eager_seconds, eager_map = _demo_run(
        data_sets[DATA_SEEDS[0]], epochs, cores, cuda, held_out,
        f"cuda, data seed {DATA_SEEDS[0]}, CUDA graphs off", Recipe(cuda_graphs=False),
    )
    slowest = max(seconds for seconds, _ in runs.values())
    details = {f"data seed {seed}: {key}": round(value, 4)
               for seed, (seconds, map50) in runs.items()
               for key, value in (("seconds", seconds), ("map50", map50))}
    details.update({"deterministic off: seconds": round(free_seconds, 2),
                    "deterministic off: map50": round(free_map, 4),
                    "CUDA graphs off: seconds": round(eager_seconds, 2),
                    "CUDA graphs off: map50": round(eager_map, 4)})
    figures = [
        Figure(GROUP, f"demo training on {torch.cuda.get_device_name(0)}", slowest, "s",
               target=Target(MAX_TRAINING_S),
               note=f"in-process fine_tune, slowest of data seeds {list(runs)}; {recipe}",
               details=details),
        Figure(GROUP, "mAP@0.5 after GPU training, minimum", min(m for _, m in runs.values()),
               "", target=Target(MIN_MAP50, at_least=True),
               note=f"data seeds {list(runs)}, held-out set"),
    ]
    if not quick:
        runtime_dir = work_dir / "runtime"
        runtime_dir.mkdir()
        seconds = train_through_runtime(runtime_dir, epochs)
        print(f"  {GROUP}: demo through the runtime: {seconds:.1f} s", file=sys.stderr, flush=True)
        figures.append(Figure(
            GROUP, "demo training through the runtime on the GPU", seconds, "s",
            target=Target(MAX_TRAINING_S),
            note="Train request accepted -> COMPLETED seen by polling"))
    return figures, slowest


def _yolos_tiny_figures(work_dir: pathlib.Path, device: torch.device, quick: bool) -> List[Figure]:
    num_images, epochs, batch_sizes = YOLOS_TINY_PLAN[device.type]
    if quick:
        batch_sizes = batch_sizes[:1]
    data = work_dir / "yolos_tiny_data"
    generate_train_data(str(data), num_images=num_images, image_size=YOLOS_TINY_SIDE,
                        seed=DEFAULT_SEED)
    images = load_labelled_images(str(data / "images"), str(data / "labels.txt"))
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "the CPU"
    variants = [(batch_size, Recipe()) for batch_size in batch_sizes]
    if device.type == "cuda" and not quick:
        variants.append((batch_sizes[1], Recipe(deterministic=False)))
    figures = []
    for batch_size, recipe in variants:
        per_image_ms, first_ms = _yolos_tiny_epoch_ms(images, epochs, batch_size, device, recipe)
        setting = f"batch {batch_size}" + ("" if recipe.deterministic else ", deterministic off")
        print(f"  {GROUP}: yolos-tiny on {name}, {setting}: {per_image_ms:.2f} ms/image"
              f" (first epoch {first_ms:.2f})", file=sys.stderr, flush=True)
        figures.append(Figure(
            GROUP, f"yolos-tiny {YOLOS_TINY_SIDE} px, {setting}, on {name}",
            per_image_ms, "ms/image/epoch",
            target=Target(MAX_YOLOS_TINY_MS_PER_IMAGE) if device.type == "cuda" else None,
            note=f"slowest of epochs 2-{epochs} over {num_images} images; first epoch "
            f"{first_ms:.2f} ms/image; torch threads {torch.get_num_threads()}"))
    return figures


def _yolos_tiny_epoch_ms(
    images, epochs: int, batch_size: int, device: torch.device, recipe: Recipe
) -> Tuple[float, float]:
    """(ms per image of the slowest epoch after the first, ms per image of the first)."""
    reports: List[EpochReport] = []
    module, seconds, _ = train_in_process(
        images, epochs, torch.get_num_threads(), device, recipe, architecture="yolos-tiny",
        batch_size=batch_size, learning_rate=YOLOS_TINY_LEARNING_RATE, on_epoch=reports.append,
    )
    del module
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(f"  {GROUP}: yolos-tiny batch {batch_size}: {seconds:.1f} s in all", file=sys.stderr,
          flush=True)
    per_image = [report.seconds * MS / len(images) for report in reports]
    return max(per_image[1:]), per_image[0]
