"""The fine-tuning loop behind ``TransformersObjectDetector.train``.

Read top to bottom: encode every image once into stacked tensors, then for each epoch shuffle,
augment, step the optimiser under a one-cycle schedule, and report the mean loss once per epoch.

Why it is not ``model(pixel_values, labels=...)``: for a small model the step is bound by Python
and host syncs, not by arithmetic. transformers' YOLOS loss matches every image on its own with
scipy (a device-to-host copy per image), and a per-batch collate moves every target to the device
one tensor at a time. Here the images are stacked once (per image size), the targets are padded
tensors, and the DETR loss (class + L1 + GIoU, no-object down-weighted) and its one-to-one
matching are computed for the whole batch at once on the model's device. The only host syncs are
one per epoch (the loss that is reported) and the caller's progress callback. On a CUDA GPU
full batches are replayed from a recorded CUDA graph after a few eager warm-up steps (the
numbers and which steps run eagerly are in step_graphs.py), so the step avoids what a
recording cannot take: ``.prod`` (its backward syncs), scatter/gather and indexed writes.
"""

# Standard
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple
import math
import os
import time

# Third Party
from transformers import YolosForObjectDetection
from transformers.models.yolos.image_processing_pil_yolos import YolosImageProcessorPil
import torch
import torch.nn.functional as F

# First Party
import alog

# Local
from .images import decode_image, fit_for_processor
from .labelled_images import LabelledImage
from .step_graphs import StepGraphs

log = alog.use_channel("CCVTRAIN")

# Gradient norm clipping, as in DETR's reference training (max_norm 0.1).
MAX_GRAD_NORM = 0.1
WEIGHT_DECAY = 1e-4
# Share of the steps spent warming the learning rate up (one-cycle schedule: from lr / 25,
# OneCycleLR's default div_factor, up to lr, then cosine decay to lr / 25 / FINAL_LR_DIVISOR,
# i.e. lr / 2500). A constant learning rate left the demo's held-out quality depending on
# torch's thread count; warm-up plus decay at a larger batch lands in the same place whatever
# the thread count (measured in docs/training.md).
WARMUP_FRACTION = 0.1
FINAL_LR_DIVISOR = 100.0
# DETR's loss weights (transformers' YolosConfig defaults): class 1, L1 5, GIoU 2, and the
# no-object class weighted 0.1 in the class loss.
CLASS_WEIGHT = 1.0
L1_WEIGHT = 5.0
GIOU_WEIGHT = 2.0
NO_OBJECT_WEIGHT = 0.1
# See Recipe.
MATCHES_PER_OBJECT = 3
ANCHOR_WEIGHT = 5.0
# Whole-data-set tensors up to this size live on the device for the whole training (one copy);
# larger sets are copied a batch at a time.
MAX_DATA_ON_DEVICE_BYTES = 1 << 30
# Images per processor call while encoding (bounds the memory of one call).
_ENCODE_CHUNK = 256
# cuBLAS is deterministic only with a fixed workspace (CUDA docs, "Results reproducibility").
_CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


@dataclass(frozen=True)
class Recipe:
    """The choices of the training that are not the request's (epochs, peak learning rate).

    Each default was measured on the demo (docs/training.md), judged by the worst of 3 data
    seeds x torch threads {1, 2}, not the best run.
    """

    # DETR's auxiliary losses: the heads also read the detection tokens after every earlier
    # encoder layer, so each layer gets a direct signal (what it adds: docs/training.md).
    auxiliary_losses: bool = True
    # One-to-many matching (as in H-DETR / Group DETR): each object is the target of this many
    # detection tokens, so a batch trains 3x the positives. Duplicates it teaches are removed
    # by run()'s class-aware NMS (duplicates.py). What it adds: docs/training.md.
    matches_per_object: int = MATCHES_PER_OBJECT
    # Weight of a fixed spatial prior in the matching cost: token i prefers objects near its
    # anchor (a grid point, ``query_anchors``). Early in training the predicted boxes are noise
    # and the matching flips between tokens from step to step; the prior keeps it stable.
    anchor_weight: float = ANCHOR_WEIGHT
    warmup_fraction: float = WARMUP_FRACTION
    # Left-right mirroring of a batch's images (and boxes).
    flip_probability: float = 0.5
    max_grad_norm: float = MAX_GRAD_NORM
    # torch's deterministic algorithms for the duration of the training (``_deterministic``).
    deterministic: bool = True
    # On a CUDA GPU, replay full batches' training step from a CUDA graph (step_graphs.py).
    # Off, every step is launched op by op (the same arithmetic, slower for a small model:
    # docs/training.md).
    cuda_graphs: bool = True


