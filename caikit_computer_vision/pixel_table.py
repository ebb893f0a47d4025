"""A YOLOS processor's pixel values for one RGB image, in one resize and one table lookup.

transformers' PIL-backend YOLOS processor takes a PIL image through numpy and back to PIL to
resize it, to numpy again, then rescales in float64, casts to float32 and normalizes, each a
pass over every pixel: most of ``Detector.prepare`` for a photo and the demo model (figures in
docs/performance.md, "The processor's pixels by a table"). For one image and the settings YOLOS checkpoints ship
with, the same numbers come from less work:

- the resize is the processor's own PIL call (``Image.resize`` to the size the processor's
  ``get_size_with_aspect_ratio_yolos`` gives, its ``resample``, no ``reducing_gap``) made on the
  image itself rather than on ``Image.fromarray`` of a copy of its pixels;
- rescaling and normalizing act on each channel value alone, so running the processor's own
  ``rescale`` and ``normalize`` once on the 256 values of each channel gives a table that maps
  every pixel to exactly what they would make of it; one lookup replaces five passes;
- padding a single image to the largest of its batch is no padding.

``PixelTable`` takes this path only for the processor settings it reproduces, and only after
its answer for a few images of awkward sizes equalled the processor's bit for bit when it was
built; otherwise (``reason`` says why) it calls the processor. tests/test_pixel_table.py
compares the two on many sizes and both shipped models.
"""

# Standard
from typing import Optional

# Third Party
from PIL import Image
from transformers.models.yolos.image_processing_pil_yolos import (
    YolosImageProcessorPil,
    get_size_with_aspect_ratio_yolos,
)
import numpy as np
import torch

# (width, height) of the images the table is checked on when it is built: a square, both
# orientations, odd sides, one side under the processor's shortest edge.
CHECK_SIZES = ((64, 64), (97, 61), (45, 130), (640, 480))
_CHECK_SEED = 20261205


class PixelTable:
    """``processor(images=image, return_tensors="pt")["pixel_values"]`` for one RGB image."""

    def __init__(self, processor: YolosImageProcessorPil):
        self.processor = processor
        # None when the table path is taken; otherwise why the processor itself is called.
        self.reason: Optional[str] = _unsupported(processor)
        self._table: Optional[np.ndarray] = None
        if self.reason is None:
            self._table = _value_table(processor)
            self.reason = self._check()
            if self.reason is not None:
                self._table = None

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """The (1, 3, H, W) float32 pixel values of ``image`` (mode RGB), as the processor's."""
        if self._table is None or image.mode != "RGB":
            return self._by_processor(image)
        size = self.processor.size
        height, width = get_size_with_aspect_ratio_yolos(
            (image.height, image.width), size.shortest_edge, size.longest_edge
        )
        resized = np.asarray(image.resize((width, height), resample=self.processor.resample))
        pixel_values = np.empty((3, height, width), dtype=np.float32)
        for channel in range(3):
            np.take(self._table[channel], resized[:, :, channel], out=pixel_values[channel])
        return torch.from_numpy(pixel_values)[None]

    def _by_processor(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"]

    def _check(self) -> Optional[str]:
        """None if the table path equals the processor on ``CHECK_SIZES``, else what differed."""
        random = np.random.default_rng(_CHECK_SEED)
        for width, height in CHECK_SIZES:
            pixels = random.integers(0, 256, (height, width, 3), dtype=np.uint8)
            image = Image.fromarray(pixels, mode="RGB")
            expected, got = self._by_processor(image), self(image)
            if got.dtype != expected.dtype or got.shape != expected.shape:
                return (
                    f"a {width}x{height} image gave {tuple(got.shape)} {got.dtype}, the processor "
                    f"{tuple(expected.shape)} {expected.dtype}"
                )
            if not torch.equal(got, expected):
                return f"a {width}x{height} image's pixel values differed from the processor's"
        return None


def _unsupported(processor) -> Optional[str]:
    """Why the table path cannot stand for ``processor``'s settings, or None."""
    if type(processor) is not YolosImageProcessorPil:
        return f"the processor is a {type(processor).__name__}, not YolosImageProcessorPil"
    size = processor.size
    if not (processor.do_resize and size.shortest_edge and size.longest_edge):
        return "the processor does not resize by shortest and longest edge"
    if not isinstance(processor.resample, int):
        return f"the processor's resample is {processor.resample!r}, not a PIL filter"
    if getattr(processor, "pad_size", None):
        return "the processor pads to a fixed size"
    if len(processor.image_mean or ()) != 3 or len(processor.image_std or ()) != 3:
        return "the processor's mean and std are not one value a channel"
    return None


def _value_table(processor) -> np.ndarray:
    """(3, 256) float32: what the processor's rescale and normalize make of each channel value.

    The processor's own methods run on a (3, 1, 256) image holding every value in every
    channel, so the table is their arithmetic, not a copy of it.
    """
    values = np.ascontiguousarray(np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 1, 256)))
    mapped = values
    if processor.do_rescale:
        mapped = processor.rescale(mapped, processor.rescale_factor)
    if processor.do_normalize:
        mapped = processor.normalize(mapped, processor.image_mean, processor.image_std)
    if mapped.dtype != np.float32:  # the processor's pixel values are float32 (checked too)
        mapped = mapped.astype(np.float32)
    return np.ascontiguousarray(mapped[:, 0, :])
