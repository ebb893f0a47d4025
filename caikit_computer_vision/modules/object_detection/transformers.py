"""TransformersObjectDetector: a Hugging Face YOLOS model served as a caikit module.

caikit reads the type hints of ``run`` and ``train`` to build the gRPC and HTTP APIs, so their
signatures are the example's public interface: ``run`` gives
``ObjectDetectionTaskRequest {bytes inputs = 1; optional double threshold = 2;}`` and ``train``
gives the ``...TransformersObjectDetectorTrainParameters`` message.
"""

# Standard
from typing import List, Optional, Sequence, Tuple, Union
import copy
import math
import os
import threading

# Third Party
import grpc
from safetensors import SafetensorError
from transformers import YolosForObjectDetection
from transformers.utils import logging as hf_logging
from transformers.models.yolos.image_processing_pil_yolos import YolosImageProcessorPil
import torch

# First Party
from caikit.config import get_config
from caikit.core import ModuleBase, ModuleConfig, ModuleSaver, module
from caikit.core.data_model.producer import ProducerId
from caikit.core.exceptions import error_handler
from caikit.core.toolkit.concurrency.destroyable_thread import ThreadDestroyedException
from caikit.interfaces.vision.data_model.backends import image_pil_backend
from caikit.runtime.types.caikit_runtime_exception import CaikitRuntimeException
import alog

# Local
from ...atomic_dirs import DirectoryExistsError, staged_directory
from ...batching import (
    PARALLEL_PASS_OPERATIONS,
    Batcher,
    ClientGone,
    ThreadShare,
    client_still_waiting,
)
from ...data_model import (
    BoundingBox,
    DetectedObject,
    ObjectDetectionResult,
    ObjectDetectionTask,
    ObjectDetectionTrainSet,
)
from ...defaults import (
    DEFAULT_SEED,
    DEFAULT_THRESHOLD,
    DEFAULT_TRAIN_BATCH_SIZE,
    LIBRARY_CONFIG_KEY,
    MAX_BOXES_PER_IMAGE,
)
from ...detection import Detector, ForwardRow, PreparedImage, cores, single_threaded
from ...guards.limits import Limits
from ...images import ImageLimits
from ...labelled_images import LabelledImage, load_labelled_images
from ...model_dir_check import (
    FailedLoads,
    check_model_dir,
    client_message,
    directory_signature,
    release_memory,
)
from ...torch_device import select_device
from ...training import TrainingStopped, fine_tune

log = alog.use_channel("CCVYOLOS")
error = error_handler.get(log)

# Sub-directory of a saved model that holds the Hugging Face model and processor files.
HF_ARTIFACTS_DIR = "hf_model"
# This library's keys (see runtime_config.yaml).
_TRAIN_BATCH_SIZE_KEY = "train_batch_size"
_MAX_BOXES_PER_IMAGE_KEY = "max_boxes_per_image"
# torch's intra-op threads of every forward pass and training of this process (batching.py).
_THREADS = ThreadShare(cores())
# Model directories that failed to load, with why, until their files change (see ``load``).
_FAILED_LOADS = FailedLoads()

# Per-file progress bars of tiny local loads and saves only clutter the runtime's log.
hf_logging.disable_progress_bar()


