"""Where models run: the first CUDA GPU when there is one, the CPU otherwise."""

# Third Party
import torch


def select_device() -> torch.device:
    """Pick CUDA when PyTorch sees a GPU, else the CPU; set CUDA_VISIBLE_DEVICES="" to force CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
