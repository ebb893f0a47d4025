"""A caikit model trainer that refuses unsafe or invalid train requests before any work."""

# Standard
from typing import Any, Dict, Optional, Type
import os
import threading

# First Party
from caikit.config import get_config
from caikit.core import ModuleBase
from caikit.core.exceptions import error_handler
from caikit.core.exceptions.caikit_core_exception import (
    CaikitCoreException,
    CaikitCoreStatusCode,
)
from caikit.core.model_management.local_model_trainer import LocalModelTrainer
import aconfig
import alog

# Local
from ..data_model import ObjectDetectionTrainSet
from .paths import is_inside, model_dir_problem, model_id_problem

log = alog.use_channel("CCVGUARD")
error = error_handler.get(log)


class GuardedModelTrainer(LocalModelTrainer):
    """LocalModelTrainer that checks a request synchronously, in the Train RPC itself.

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
    * the module's own argument checks pass (``validate_train_arguments`` when it has one).
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
        runtime = get_config().runtime
        output_dir = runtime.training.output_dir
        self._check(
            "<CCV61930216E>",
            model_id_problem(model_name),
            "model_name",
        )
        self._check(
            "<CCV61930217E>",
            None
            if isinstance(save_path, str)
            and not save_with_id
            and os.path.realpath(save_path) == os.path.realpath(output_dir)
            else f"output_path is not supported: models are saved to {output_dir}/<model_name>",
            "output_path",
        )
        if isinstance(kwargs.get("model_path"), str):
            self._check(
                "<CCV61930218E>",
                model_dir_problem(kwargs["model_path"], runtime.local_models_dir),
                "model_path",
            )
        train_data = kwargs.get("train_data")
        if isinstance(train_data, ObjectDetectionTrainSet):
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
        validate = getattr(module_class, "validate_train_arguments", None)
        if validate is not None:
            try:
                validate(*args, **kwargs)
            except (TypeError, ValueError) as err:
                raise _invalid_argument(str(err)) from err

        with self._submit_lock:
            self._check(
                "<CCV61930220E>",
                self._name_taken(model_name, output_dir),
                "model_name",
            )
            future = super().train(
                module_class,
                *args,
                # The full path, because caikit appends model_name to save_path only when it
                # is not already a substring of it: "model" would be saved over models/ itself.
                save_path=os.path.join(output_dir, model_name),
                save_with_id=save_with_id,
                external_training_id=external_training_id,
                model_name=model_name,
                **kwargs,
            )
            self._latest_by_name[model_name] = future
            return future

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
        if problem:
            error(log_code, _invalid_argument(f"{field}: {problem}"))


def _invalid_argument(message: str) -> CaikitCoreException:
    """The exception both doors map to INVALID_ARGUMENT / HTTP 400.

    caikit's gRPC Train handler also maps ValueError, but its HTTP train route does not (a
    ValueError there is a 500), so the guard speaks caikit's own exception type.
    """
    return CaikitCoreException(CaikitCoreStatusCode.INVALID_ARGUMENT, message)
