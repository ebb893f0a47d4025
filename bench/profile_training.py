"""Where a training step's time goes: torch.profiler over a short ``fine_tune``, top ops printed.

    .venv/bin/python -m bench.profile_training                    # the demo model
    .venv/bin/python -m bench.profile_training --architecture yolos-tiny --image-size 512

Not a figure group: a tool for deciding what to make faster. It trains on generated images on
the runtime's device (a CUDA GPU when there is one) and prints the ops with the most self time
on the host and, on a GPU, on the device, plus the number of kernel launches per step.
"""

# Standard
from typing import Optional, Sequence
import argparse
import math
import tempfile

# Third Party
from torch.profiler import ProfilerActivity, profile
import torch

# First Party
from caikit_computer_vision.defaults import DEFAULT_SEED, DEFAULT_TRAIN_BATCH_SIZE
from caikit_computer_vision.labelled_images import load_labelled_images
from caikit_computer_vision.torch_device import select_device
from example_tools.synthetic_data import generate_train_data
from example_tools.tiny_yolos import ARCHITECTURES

# Local
from bench.training_quality import train_in_process


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="tiny")
    parser.add_argument("--image-size", type=int, default=64, help="side of the generated images")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_TRAIN_BATCH_SIZE)
    parser.add_argument("--rows", type=int, default=25, help="ops listed per table")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    device = select_device()
    with tempfile.TemporaryDirectory(prefix="ccv-profile-") as scratch:
        generate_train_data(scratch, num_images=args.images, image_size=args.image_size,
                            seed=DEFAULT_SEED)
        images = load_labelled_images(f"{scratch}/images", f"{scratch}/labels.txt")
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as profiler:
            train_in_process(
                images, args.epochs, torch.get_num_threads(), device,
                architecture=args.architecture, batch_size=args.batch_size, learning_rate=1e-4,
            )
    steps = args.epochs * math.ceil(args.images / args.batch_size)
    averages = profiler.key_averages()
    print(f"{args.architecture}, {args.images} images of {args.image_size} px, batch "
          f"{args.batch_size}, {steps} steps on {device}")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if device.type == "cuda":
        print(averages.table(sort_by="self_device_time_total", row_limit=args.rows))
        kernels = sum(event.count for event in averages
                      if event.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
        print(f"kernel launches per step: {kernels / steps:.0f}")


if __name__ == "__main__":
    main()
