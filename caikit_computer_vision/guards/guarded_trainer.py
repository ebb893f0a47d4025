"""A caikit model trainer that refuses unsafe or invalid train requests before any work."""

# Standard
from typing import Any, Dict, Optional, Type
import os
import threading

# Third Party
from grpc import StatusCode

# First Party
from caikit.config import get_config
from caikit.core import ModuleBase
from caikit.core.exceptions import error_handler
from caikit.core.exceptions.caikit_core_exception import (
    CaikitCoreException,
    CaikitCoreStatusCode,
)
from caikit.runtime.types.caikit_runtime_exception import CaikitRuntimeException
import aconfig
import alog

# Local
from ..caikit_workarounds import (
    KeepSavedModelsTrainer,
    routable_training_id,
    running_trainings,
    save_path_for,
)
from ..data_model import ObjectDetectionTrainSet
from ..defaults import LIBRARY_CONFIG_KEY
from ..memory import return_freed_memory
from .limits import Limits
from .paths import is_inside, model_dir_problem, model_id_problem

log = alog.use_channel("CCVGUARD")
error = error_handler.get(log)


class GuardedModelTrainer(KeepSavedModelsTrainer):
    """caikit's LocalModelTrainer that checks a request synchronously, in the Train RPC itself.

    caikit runs training in the background, so an error inside ``train`` only shows up later as
    an ERRORED status. Everything a client can get wrong is checked here instead, and the Train
    call itself answers INVALID_ARGUMENT (HTTP 400):

    * ``model_name`` is a plain model id, no model of that name exists yet in the output
      directory, and no other training for that name is running (an existing name is refused
      rather than overwritten: retraining "new_model" needs a new name or a deleted directory);
    * the request saves only to ``<runtime.training.output_dir>/<model_name>`` (no
      ``output_path``, no ``save_with_id``);
    * ``model_path`` names a model directly inside ``runtime.local_models_dir``;
    * ``train_data`` lies inside ``training_data_dir`` (this trainer's config);
    * the module's own argument checks pass (``validate_train_arguments`` when it has one);
    * ``num_epochs`` is at most ``caikit_computer_vision.max_num_epochs`` (INVALID_ARGUMENT),
      and fewer than ``caikit_computer_vision.max_concurrent_trainings`` trainings are running
      (RESOURCE_EXHAUSTED: a further one is refused, not queued; retry when one has ended).

    Training ids are issued in the format caikit's training lookup expects, so that polling a
    training's status logs nothing (caikit_workarounds.routable_training_id), and a training
    that caikit forgets after ``retention_duration`` keeps its saved model
    (caikit_workarounds.KeepSavedModelsTrainer).
    """

    name = "CCV_GUARDED"

    def __init__(self, config: aconfig.Config, instance_name: str):
        super().__init__(config, instance_name)
        self._training_data_dir = config.get("training_data_dir")
        error.value_check(
            "<CCV61930215E>",
            bool(self._training_data_dir),
            "model_management.trainers.<name>.config.training_data_dir must be set for {}",
            self.name,
        )
        # Serialises check-then-submit, so two requests for one name cannot both pass.
        self._submit_lock = threading.Lock()
        # The latest training of each model_name (caikit's futures do not record the name).
        self._latest_by_name: Dict[str, Any] = {}

    def train(
        self,
        module_class: Type[ModuleBase],
        *args,
        save_path: Optional[str] = None,
        save_with_id: bool = False,
        external_training_id: Optional[str] = None,
        model_name: Optional[str] = None,
        **kwargs,
    ):
        """Check the request, cheapest checks first, then submit it to caikit's trainer.

        The name, the limits and the paths are looked at before the module reads a single
        image (``validate_train_arguments`` reads and decodes the whole training set): a
        request that would be refused anyway costs no more than a ``stat``.
        """
        limits = Limits.from_config()
        output_dir = get_config().runtime.training.output_dir
        self._check_model_name(limits, model_name)
        self._check_num_epochs(limits, kwargs.get("num_epochs"))
        self._check_output_path(output_dir, save_path, save_with_id)
        self._check_model_path(kwargs.get("model_path"))
        self._check_train_data(kwargs.get("train_data"))
        with self._submit_lock:
            self._check_capacity(limits, output_dir, model_name)
        self._validate_arguments(module_class, args, kwargs)
        future = self._submit(
            limits, output_dir, module_class, args, kwargs, model_name, save_with_id,
            external_training_id,
        )
        _release_memory_when_done(future)
        return future

    def _submit(
        self,
        limits: Limits,
        output_dir: str,
        module_class: Type[ModuleBase],
        args,
        kwargs: Dict[str, Any],
        model_name: str,
        save_with_id: bool,
        external_training_id: Optional[str],
    ):
        """Hand the checked request to caikit's trainer, if the name and a slot are still free
        (another request may have taken either while this one was validated)."""
        with self._submit_lock:
            self._check_capacity(limits, output_dir, model_name)
            future = super().train(
                module_class,
                *args,
                save_path=save_path_for(output_dir, model_name),
                save_with_id=save_with_id,
                external_training_id=external_training_id or routable_training_id(self),
                model_name=model_name,
                **kwargs,
            )
            self._latest_by_name[model_name] = future
        return future

    def _check_model_name(self, limits: Limits, model_name: Optional[str]) -> None:
        self._check(
            "<CCV61930216E>",
            model_id_problem(model_name, limits.max_model_id_length),
            "model_name",
        )

    def _check_num_epochs(self, limits: Limits, num_epochs: Any) -> None:
        self._check(
            "<CCV61930221E>",
            f"{num_epochs} is over the limit of {limits.max_num_epochs} "
            f"({LIBRARY_CONFIG_KEY}.max_num_epochs)"
            if isinstance(num_epochs, int) and num_epochs > limits.max_num_epochs
            else None,
            "num_epochs",
        )

    def _check_output_path(
        self, output_dir: str, save_path: Optional[str], save_with_id: bool
    ) -> None:
        """The request saves to the output directory as it is (no output_path, no id)."""
        self._check(
            "<CCV61930217E>",
            None
            if isinstance(save_path, str)
            and not save_with_id
            and os.path.realpath(save_path) == os.path.realpath(output_dir)
            else f"output_path is not supported: models are saved to {output_dir}/<model_name>",
            "output_path",
        )

    def _check_model_path(self, model_path: Any) -> None:
        if isinstance(model_path, str):
            self._check(
                "<CCV61930218E>",
                model_dir_problem(model_path, get_config().runtime.local_models_dir),
                "model_path",
            )

    def _check_train_data(self, train_data: Any) -> None:
        """The training set's image folder and label file lie inside the training data dir."""
        if not isinstance(train_data, ObjectDetectionTrainSet):
            return
        for field in ("img_dir_path", "labels_file"):
            path = getattr(train_data, field) or ""
            self._check(
                "<CCV61930219E>",
                None
                if path and is_inside(path, self._training_data_dir)
                else f"{path!r} is not inside the training data directory "
                f"{self._training_data_dir}",
                f"train_data.{field}",
            )

    def _check_capacity(self, limits: Limits, output_dir: str, model_name: str) -> None:
        """The name is free and a training slot is; call with ``_submit_lock`` held."""
        self._check("<CCV61930220E>", self._name_taken(model_name, output_dir), "model_name")
        running = running_trainings(self)
        if len(running) >= limits.max_concurrent_trainings:
            # caikit's core status codes have no RESOURCE_EXHAUSTED; its runtime exception
            # reaches the client as it is, over gRPC and (as 429) over HTTP.
            message = (
                f"{len(running)} trainings are running, the limit "
                f"({LIBRARY_CONFIG_KEY}.max_concurrent_trainings); retry when one has "
                "ended, or cancel one"
            )
            log.warning("<CCV61930222W>", "refused a training: %s", message)
            raise CaikitRuntimeException(StatusCode.RESOURCE_EXHAUSTED, message)

    @staticmethod
    def _validate_arguments(module_class: Type[ModuleBase], args, kwargs: Dict[str, Any]) -> None:
        """The module's own checks (``validate_train_arguments``), which read the data set."""
        validate = getattr(module_class, "validate_train_arguments", None)
        if validate is None:
            return
        try:
            validate(*args, **kwargs)
        except (TypeError, ValueError, OverflowError, RecursionError) as err:
            raise _invalid_argument(str(err)) from err

    def running_training_for(self, model_name: str) -> Optional[str]:
        """The id of the running training that will save ``model_name``, or None."""
        with self._submit_lock:
            latest = self._latest_by_name.get(model_name)
            if latest is not None and not latest.get_info().status.is_terminal:
                return latest.id
        return None

    def _name_taken(self, model_name: str, output_dir: str) -> Optional[str]:
        if os.path.lexists(os.path.join(output_dir, model_name)):
            return (
                f"a model named {model_name!r} already exists in {output_dir}: choose another "
                "model_name, or delete that model first"
            )
        latest = self._latest_by_name.get(model_name)
        if latest is not None and not latest.get_info().status.is_terminal:
            return f"a training for {model_name!r} is already running ({latest.id})"
        return None

    @staticmethod
    def _check(log_code: str, problem: Optional[str], field: str) -> None:
        """Refuse the request with ``problem``. ``error`` logs it at ERROR first; while a
        request is served, guards/log_lines.py drops that line for the door's one WARN line."""
        if problem:
            error(log_code, _invalid_argument(f"{field}: {problem}"))


def _release_memory_when_done(future) -> None:
    """Once the training has ended (completed, failed or cancelled), give its memory back.

    A training allocates hundreds of small tensors and batches; after it ends, glibc keeps the
    freed pages in its arenas, so the process's RSS stays up as if it were still training
    (measured in bench/front_door.py).
    """

    def wait_then_release() -> None:
        future.wait()
        return_freed_memory()

    threading.Thread(target=wait_then_release, name="ccv-train-cleanup", daemon=True).start()


def _invalid_argument(message: str) -> CaikitCoreException:
    """The exception both doors map to INVALID_ARGUMENT / HTTP 400.

    caikit's gRPC Train handler also maps ValueError, but its HTTP train route does not (a
    ValueError there is a 500), so the guard speaks caikit's own exception type.
    """
    return CaikitCoreException(CaikitCoreStatusCode.INVALID_ARGUMENT, message)