class TrainingStopped(Exception):
    """``fine_tune`` stopped between two steps because its ``stop_requested`` said so."""


@dataclass
class EpochReport:
    """What one epoch did, handed to the progress callback."""

    epoch: int
    num_epochs: int
    mean_loss: float
    seconds: float


@dataclass
class ImageBucket:
    """All training images of one encoded size, stacked, with their targets padded.

    ``class_labels`` is ``-1`` and ``boxes`` zero where ``mask`` is False (an image has fewer
    objects than the bucket's most crowded image). Boxes are YOLOS' (centre-x, centre-y, width,
    height), relative to the image.
    """

    pixel_values: torch.Tensor  # (N, 3, H, W)
    class_labels: torch.Tensor  # (N, M) int64
    boxes: torch.Tensor  # (N, M, 4)
    mask: torch.Tensor  # (N, M) bool

    def __len__(self) -> int:
        return self.pixel_values.shape[0]

    def to(self, device: torch.device) -> "ImageBucket":
        return ImageBucket(
            *(tensor.to(device) for tensor in (self.pixel_values, self.class_labels, self.boxes,
                                               self.mask))
        )

    def select(self, indices: torch.Tensor, device: torch.device) -> "ImageBucket":
        indices = indices.to(self.pixel_values.device)
        return ImageBucket(
            *(tensor[indices].to(device, non_blocking=True)
              for tensor in (self.pixel_values, self.class_labels, self.boxes, self.mask))
        )

    def nbytes(self) -> int:
        return sum(
            tensor.element_size() * tensor.nelement()
            for tensor in (self.pixel_values, self.class_labels, self.boxes, self.mask)
        )


