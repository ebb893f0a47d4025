"""The fine-tuning loop behind ``TransformersObjectDetector.train``.

Kept apart from the module so it reads top to bottom: encode every image once, then for each
epoch shuffle, pad each batch, step the optimiser and log the mean loss. YOLOS computes its own
DETR-style loss (Hungarian matching, class + L1 + GIoU) when given ``labels``.
"""

# Standard
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple
import time

# Third Party
from transformers import YolosForObjectDetection
from transformers.models.yolos.image_processing_pil_yolos import YolosImageProcessorPil
import torch

# First Party
import alog

# Local
from .images import decode_image, fit_for_processor
from .labelled_images import LabelledImage

log = alog.use_channel("CCVTRAIN")

# Gradient norm clipping, as in DETR's reference training (max_norm 0.1).
MAX_GRAD_NORM = 0.1
WEIGHT_DECAY = 1e-4


@dataclass
class EncodedExample:
    """One training image as the model sees it, plus its targets in YOLOS' format."""

    pixel_values: torch.Tensor  # (3, H, W), normalised
    class_labels: torch.Tensor  # (N,) int64 ids
    boxes: torch.Tensor  # (N, 4) centre-x, centre-y, width, height, relative to H x W


@dataclass
class EpochReport:
    """What one epoch did, handed to the progress callback."""

    epoch: int
    num_epochs: int
    mean_loss: float
    seconds: float


def encode_example(
    processor: YolosImageProcessorPil,
    image: LabelledImage,
    label2id: Dict[str, int],
    longest_edge: int,
    max_aspect_ratio: float,
) -> EncodedExample:
    """Resize and normalise one image and express its boxes the way YOLOS' loss expects."""
    fitted = fit_for_processor(decode_image(image.path), longest_edge, max_aspect_ratio)
    # Boxes in pixels of the fitted image (the same as the original's unless it was shrunk).
    boxes = [
        (box.xmin / fitted.scale_x, box.ymin / fitted.scale_y,
         box.xmax / fitted.scale_x, box.ymax / fitted.scale_y)
        for box in image.boxes
    ]
    annotation = {
        "image_id": 0,
        "annotations": [
            {
                # COCO detection format: [x, y, width, height] in pixels.
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "category_id": label2id[box.label],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0,
            }
            for box, (x0, y0, x1, y1) in zip(image.boxes, boxes)
        ],
    }
    encoded = processor(images=fitted.image, annotations=annotation, return_tensors="pt")
    target = encoded["labels"][0]
    return EncodedExample(
        pixel_values=encoded["pixel_values"][0],
        class_labels=target["class_labels"].long(),
        boxes=target["boxes"].float(),
    )


def collate(examples: Sequence[EncodedExample]) -> Tuple[torch.Tensor, List[Dict[str, torch.Tensor]]]:
    """Pad a batch to its largest image (bottom/right) and rescale boxes to the padded canvas.

    YOLOS has no pixel mask, so a box must be relative to the padded tensor the model sees.
    """
    height = max(example.pixel_values.shape[1] for example in examples)
    width = max(example.pixel_values.shape[2] for example in examples)
    pixel_values = torch.zeros(len(examples), 3, height, width)
    labels = []
    for index, example in enumerate(examples):
        _, h, w = example.pixel_values.shape
        pixel_values[index, :, :h, :w] = example.pixel_values
        scale = torch.tensor([w / width, h / height, w / width, h / height])
        labels.append({"class_labels": example.class_labels, "boxes": example.boxes * scale})
    return pixel_values, labels


def fine_tune(
    model: YolosForObjectDetection,
    processor: YolosImageProcessorPil,
    images: Sequence[LabelledImage],
    num_epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    longest_edge: int,
    max_aspect_ratio: float,
    on_epoch: Optional[Callable[[EpochReport], None]] = None,
) -> List[float]:
    """Train ``model`` in place on ``images``; return the mean loss of every epoch.

    Reproducible: the shuffling generator and torch's RNG are seeded from ``seed`` (the caller's
    global RNG state is restored afterwards).
    """
    label2id = model.config.label2id
    started = time.perf_counter()
    examples = [
        encode_example(processor, image, label2id, longest_edge, max_aspect_ratio)
        for image in images
    ]
    log.info(
        "<CCV10448210I>",
        "encoded %d training images in %.1f s",
        len(examples),
        time.perf_counter() - started,
    )

    model.to(device)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=learning_rate, weight_decay=WEIGHT_DECAY
    )
    order_generator = torch.Generator().manual_seed(seed)
    epoch_losses: List[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for epoch in range(1, num_epochs + 1):
            epoch_started = time.perf_counter()
            order = torch.randperm(len(examples), generator=order_generator).tolist()
            loss_sum = 0.0
            for start in range(0, len(order), batch_size):
                batch = [examples[index] for index in order[start : start + batch_size]]
                pixel_values, labels = collate(batch)
                labels = [{key: value.to(device) for key, value in label.items()} for label in labels]
                loss = model(pixel_values=pixel_values.to(device), labels=labels).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                loss_sum += loss.item() * len(batch)
            report = EpochReport(
                epoch=epoch,
                num_epochs=num_epochs,
                mean_loss=loss_sum / len(examples),
                seconds=time.perf_counter() - epoch_started,
            )
            epoch_losses.append(report.mean_loss)
            log.info(
                "<CCV10448211I>",
                "epoch %d/%d: loss %.4f (%.2f s)",
                report.epoch,
                report.num_epochs,
                report.mean_loss,
                report.seconds,
            )
            if on_epoch is not None:
                on_epoch(report)
    model.eval()
    return epoch_losses