@module(
    id="ff412509-d44e-4a4b-bdee-82d3b12faa67",
    name="Transformers Object Detector",
    version="0.1.0",
    task=ObjectDetectionTask,
)
class TransformersObjectDetector(ModuleBase):
    """Object detection with a Hugging Face YOLOS model (``YolosForObjectDetection``)."""

    def __init__(self, model: YolosForObjectDetection, processor: YolosImageProcessorPil):
        super().__init__()
        # Read once, so that a wrong image_formats / max_image_pixels or batching setting fails
        # the model's load.
        limits = Limits.from_config()
        self.detector = Detector(
            model,
            processor,
            select_device(),
            ImageLimits.from_config(),
            traced=limits.trace_forward_pass,
            pixel_table=True,
        )
        if self.detector.pixel_table_refusal is not None:
            log.info(
                "<CCV72813401I>",
                "pixel values by the processor itself (slower, same answers): %s",
                self.detector.pixel_table_refusal,
            )
        _THREADS.fixed = limits.torch_threads or None
        self.batcher = Batcher(
            self._forward,
            max_batch_size=limits.predict_batch_size,
            max_delay_s=limits.predict_batch_delay_ms / 1000,
            batch_size_for=self._batch_size_for,
            lanes=cores(),
        )

    @property
    def model(self) -> YolosForObjectDetection:
        return self.detector.model

    @property
    def processor(self) -> YolosImageProcessorPil:
        return self.detector.processor

    @property
    def device(self) -> torch.device:
        return self.detector.device

    @property
    def image_limits(self) -> ImageLimits:
        return self.detector.image_limits

    # -- construction and persistence ------------------------------------------------------

    @classmethod
    def bootstrap(cls, model_name_or_path: str) -> "TransformersObjectDetector":
        """Wrap a Hugging Face YOLOS checkpoint directory (``config.json``, weights and
        ``preprocessor_config.json``) as a caikit module. Local files only: nothing is downloaded.
        """
        error.type_check("<CCV50281947E>", str, model_name_or_path=model_name_or_path)
        error.value_check(
            "<CCV50281948E>",
            os.path.isdir(model_name_or_path),
            "model_name_or_path {} is not a directory: pass a local Hugging Face YOLOS "
            "checkpoint directory (this example never downloads models)",
            model_name_or_path,
        )
        model = YolosForObjectDetection.from_pretrained(model_name_or_path, local_files_only=True)
        processor = YolosImageProcessorPil.from_pretrained(
            model_name_or_path, local_files_only=True
        )
        return cls(model, processor)

    def save(self, model_path: str) -> None:
        """Save to ``model_path`` atomically; an existing model there is never replaced.

        Everything is written to a temporary directory beside ``model_path`` and renamed into
        place at the end, so a runtime that lazy-loads from the models directory never sees half
        a model. The rename refuses an existing ``model_path`` by itself (not check-then-rename),
        so of two runtimes saving the same name into one ``models/``, the later one fails with
        ``FileExistsError`` (its training ends ERRORED) and the first one's model stays.
        """
        try:
            with staged_directory(model_path, replace=False) as staging:
                with ModuleSaver(self, model_path=str(staging)) as saver:
                    relative_dir, absolute_dir = saver.add_dir(HF_ARTIFACTS_DIR)
                    self.model.save_pretrained(absolute_dir)
                    self.processor.save_pretrained(absolute_dir)
                    saver.update_config({"hf_artifact_path": os.path.normpath(relative_dir)})
        except DirectoryExistsError as err:
            # Only the name: the client chose it; the server's directories are not its business.
            name = os.path.basename(os.path.normpath(model_path))
            raise DirectoryExistsError(
                f"a model named {name!r} already exists (saved models are never replaced): "
                "train again with another model_name, or delete that model first"
            ) from err

    @classmethod
    def load(cls, model_path: Union[str, ModuleConfig]) -> "TransformersObjectDetector":
        """Load a model written by ``save``, once its files pass ``check_model_dir``.

        transformers builds the model that ``config.json`` describes before it reads the
        weights, so a broken directory used to cost a whole model's memory per attempt (a
        missing config.json: a default-size YOLOS) and caikit makes three attempts per request.
        A directory that cannot be served raises ValueError (the runtime answers NOT_FOUND) with
        the model's name and what is wrong, never a server path, and that answer is remembered
        until something in the directory changes.
        """
        config = ModuleConfig.load(model_path)
        model_dir = os.path.abspath(config.model_path)
        signature = directory_signature(model_dir)
        problem = _FAILED_LOADS.problem(model_dir, signature)
        if problem is None:
            problem = _hf_files_problem(model_dir, config.hf_artifact_path)
        if problem is None:
            # On one torch thread: caikit loads in threads that live on, and a thread that ran
            # torch on more threads keeps an OpenMP team that stops every pass's threads from
            # spinning (batching._OpenMpTeam).
            with single_threaded():
                model, processor, problem = _read_hf_model(model_dir, config.hf_artifact_path)
        if problem is not None:
            # A training cancelled while it loads its base model: not a problem of the files.
            _stop_if_cancelled()
            _FAILED_LOADS.remember(model_dir, signature, problem)
            name = os.path.basename(model_dir)
            # A ValueError says "this model is not usable" (the runtime answers NOT_FOUND)
            # rather than "the server broke" (INTERNAL).
            error("<CCV50281950E>", ValueError(f"model {name!r} cannot be loaded: {problem}"))
        _FAILED_LOADS.forget(model_dir)
        with single_threaded():
            return cls(model, processor)

    # -- inference ---------------------------------------------------------------------------

    def run(
        self,
        inputs: image_pil_backend.PIL_SOURCE_TYPES,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> ObjectDetectionResult:
        """Detect objects in ``inputs`` and keep those scoring above ``threshold``.

        Boxes are in pixel coordinates of the input image, clipped to it, most confident first.
        Over the runtime, ``inputs`` is always image bytes (the task's type); in-process callers
        may also pass a PIL image, a uint8 array or a file path. Concurrent calls share forward
        passes (batching.py); the answer is the one the image gets alone.
        """
        _check_threshold(threshold)
        with self.batcher.preparing():
            prepared = self.detector.prepare(inputs)
        try:
            row = self.batcher.submit(prepared.shape, prepared, client_still_waiting())
        except ClientGone as gone:
            raise CaikitRuntimeException(grpc.StatusCode.CANCELLED, str(gone)) from gone
        detections = self.detector.finish(prepared, row, threshold)
        return ObjectDetectionResult(
            detected_objects=[
                DetectedObject(
                    score=found.score,
                    label=found.label,
                    box=BoundingBox(
                        xmin=found.xmin, xmax=found.xmax, ymin=found.ymin, ymax=found.ymax
                    ),
                )
                for found in detections
            ],
            producer_id=ProducerId(name=self.MODULE_NAME, version=self.MODULE_VERSION),
        )

    def _batch_size_for(self, prepared: PreparedImage) -> int:
        """Images of this one's shape that a pass may hold while it gains from sharing."""
        return max(1, int(PARALLEL_PASS_OPERATIONS // self.detector.pass_operations([prepared])))

    def _forward(self, batch: Sequence[PreparedImage]) -> List[ForwardRow]:
        return _THREADS.run_forward(
            lambda: self.detector.forward(batch), self.detector.pass_operations(batch)
        )

    @property
    def longest_edge(self) -> int:
        """The processor's limit on the long side (1333, YOLOS' default, when it has none)."""
        return self.detector.longest_edge

    @property
    def max_aspect_ratio(self) -> float:
        """Most elongated image the processor can resize without a side collapsing to zero."""
        return self.detector.max_aspect_ratio

    # -- training ----------------------------------------------------------------------------

    @classmethod
    def validate_train_arguments(
        cls,
        model_path: str,
        train_data: ObjectDetectionTrainSet,
        num_epochs: int,
        learning_rate: float,
    ) -> List[LabelledImage]:
        """Check everything ``train`` is given, reading the whole training set; return it.

        Raises ``ValueError``/``TypeError`` (INVALID_ARGUMENT in the runtime) with what to fix.
        The runtime's trainer guard calls this before accepting a train request, so a bad
        request is refused by the RPC itself instead of failing later in the background.
        """
        error.type_check("<CCV72813390E>", str, model_path=model_path)
        error.type_check("<CCV72813391E>", ObjectDetectionTrainSet, train_data=train_data)
        error.value_check(
            "<CCV72813392E>",
            isinstance(num_epochs, int) and not isinstance(num_epochs, bool) and num_epochs >= 1,
            "num_epochs must be a whole number >= 1, got {}",
            num_epochs,
        )
        error.value_check(
            "<CCV72813393E>",
            isinstance(learning_rate, (int, float))
            and math.isfinite(learning_rate)
            and learning_rate > 0,
            "learning_rate must be a finite number > 0 (e.g. 1e-4), got {}",
            learning_rate,
        )
        max_boxes = _whole_number_setting(_MAX_BOXES_PER_IMAGE_KEY, "<CCV31558724E>")
        images = load_labelled_images(
            train_data.img_dir_path,
            train_data.labels_file,
            MAX_BOXES_PER_IMAGE if max_boxes is None else max_boxes,
        )
        error.value_check(
            "<CCV72813394E>",
            os.path.isfile(os.path.join(model_path, "config.yml")),
            "model_path {} is not a saved model directory (no config.yml): point it at a "
            "model saved by this module, e.g. models/my_model",
            model_path,
        )
        return images

    @classmethod
    def train(
        cls,
        model_path: str,
        train_data: ObjectDetectionTrainSet,
        num_epochs: int,
        learning_rate: float,
    ) -> "TransformersObjectDetector":
        """Fine-tune the model saved at ``model_path`` on ``train_data`` and return a new module.

        The whole training set is read and validated before any training starts. If the data
        names labels the base model does not know, a new classification head is trained with
        the data's labels (sorted by name); otherwise the base model's head and label ids are kept.
        """
        images = cls.validate_train_arguments(model_path, train_data, num_epochs, learning_rate)
        _stop_if_cancelled()
        base = cls.load(model_path)
        _stop_if_cancelled()
        data_labels = sorted({box.label for image in images for box in image.boxes})
        model = _with_labels(base.model, data_labels)
        with _THREADS.training():
            try:
                fine_tune(
                    model=model,
                    processor=base.processor,
                    images=images,
                    num_epochs=num_epochs,
                    learning_rate=float(learning_rate),
                    batch_size=train_batch_size(),
                    seed=DEFAULT_SEED,
                    device=base.device,
                    longest_edge=base.longest_edge,
                    max_aspect_ratio=base.max_aspect_ratio,
                    stop_requested=_cancelled,
                )
            except TrainingStopped as stopped:
                raise ThreadDestroyedException() from stopped
        _stop_if_cancelled()  # before caikit saves what it returns
        return cls(model, base.processor)


def _cancelled() -> bool:
    """Whether this training was cancelled: caikit_workarounds.py ``KeepSavedModelFuture.cancel``
    marks the training's thread (a caikit ``DestroyableThread``) and lets the training stop
    itself, here and before every step, instead of raising into the thread at any bytecode."""
    return getattr(threading.current_thread(), "destroyed", False)


def _stop_if_cancelled() -> None:
    if _cancelled():
        # caikit's own exception for a stopped training: its future then reads CANCELED.
        raise ThreadDestroyedException()


def _hf_files_problem(model_dir: str, hf_artifact_path: Optional[str]) -> Optional[str]:
    """Why the Hugging Face files that config.yml names cannot be loaded, or None."""
    # config.yml is data from disk: it must not point the loader outside the model dir.
    hf_dir = os.path.normpath(os.path.join(model_dir, hf_artifact_path or ""))
    if not hf_artifact_path or not hf_dir.startswith(model_dir + os.sep):
        return "config.yml has no valid hf_artifact_path inside the model directory"
    return check_model_dir(model_dir, os.path.relpath(hf_dir, model_dir), YolosForObjectDetection)


def _read_hf_model(
    model_dir: str, hf_artifact_path: str
) -> Tuple[Optional[YolosForObjectDetection], Optional[YolosImageProcessorPil], Optional[str]]:
    """(model, processor, None) read from checked files, or (None, None, why not).

    A failure here is one the checks did not foresee: its half-built model is released before
    the answer goes back (the exception's traceback holds it), not kept for each retry.
    """
    hf_dir = os.path.join(model_dir, hf_artifact_path)
    try:
        # The processor first: it is small, and a broken one then costs no model.
        processor = YolosImageProcessorPil.from_pretrained(hf_dir, local_files_only=True)
        # transformers memory-maps safetensors weights by default, so a served model would
        # keep reading its file: an operator who truncates or replaces it (cp, rsync, a new
        # training copied in) makes the next page fault a SIGBUS that kills the runtime.
        # disable_mmap reads the file into memory once (a 25 MB yolos-tiny-size model: about
        # 45 ms more to load, the same RSS, held as private memory instead of page cache);
        # use_safetensors refuses a .bin checkpoint, which torch.load would also map.
        model = YolosForObjectDetection.from_pretrained(
            hf_dir, local_files_only=True, disable_mmap=True, use_safetensors=True
        )
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
        problem = client_message(err)
    else:
        return model, processor, None
    release_memory()
    return None, None, problem


def train_batch_size() -> int:
    """Images per training step: ``caikit_computer_vision.train_batch_size`` if set, else
    ``DEFAULT_TRAIN_BATCH_SIZE``. Read at every training, so a changed config applies to the
    next one."""
    batch_size = _whole_number_setting(_TRAIN_BATCH_SIZE_KEY, "<CCV31558723E>")
    return DEFAULT_TRAIN_BATCH_SIZE if batch_size is None else batch_size


def _whole_number_setting(key: str, log_code: str) -> Union[int, None]:
    """This library's config value ``key``: None when unset, else a whole number >= 1."""
    value = (get_config().get(LIBRARY_CONFIG_KEY) or {}).get(key)
    if value is not None:
        error.value_check(
            log_code,
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            "{}.{} must be a whole number >= 1, got {}",
            LIBRARY_CONFIG_KEY,
            key,
            value,
        )
    return value


def _check_threshold(threshold: float) -> None:
    error.value_check(
        "<CCV31558720E>",
        isinstance(threshold, (int, float))
        and not isinstance(threshold, bool)
        and math.isfinite(threshold)
        and 0.0 <= threshold <= 1.0,
        "threshold must be a number between 0 and 1 (a minimum class probability), got {}",
        threshold,
    )


def _with_labels(
    model: YolosForObjectDetection, data_labels: list
) -> YolosForObjectDetection:
    """Return ``model`` if it knows every label in the data, else a copy with a new class head."""
    known = set(model.config.label2id)
    if set(data_labels) <= known:
        return model
    log.info(
        "<CCV72813395I>",
        "training labels %s differ from the base model's %s: training a new classification head",
        data_labels,
        sorted(known),
    )
    config = copy.deepcopy(model.config)
    config.id2label = dict(enumerate(data_labels))
    config.label2id = {label: index for index, label in enumerate(data_labels)}
    config.num_labels = len(data_labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEFAULT_SEED)
        new_model = YolosForObjectDetection(config)
    # Everything but the classifier (backbone, detection tokens, box head) carries over.
    state = {
        key: value
        for key, value in model.state_dict().items()
        if not key.startswith("class_labels_classifier.")
    }
    missing, _ = new_model.load_state_dict(state, strict=False)
    error.value_check(
        "<CCV72813396E>",
        all(key.startswith("class_labels_classifier.") for key in missing),
        "unexpected missing weights when replacing the class head: {}",
        missing,
    )
    return new_model
