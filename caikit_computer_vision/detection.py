"""What a prediction does to an image, in three steps that a batch can share: prepare, forward,
finish.

``TransformersObjectDetector.run`` is these steps with the forward pass shared by concurrent
requests (batching.py). They are kept free of caikit, so that the servers ``bench/`` compares the
runtime with (KServe, LitServe, Triton) run the very same code on the same model directories.

A batch only ever holds images whose processed pixels have one shape (``PreparedImage.shape``):
YOLOS' processor pads a batch to its largest image, and padding would change the answer. Within
that, a row of a batched forward pass equals the same image's pass alone (checked in
tests/test_batching.py), so batching never changes an answer.
"""

# Standard
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple
import os

# Third Party
from transformers import YolosForObjectDetection
from transformers.models.yolos.image_processing_pil_yolos import YolosImageProcessorPil
import torch

# Local
from .duplicates import clip_to_image, keep_best_of_duplicates
from .images import ImageLimits, ImageSource, fit_for_processor, load_image
from .memory import return_freed_memory
from .pixel_table import PixelTable
from .post_processing import post_process
from .torch_device import select_device
from .traced_forward import TracedForward

# The processor rounds each resized side down to a multiple of this (see ``pad_to_aspect_ratio``).
_PROCESSOR_SIDE_MULTIPLE = 16
# From this size on, the memory of an image's decode is given back to the system when its
# answer is ready (memory.py).
_LARGE_IMAGE_PIXELS = 4_000_000


@dataclass(frozen=True)
class Detection:
    """One detected object: label, class probability and box in the input image's pixels."""

    label: str
    score: float
    xmin: int
    ymin: int
    xmax: int
    ymax: int


@dataclass(frozen=True)
class PreparedImage:
    """An image decoded, fitted and processed: what a forward pass takes, and how to map back."""

    pixel_values: torch.Tensor  # (1, 3, H, W) on the CPU
    width: int
    height: int
    fitted_width: int
    fitted_height: int
    scale_x: float
    scale_y: float

    @property
    def shape(self) -> Tuple[int, int]:
        """Images batch together only when this is the same (no padding in a batch)."""
        return tuple(self.pixel_values.shape[-2:])


# What the forward pass gives for one image: its rows of the model's logits and boxes.
ForwardRow = Tuple[torch.Tensor, torch.Tensor]