def encode_images(
    processor: YolosImageProcessorPil,
    images: Sequence[LabelledImage],
    label2id: Dict[str, int],
    longest_edge: int,
    max_aspect_ratio: float,
) -> List[ImageBucket]:
    """Resize and normalise every image exactly as ``run`` does, grouped by resulting size.

    Images of one size are stacked into one tensor, so a batch is an index into it: no padding
    (YOLOS has no pixel mask; ``run`` never pads either) and no per-batch collate. Generated
    data is one size, so one bucket; a real data set gives one bucket per encoded size.
    """
    # Targets first, images grouped by fitted size: the processor then runs once per chunk of
    # same-size images (its per-call overhead is most of its cost for small images).
    by_size: Dict[Tuple[int, int], List[Tuple[object, List[int], List[List[float]]]]] = {}
    for image in images:
        fitted = fit_for_processor(decode_image(image.read_bytes()), longest_edge, max_aspect_ratio)
        # Relative to the fitted image (padding included), which the processor scales as a
        # whole: its resize leaves relative coordinates unchanged.
        width, height = fitted.image.size
        labels, boxes = [], []
        for box in image.boxes:
            x0, x1 = box.xmin / fitted.scale_x, box.xmax / fitted.scale_x
            y0, y1 = box.ymin / fitted.scale_y, box.ymax / fitted.scale_y
            labels.append(label2id[box.label])
            boxes.append([(x0 + x1) / 2 / width, (y0 + y1) / 2 / height,
                          (x1 - x0) / width, (y1 - y0) / height])
        by_size.setdefault((width, height), []).append((fitted.image, labels, boxes))
    grouped: Dict[Tuple[int, int], List[Tuple[torch.Tensor, List[int], List[List[float]]]]] = {}
    for members in by_size.values():
        for start in range(0, len(members), _ENCODE_CHUNK):
            chunk = members[start : start + _ENCODE_CHUNK]
            pixel_values = processor(
                images=[fitted for fitted, _, _ in chunk], return_tensors="pt"
            )["pixel_values"]
            for values, (_, labels, boxes) in zip(pixel_values, chunk):
                grouped.setdefault(tuple(values.shape[1:]), []).append((values, labels, boxes))
    buckets = []
    for members in grouped.values():
        most_objects = max(len(labels) for _, labels, _ in members)
        class_labels = torch.full((len(members), most_objects), -1, dtype=torch.long)
        boxes = torch.zeros(len(members), most_objects, 4)
        mask = torch.zeros(len(members), most_objects, dtype=torch.bool)
        for index, (_, labels, image_boxes) in enumerate(members):
            class_labels[index, : len(labels)] = torch.tensor(labels, dtype=torch.long)
            boxes[index, : len(labels)] = torch.tensor(image_boxes, dtype=torch.float32)
            mask[index, : len(labels)] = True
        buckets.append(ImageBucket(
            torch.stack([pixel_values for pixel_values, _, _ in members]),
            class_labels,
            boxes.clamp(0.0, 1.0),
            mask,
        ))
    return buckets


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
    recipe: Optional[Recipe] = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> List[float]:
    """Train ``model`` in place on ``images``; return the mean loss of every epoch.

    ``stop_requested`` is asked before every step; once it says yes, ``TrainingStopped`` is
    raised there (the model is left half-trained).

    ``learning_rate`` is the peak of the one-cycle schedule. Reproducible on one device and
    thread count: the shuffling, augmentation and init use generators seeded from ``seed``
    (the caller's global RNG state is restored afterwards) and torch's deterministic algorithms
    are switched on for the duration of the training (``Recipe.deterministic``). On a CPU the
    same inputs give the same weights bit for bit; on a CUDA GPU to float rounding (see
    ``_deterministic``).
    """
    recipe = recipe or Recipe()
    started = time.perf_counter()
    buckets = _encode_training_set(processor, images, model, longest_edge, max_aspect_ratio)
    with _deterministic(device, recipe.deterministic):
        model.to(device)
        buckets = _place_training_set(buckets, device)
        model.train()
        graphs_wanted = wants_step_graphs(recipe, device, buckets)
        optimizer = _adamw(model, learning_rate, device, capturable=graphs_wanted)
        scheduler = _one_cycle_schedule(
            optimizer, learning_rate, steps_per_epoch(buckets, batch_size) * num_epochs, recipe
        )
        loss_sum = torch.zeros((), device=device)
        step = _training_step(model, optimizer, recipe, device, loss_sum)
        graphs = StepGraphs(step, batch_size, device) if graphs_wanted else None
        epoch_losses = _train_epochs(
            graphs.run if graphs is not None else _eager_step(step),
            scheduler, loss_sum, buckets, batch_size, num_epochs, seed, recipe, device, on_epoch,
            stop_requested,
        )
        # The gradients (in a recording's memory, if any) are not needed after the training.
        optimizer.zero_grad(set_to_none=True)
        _log_replays(graphs)
    model.eval()
    log.info(
        "<CCV10448212I>",
        "trained %d epochs of %d images in %.1f s: loss %.4f -> %.4f",
        num_epochs,
        sum(len(bucket) for bucket in buckets),
        time.perf_counter() - started,
        epoch_losses[0],
        epoch_losses[-1],
    )
    return epoch_losses


# A training step as the epoch loop takes it: (bucket's index, bucket, image indices, which to
# mirror). StepGraphs.run, or the eager step (``_eager_step``).
TakeStep = Callable[[int, "ImageBucket", torch.Tensor, torch.Tensor], None]


