"""Build a randomly initialised YOLOS detector and its image processor, with no download.

The example must run where no model hub is reachable, so the demo model is made from a
``YolosConfig``. Two sizes are offered: ``tiny`` (tens of thousands of parameters, trains in
seconds on a CPU; the demo's ``my_model``) and ``yolos-tiny`` (the architecture of
``hustvl/yolos-tiny``, for benchmarks that need realistic compute).
"""

# Standard
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

# Third Party
from transformers import YolosConfig, YolosForObjectDetection
from transformers.models.yolos.image_processing_pil_yolos import YolosImageProcessorPil
import torch

# Local
from caikit_computer_vision.defaults import DEFAULT_SEED
from common import DEFAULT_LABELS


@dataclass(frozen=True)
class YolosArchitecture:
    """The few numbers that decide a YOLOS model's size and its input resolution."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    patch_size: int
    num_detection_tokens: int
    # Resolution the position embeddings are made for (other sizes are interpolated).
    image_size: Tuple[int, int]
    # The image processor's resize rule: shortest side to ``shortest_edge`` unless that makes the
    # longest side exceed ``longest_edge``.
    shortest_edge: int
    longest_edge: int


ARCHITECTURES: Dict[str, YolosArchitecture] = {
    # Sees images at 32 px on the short side (4 x 4 patches of 8 px): the demo's shapes are a
    # third to a half of a 64 px image, and at 32 px the training is faster than at 64 px with
    # no worse held-out quality (the measurements, over data seeds and thread counts, are in
    # docs/training.md, "input size").
    "tiny": YolosArchitecture(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=8,
        num_detection_tokens=10,
        image_size=(32, 32),
        shortest_edge=32,
        longest_edge=128,
    ),
    "yolos-tiny": YolosArchitecture(
        hidden_size=192,
        num_hidden_layers=12,
        num_attention_heads=3,
        intermediate_size=768,
        patch_size=16,
        num_detection_tokens=100,
        image_size=(800, 1333),
        shortest_edge=512,
        longest_edge=1333,
    ),
}


def build_tiny_yolos(
    labels: Sequence[str] = DEFAULT_LABELS,
    architecture: str = "tiny",
    seed: int = DEFAULT_SEED,
) -> Tuple[YolosForObjectDetection, YolosImageProcessorPil]:
    """Return a freshly initialised YOLOS model for ``labels`` and the matching image processor.

    The same ``seed`` gives the same weights, so the demo's ``my_model`` is reproducible.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown YOLOS architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}"
        )
    labels = list(labels)
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be a non-empty list of unique names, got {labels}")
    arch = ARCHITECTURES[architecture]
    config = YolosConfig(
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        intermediate_size=arch.intermediate_size,
        patch_size=arch.patch_size,
        num_detection_tokens=arch.num_detection_tokens,
        image_size=list(arch.image_size),
        # hustvl/yolos-tiny adds position embeddings only at the input, not at every layer.
        use_mid_position_embeddings=False,
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )
    # fork_rng keeps the caller's global torch RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = YolosForObjectDetection(config)
    model.eval()
    processor = YolosImageProcessorPil(
        size={"shortest_edge": arch.shortest_edge, "longest_edge": arch.longest_edge}
    )
    return model, processor