class Detector:
    """A YOLOS model and its processor, with the steps of a prediction."""

    def __init__(
        self,
        model: YolosForObjectDetection,
        processor: YolosImageProcessorPil,
        device: Optional[torch.device] = None,
        image_limits: Optional[ImageLimits] = None,
        traced: bool = False,
        pixel_table: bool = False,
    ):
        self.device = device or select_device()
        self.model = model.to(self.device).eval()
        # The forward pass as a checked TorchScript graph (traced_forward.py), or eager.
        self.traced = TracedForward(self.model) if traced else None
        self.processor = processor
        # The processor's pixel values by one resize and a table lookup (pixel_table.py), or by
        # the processor itself.
        self._pixel_values = PixelTable(processor) if pixel_table else None
        self.image_limits = image_limits or ImageLimits()
        self.id2label: Dict[int, str] = dict(model.config.id2label)
        self._parameters = sum(parameter.numel() for parameter in model.parameters())

    @classmethod
    def from_hf_dir(
        cls,
        hf_dir: str,
        image_limits: Optional[ImageLimits] = None,
        traced: bool = False,
        pixel_table: bool = False,
    ) -> "Detector":
        """The model and processor saved in ``hf_dir`` (a saved model's ``hf_model/``)."""
        processor = YolosImageProcessorPil.from_pretrained(hf_dir, local_files_only=True)
        model = YolosForObjectDetection.from_pretrained(
            hf_dir, local_files_only=True, use_safetensors=True
        )
        return cls(
            model, processor, image_limits=image_limits, traced=traced, pixel_table=pixel_table
        )

    @property
    def pixel_table_refusal(self) -> Optional[str]:
        """Why the pixel table was asked for but the processor runs instead, or None."""
        return None if self._pixel_values is None else self._pixel_values.reason

    @property
    def longest_edge(self) -> int:
        """The processor's limit on the long side (1333, YOLOS' default, when it has none)."""
        return self.processor.size.longest_edge or 1333

    @property
    def max_aspect_ratio(self) -> float:
        """Most elongated image the processor can resize without a side collapsing to zero."""
        # Keep the short side at two multiples of 16 or more after resizing.
        return max(1.0, self.longest_edge / (2 * _PROCESSOR_SIDE_MULTIPLE))

    # -- the three steps ---------------------------------------------------------------------

    def prepare(self, source: ImageSource) -> PreparedImage:
        """Decode (within ``image_limits``), fit and process one image; ValueError if it is
        not an image this detector accepts."""
        with single_threaded():
            return self._prepare(source)

    def _prepare(self, source: ImageSource) -> PreparedImage:
        image = load_image(source, self.image_limits)
        width, height = image.size
        fitted = fit_for_processor(image, self.longest_edge, self.max_aspect_ratio)
        # A 16-bit or float image was copied to RGB: its decoded pixels (up to 160 MB) need not
        # live through the processor's arrays.
        del image
        if self._pixel_values is not None:
            pixel_values = self._pixel_values(fitted.image)
        else:
            with torch.inference_mode():
                pixel_values = self.processor(images=fitted.image, return_tensors="pt")["pixel_values"]
        return PreparedImage(
            pixel_values=pixel_values,
            width=width,
            height=height,
            fitted_width=fitted.image.width,
            fitted_height=fitted.image.height,
            scale_x=fitted.scale_x,
            scale_y=fitted.scale_y,
        )

    def forward(self, batch: Sequence[PreparedImage]) -> List[ForwardRow]:
        """One forward pass for images of one ``shape``; a (logits, boxes) row for each."""
        shapes = {prepared.shape for prepared in batch}
        if len(shapes) != 1:
            raise ValueError(f"a batch holds images of one processed shape, got {sorted(shapes)}")
        pixel_values = torch.cat([prepared.pixel_values for prepared in batch]).to(self.device)
        with torch.inference_mode():
            if self.traced is None:
                outputs = self.model(pixel_values=pixel_values)
                logits, boxes = outputs.logits, outputs.pred_boxes
            else:
                logits, boxes = self.traced(pixel_values)
        logits, boxes = logits.cpu(), boxes.cpu()
        return [(logits[row : row + 1], boxes[row : row + 1]) for row in range(len(batch))]

    def pass_operations(self, batch: Sequence[PreparedImage]) -> float:
        """About how many multiply-adds a forward pass over ``batch`` takes: each parameter
        once per token (image patches and detection tokens) of each image."""
        height, width = batch[0].shape
        patch = self.model.config.patch_size
        tokens = (height // patch) * (width // patch) + self.model.config.num_detection_tokens
        return 2.0 * self._parameters * tokens * len(batch)

    def finish(
        self, prepared: PreparedImage, row: ForwardRow, threshold: float
    ) -> List[Detection]:
        """The detections of one image above ``threshold``, in its own pixels, best first.

        Boxes are clipped to the real image (not the processor's padding) before duplicates
        are judged, so that they are judged on the boxes the caller gets.
        """
        with single_threaded():
            return self._finish(prepared, row, threshold)

    def _finish(
        self, prepared: PreparedImage, row: ForwardRow, threshold: float
    ) -> List[Detection]:
        found = post_process(*row, threshold, prepared.fitted_height, prepared.fitted_width)
        boxes = clip_to_image(
            found.boxes, prepared.width / prepared.scale_x, prepared.height / prepared.scale_y
        )
        keep = keep_best_of_duplicates(found.scores, found.labels, boxes)
        detections = []
        for score, label_id, (x0, y0, x1, y1) in zip(
            found.scores[keep].tolist(),
            found.labels[keep].tolist(),
            boxes[keep].tolist(),
        ):
            detection = Detection(
                label=self.id2label[label_id],
                score=score,
                xmin=_clip(x0 * prepared.scale_x, prepared.width),
                ymin=_clip(y0 * prepared.scale_y, prepared.height),
                xmax=_clip(x1 * prepared.scale_x, prepared.width),
                ymax=_clip(y1 * prepared.scale_y, prepared.height),
            )
            # A box that lies wholly in the padding added for the processor has no area in the
            # real image.
            if detection.xmax > detection.xmin and detection.ymax > detection.ymin:
                detections.append(detection)
        detections.sort(key=lambda detection: detection.score, reverse=True)
        if prepared.width * prepared.height >= _LARGE_IMAGE_PIXELS:
            # Its decode and arrays took hundreds of MB on this thread's arena: give them back,
            # or idle RSS ratchets up with each big image.
            return_freed_memory(collect_cycles=False)
        return detections

    # -- all three, in one call --------------------------------------------------------------

    def detect(self, sources: Sequence[ImageSource], threshold: float) -> List[List[Detection]]:
        """Detections for each image; images of one processed shape share a forward pass."""
        prepared = [self.prepare(source) for source in sources]
        rows: List[Optional[ForwardRow]] = [None] * len(prepared)
        for shape in dict.fromkeys(image.shape for image in prepared):
            indices = [index for index, image in enumerate(prepared) if image.shape == shape]
            for index, row in zip(indices, self.forward([prepared[i] for i in indices])):
                rows[index] = row
        return [self.finish(image, row, threshold) for image, row in zip(prepared, rows)]


@contextmanager
def single_threaded() -> Iterator[None]:
    """torch on one thread in this thread for a while (torch's count is per thread).

    Pre- and post-processing are small tensor operations, which torch would spread over its
    threads for a loss: a softmax over 30 logits took 45 us on two threads and 9 on one here.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _clip(value: float, limit: int) -> int:
    return int(min(max(round(value), 0), limit))