def _encode_training_set(
    processor: YolosImageProcessorPil,
    images: Sequence[LabelledImage],
    model: YolosForObjectDetection,
    longest_edge: int,
    max_aspect_ratio: float,
) -> List[ImageBucket]:
    started = time.perf_counter()
    buckets = encode_images(
        processor, images, model.config.label2id, longest_edge, max_aspect_ratio
    )
    log.info(
        "<CCV10448210I>",
        "encoded %d training images (%d size(s)) in %.1f s",
        len(images),
        len(buckets),
        time.perf_counter() - started,
    )
    return buckets


def _place_training_set(buckets: List[ImageBucket], device: torch.device) -> List[ImageBucket]:
    """The whole set on the device when it fits ``MAX_DATA_ON_DEVICE_BYTES``; else in host
    memory, pinned when the device is a GPU (so that a batch's copy does not wait)."""
    if sum(bucket.nbytes() for bucket in buckets) <= MAX_DATA_ON_DEVICE_BYTES:
        return [bucket.to(device) for bucket in buckets]
    if device.type == "cuda":
        return [
            ImageBucket(*(tensor.pin_memory() for tensor in (
                bucket.pixel_values, bucket.class_labels, bucket.boxes, bucket.mask)))
            for bucket in buckets
        ]
    return buckets


def wants_step_graphs(recipe: Recipe, device: torch.device, buckets: Sequence[ImageBucket]) -> bool:
    """Whether the steps are replayed as CUDA graphs (step_graphs.py): asked for, on a CUDA
    device, with the whole training set on it (a recording cannot copy from the host)."""
    return (
        recipe.cuda_graphs
        and device.type == "cuda"
        and all(bucket.pixel_values.device.type == "cuda" for bucket in buckets)
    )


def _adamw(
    model: YolosForObjectDetection, learning_rate: float, device: torch.device, capturable: bool
) -> torch.optim.AdamW:
    """DETR's optimiser. A step replayed as a CUDA graph needs the optimiser's step count and
    learning rate on the device (``capturable``, a tensor learning rate)."""
    return torch.optim.AdamW(
        model.parameters(),
        lr=torch.tensor(learning_rate, device=device) if capturable else learning_rate,
        weight_decay=WEIGHT_DECAY,
        fused=True,
        capturable=capturable,
    )


def steps_per_epoch(buckets: Sequence[ImageBucket], batch_size: int) -> int:
    """Each bucket is cut into batches on its own, so its last batch may be partial."""
    return sum(math.ceil(len(bucket) / batch_size) for bucket in buckets)


def _one_cycle_schedule(
    optimizer: torch.optim.Optimizer, learning_rate: float, training_steps: int, recipe: Recipe
) -> torch.optim.lr_scheduler.OneCycleLR:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=learning_rate,
        # OneCycleLR divides by the length of its warm-up, pct_start * total_steps - 1: a
        # short training (a few steps) would make it zero. At least two warm-up steps; a
        # schedule longer than the training just ends before its tail.
        total_steps=max(training_steps, math.floor(2 / recipe.warmup_fraction) + 1),
        pct_start=recipe.warmup_fraction,
        anneal_strategy="cos",
        final_div_factor=FINAL_LR_DIVISOR,
        # Adam's beta1 stays 0.9: a recorded step (CUDA graph) bakes the fused AdamW's
        # betas into its kernels, so a schedule of them would not reach it. Measured on
        # the demo: no worse than cycling it 0.95 -> 0.85 -> 0.95 (docs/training.md).
        cycle_momentum=False,
    )


def _eager_step(step: Callable[[ImageBucket, torch.Tensor, torch.Tensor], None]) -> TakeStep:
    def take_step(key: int, bucket: ImageBucket, indices: torch.Tensor, flip: torch.Tensor):
        del key
        step(bucket, indices, flip)

    return take_step


def _train_epochs(
    take_step: TakeStep,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_sum: torch.Tensor,
    buckets: Sequence[ImageBucket],
    batch_size: int,
    num_epochs: int,
    seed: int,
    recipe: Recipe,
    device: torch.device,
    on_epoch: Optional[Callable[[EpochReport], None]],
    stop_requested: Callable[[], bool],
) -> List[float]:
    """Every epoch: its batches in a shuffled order, one step and one schedule step each, then
    its report. The shuffling draws from a generator of ``seed``; torch's global RNG is seeded
    from it too, and put back as it was afterwards."""
    generator = torch.Generator().manual_seed(seed)
    num_images = sum(len(bucket) for bucket in buckets)
    epoch_losses: List[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for epoch in range(1, num_epochs + 1):
            epoch_started = time.perf_counter()
            loss_sum.zero_()
            for bucket_index, indices, flip in _epoch_batches(
                buckets, batch_size, generator, recipe.flip_probability, device
            ):
                if stop_requested():
                    raise TrainingStopped(f"stopped as asked, in epoch {epoch} of {num_epochs}")
                take_step(bucket_index, buckets[bucket_index], indices, flip)
                scheduler.step()
            report = EpochReport(
                epoch=epoch,
                num_epochs=num_epochs,
                # The one host sync of the epoch.
                mean_loss=loss_sum.item() / num_images,
                seconds=time.perf_counter() - epoch_started,
            )
            epoch_losses.append(report.mean_loss)
            _report_epoch(report, on_epoch)
    return epoch_losses


def _report_epoch(report: EpochReport, on_epoch: Optional[Callable[[EpochReport], None]]) -> None:
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


def _log_replays(graphs: Optional[StepGraphs]) -> None:
    if graphs is not None:
        log.info("<CCV10448213I>", "%d step(s) replayed from %d CUDA graph(s)%s",
                 graphs.replays, graphs.recorded,
                 f"; not recorded: {graphs.failure}" if graphs.failure else "")


def detection_loss(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    class_labels: torch.Tensor,
    boxes: torch.Tensor,
    mask: torch.Tensor,
    matches_per_object: int = 1,
    anchor_weight: float = 0.0,
) -> torch.Tensor:
    """DETR's set loss for a whole batch: match predictions to objects one-to-one, then
    class cross-entropy over every detection token (unmatched ones must say "no object") plus
    L1 and GIoU on the matched boxes, normalised by the number of objects.

    Shapes: ``logits`` (B, Q, C+1) with no-object last, ``pred_boxes`` (B, Q, 4) and ``boxes``
    (B, M, 4) in (cx, cy, w, h), ``class_labels`` and ``mask`` (B, M).
    """
    batch, queries, classes_plus_one = logits.shape
    no_object = classes_plus_one - 1
    if matches_per_object > 1:
        class_labels = class_labels.repeat_interleave(matches_per_object, dim=1)
        boxes = boxes.repeat_interleave(matches_per_object, dim=1)
        mask = mask.repeat_interleave(matches_per_object, dim=1)
    matched_query = match_predictions(logits, pred_boxes, class_labels, boxes, mask, anchor_weight)
    # Which token each real object is matched to, one-hot: (B, M, Q). The matched tokens'
    # classes and boxes are read through it with a sum and a matrix product rather than
    # scatter/gather, whose deterministic CUDA versions go through index_put and its host-side
    # steps: the step must record as a CUDA graph (step_graphs.py). Exact: each token is
    # matched at most once, so every sum has one non-zero term.
    assigned = (
        matched_query[..., None] == torch.arange(queries, device=logits.device)
    ) & mask[..., None]
    # Each query's target class: the matched object's, else no-object.
    target_classes = torch.where(
        assigned.any(1), (assigned * class_labels.clamp(min=0)[..., None]).sum(1), no_object
    )
    # masked_fill_, not ``[no_object] =``: an indexed write of a Python number into a CUDA
    # tensor starts from a host tensor.
    class_weights = torch.ones(classes_plus_one, device=logits.device).masked_fill_(
        torch.arange(classes_plus_one, device=logits.device) == no_object, NO_OBJECT_WEIGHT
    )
    class_loss = F.cross_entropy(
        logits.reshape(-1, classes_plus_one), target_classes.reshape(-1), weight=class_weights
    )
    num_objects = mask.sum().clamp(min=1)
    # Padding objects read an all-zero box; the mask drops them below.
    predicted = assigned.to(pred_boxes.dtype) @ pred_boxes
    valid = mask[..., None].float()
    l1_loss = ((predicted - boxes).abs() * valid).sum() / num_objects
    giou = _paired_giou(_corners(predicted), _corners(boxes))
    giou_loss = ((1.0 - giou) * mask.float()).sum() / num_objects
    return CLASS_WEIGHT * class_loss + L1_WEIGHT * l1_loss + GIOU_WEIGHT * giou_loss


@torch.no_grad()
def match_predictions(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    class_labels: torch.Tensor,
    boxes: torch.Tensor,
    mask: torch.Tensor,
    anchor_weight: float = 0.0,
) -> torch.Tensor:
    """For each object, the index of the detection token it is matched to: (B, M).

    DETR's matching cost (class 1, L1 5, GIoU 2), solved greedily on the device: repeatedly
    take the cheapest (token, object) pair left in every image at once. This is one-to-one like
    the Hungarian matching transformers runs (scipy, one image at a time, on the host), and the
    same when objects do not compete for one token; it needs no host sync, and M small steps.
    """
    batch, queries, _ = logits.shape
    objects = class_labels.shape[1]
    probabilities = logits.softmax(-1)
    safe_labels = class_labels.clamp(min=0)
    class_cost = -probabilities.gather(2, safe_labels[:, None, :].expand(-1, queries, -1))
    l1_cost = torch.cdist(pred_boxes, boxes, p=1)
    giou_cost = -_pairwise_giou(_corners(pred_boxes), _corners(boxes))
    cost = CLASS_WEIGHT * class_cost + L1_WEIGHT * l1_cost + GIOU_WEIGHT * giou_cost
    if anchor_weight:
        anchors = query_anchors(queries, logits.device)
        cost = cost + anchor_weight * torch.cdist(
            anchors.expand(batch, -1, -1), boxes[..., :2], p=1
        )
    # Padding objects are never picked; their "match" is ignored by the loss (masked out).
    cost = cost.masked_fill(~mask[:, None, :], math.inf)
    matched = torch.zeros(batch, objects, dtype=torch.long, device=logits.device)
    query_ids = torch.arange(queries, device=logits.device)
    object_ids = torch.arange(objects, device=logits.device)
    # Element-wise masks rather than ``cost[rows, query, :] = inf``: an indexed write of a
    # Python number into a CUDA tensor starts from a host tensor, and the training step must
    # record as a CUDA graph (step_graphs.py).
    for _ in range(objects):
        cheapest, flat = cost.reshape(batch, -1).min(dim=1)
        query, obj = flat // objects, flat % objects
        picked_object = object_ids == obj[:, None]
        # An image whose objects are all matched has only inf left: keep what it has.
        matched = torch.where(
            picked_object & torch.isfinite(cheapest)[:, None], query[:, None], matched
        )
        cost = cost.masked_fill(
            (query_ids == query[:, None])[:, :, None] | picked_object[:, None, :], math.inf
        )
    return matched


def every_layer_loss(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    class_labels: torch.Tensor,
    boxes: torch.Tensor,
    mask: torch.Tensor,
    recipe: Recipe,
) -> torch.Tensor:
    """The sum over layers of ``detection_loss``, in one call with the layers folded into the
    batch: the loss and its matching are a few dozen small ops whatever the batch, so one call
    instead of one per layer halves their Python and dispatch cost (the tiny model's step is
    bound by that, not by arithmetic).

    Exact, not an approximation: every layer matches each object to a distinct token, so every
    layer has the same number of objects and the same no-object weight total; the folded
    call's normalisers are ``layers`` times a single layer's, and ``layers`` times its result
    is the per-layer sum.
    """
    layers = logits.shape[0]
    return layers * detection_loss(
        logits.flatten(0, 1).float(),
        pred_boxes.flatten(0, 1).float(),
        class_labels.repeat(layers, 1),
        boxes.repeat(layers, 1, 1),
        mask.repeat(layers, 1),
        recipe.matches_per_object,
        recipe.anchor_weight,
    )


def predict_every_layer(
    model: YolosForObjectDetection, pixel_values: torch.Tensor, every_layer: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class logits and boxes from the detection tokens after every encoder layer.

    DETR's auxiliary losses: the heads also read the detection tokens of earlier layers, so
    every layer gets a direct training signal. Index -1 is what ``model(...)`` returns.
    """
    outputs = model.vit(pixel_values, output_hidden_states=every_layer)
    tokens = model.config.num_detection_tokens
    levels = [outputs.last_hidden_state[:, -tokens:]]
    if every_layer:
        levels = [model.vit.layernorm(hidden[:, -tokens:]) for hidden in
                  outputs.hidden_states[1:-1]] + levels
    detection_tokens = torch.stack(levels)
    return (
        model.class_labels_classifier(detection_tokens),
        model.bbox_predictor(detection_tokens).sigmoid(),
    )


def query_anchors(queries: int, device: torch.device) -> torch.Tensor:
    """A fixed point of the image for every detection token: (1, Q, 2) relative (x, y).

    The tokens fill a grid of ceil(sqrt(Q)) columns, row by row, each at its cell's centre.
    """
    columns = math.ceil(math.sqrt(queries))
    rows = math.ceil(queries / columns)
    index = torch.arange(queries, device=device)
    x = (index % columns + 0.5) / columns
    y = (index // columns + 0.5) / rows
    return torch.stack((x, y), dim=-1)[None]


def _training_step(
    model: YolosForObjectDetection,
    optimizer: torch.optim.Optimizer,
    recipe: Recipe,
    device: torch.device,
    loss_sum: torch.Tensor,
) -> Callable[[ImageBucket, torch.Tensor, torch.Tensor], None]:
    """One optimiser step on a batch of a bucket: (bucket, image indices, which to mirror).

    Adds the batch's loss times its size to ``loss_sum``. Written to be recordable as a CUDA
    graph (step_graphs.py): no host syncs, and only tensors that keep their memory from one
    call to the next (the bucket's, the model's, the optimiser's, ``loss_sum``) outlive it.
    """
    # bf16 autocast where the device has it: halves activation traffic on a GPU. CPUs do bf16
    # matmuls slowly unless they have AMX, so the CPU stays in float32. No cast cache: a CUDA
    # graph must not keep casts made during its recording (torch.cuda.graph's docs).
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    def step(bucket: ImageBucket, indices: torch.Tensor, flip: torch.Tensor) -> None:
        batch = bucket.select(indices, device)
        pixel_values, boxes = _flip_horizontally(batch.pixel_values, batch.boxes, flip)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16,
                            cache_enabled=False):
            logits, pred_boxes = predict_every_layer(model, pixel_values, recipe.auxiliary_losses)
        loss = every_layer_loss(logits, pred_boxes, batch.class_labels, boxes, batch.mask, recipe)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
        optimizer.step()
        loss_sum.add_(loss.detach() * len(indices))

    return step


def _epoch_batches(
    buckets: Sequence[ImageBucket],
    batch_size: int,
    generator: torch.Generator,
    flip_probability: float,
    device: torch.device,
) -> List[Tuple[int, torch.Tensor, torch.Tensor]]:
    """One epoch's batches: (bucket's index, image indices, which images to mirror).

    Every bucket shuffled and cut into batches, the buckets' batches in random order. Drawn on
    the host from ``generator`` (reproducible whatever the device), then copied to the device
    in one go for the whole epoch: a copy from pageable host memory waits until the device has
    finished its queued work, so two small copies per step would be two host syncs per step.
    """
    batches = []
    for bucket_index, bucket in enumerate(buckets):
        order = torch.randperm(len(bucket), generator=generator)
        batches.extend((bucket_index, chunk) for chunk in order.split(batch_size))
    batches = [batches[position]
               for position in torch.randperm(len(batches), generator=generator).tolist()]
    flips = [torch.rand(len(chunk), generator=generator) < flip_probability
             for _, chunk in batches]
    sizes = [len(chunk) for _, chunk in batches]
    # Buckets live together: all on the device, or all in host memory (too big for it).
    data_device = buckets[0].pixel_values.device
    indices = torch.cat([chunk for _, chunk in batches]).to(data_device).split(sizes)
    flips = torch.cat(flips).to(device).split(sizes)
    return [(bucket_index, chunk, flip)
            for (bucket_index, _), chunk, flip in zip(batches, indices, flips)]


def _flip_horizontally(
    pixel_values: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mirror the images where ``flip`` is True, and their boxes with them.

    The one augmentation: every generated shape is left-right symmetric, so a mirrored image
    is another valid training image, and it halves memorisation of the demo's images.
    """
    pixel_values = torch.where(flip[:, None, None, None], pixel_values.flip(-1), pixel_values)
    mirrored = torch.stack(
        (1.0 - boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]), dim=-1
    )
    return pixel_values, torch.where(flip[:, None, None], mirrored, boxes)


def _corners(boxes: torch.Tensor) -> torch.Tensor:
    centre_x, centre_y, width, height = boxes.unbind(-1)
    return torch.stack(
        (centre_x - width / 2, centre_y - height / 2, centre_x + width / 2, centre_y + height / 2),
        dim=-1,
    )


def _pairwise_giou(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """GIoU of every box of ``first`` (B, Q, 4) with every box of ``second`` (B, M, 4)."""
    return _paired_giou(first[:, :, None, :], second[:, None, :, :])


def _paired_giou(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of boxes (x0, y0, x1, y1) paired by broadcasting."""
    area_first = (first[..., 2] - first[..., 0]).clamp(min=0) * (
        first[..., 3] - first[..., 1]).clamp(min=0)
    area_second = (second[..., 2] - second[..., 0]).clamp(min=0) * (
        second[..., 3] - second[..., 1]).clamp(min=0)
    # Width times height written out, not ``.prod(-1)``: prod's backward asks the host whether
    # any input is zero (a host sync, which a CUDA graph cannot record).
    top_left = torch.maximum(first[..., :2], second[..., :2])
    bottom_right = torch.minimum(first[..., 2:], second[..., 2:])
    overlap = (bottom_right - top_left).clamp(min=0)
    intersection = overlap[..., 0] * overlap[..., 1]
    union = area_first + area_second - intersection
    iou = intersection / union.clamp(min=1e-7)
    hull = (
        torch.maximum(first[..., 2:], second[..., 2:])
        - torch.minimum(first[..., :2], second[..., :2])
    ).clamp(min=0)
    enclosing = hull[..., 0] * hull[..., 1]
    return iou - (enclosing - union) / enclosing.clamp(min=1e-7)


@contextmanager
def _deterministic(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Switch torch's deterministic algorithms on for the training, and back as they were.

    The training promises the same weights from the same data, seed, device and thread count.
    On a CPU that holds anyway. On CUDA the switch makes index/scatter backward and cuBLAS
    deterministic, but two kernels YOLOS needs have no deterministic variant in warn-only
    mode: bicubic upsampling's backward (the position embeddings are resized to every image)
    and fused attention's backward. ``warn_only`` keeps them from failing a user's training,
    at the price of runs that agree to float rounding, not bit for bit.
    """
    if not enabled:
        yield
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_DETERMINISTIC_WORKSPACE)
    was_enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_filling = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new uninitialised tensor with NaN (a debugging aid
    # for kernels that read memory they did not write), hundreds of fills per step of the tiny
    # model (its cost: docs/training.md). No kernel here reads uninitialised memory, so the
    # results are the same without it.
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = was_filling
        torch.use_deterministic_algorithms(was_enabled, warn_only=was_warn_only)
