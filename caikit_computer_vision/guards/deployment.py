"""Guard caikit's model-management doors: DeployModel / UndeployModel (gRPC and HTTP).

caikit 0.29 always serves them, and its ModelManager joins the client's model id and file
names to ``local_models_dir`` without normalising them: ``model_id="../x"`` writes (deploy) or
deletes (undeploy) outside the models directory, and any client can upload a model. Both doors
end in the runtime's one ModelManager, so the guard wraps its two methods there.
"""

# Standard
from typing import Dict, Optional
import os

# Third Party
from grpc import StatusCode

# First Party
from caikit.runtime.types.caikit_runtime_exception import CaikitRuntimeException
import alog

# Local
from .paths import is_inside, model_id_problem

log = alog.use_channel("CCVGUARD")

ENABLE_HINT = "set caikit_computer_vision.allow_model_deployment: true in the runtime config"


def guard_model_deployment(model_manager, allowed: bool, models_dir: str) -> None:
    """Refuse deploy/undeploy unless ``allowed``; when allowed, confine them to ``models_dir``."""
    deploy_model, undeploy_model = model_manager.deploy_model, model_manager.undeploy_model

    def guarded_deploy_model(model_id: str, model_files: Dict[str, bytes], **kwargs):
        _refuse_unless_allowed(allowed, "DeployModel")
        _refuse_bad_id(model_id)
        model_dir = os.path.join(models_dir, model_id)
        for file_name in model_files:
            problem = _file_name_problem(file_name, model_dir)
            if problem:
                log.warning("<CCV40129573W>", "refused DeployModel of %s: %s", model_id, problem)
                raise CaikitRuntimeException(StatusCode.INVALID_ARGUMENT, problem)
        return deploy_model(model_id=model_id, model_files=model_files, **kwargs)

    def guarded_undeploy_model(model_id: str, *args, **kwargs):
        _refuse_unless_allowed(allowed, "UndeployModel")
        _refuse_bad_id(model_id)
        return undeploy_model(model_id, *args, **kwargs)

    model_manager.deploy_model = guarded_deploy_model
    model_manager.undeploy_model = guarded_undeploy_model


def _refuse_unless_allowed(allowed: bool, operation: str) -> None:
    if not allowed:
        log.warning("<CCV40129574W>", "refused %s: model deployment is disabled", operation)
        raise CaikitRuntimeException(
            StatusCode.PERMISSION_DENIED,
            f"{operation} is disabled on this runtime; to allow it, {ENABLE_HINT}",
        )


def _refuse_bad_id(model_id: str) -> None:
    problem = model_id_problem(model_id)
    if problem:
        log.warning("<CCV40129575W>", "refused a model management call: %s", problem)
        raise CaikitRuntimeException(StatusCode.INVALID_ARGUMENT, problem)


def _file_name_problem(file_name: str, model_dir: str) -> Optional[str]:
    """Why ``file_name`` would not land inside ``model_dir``, or None.

    Sub-directories are fine (a saved model has ``hf_model/...``); absolute names, ``..``
    parts and anything resolving outside the model's directory are not.
    """
    name = file_name.strip()
    parts = name.replace("\\", "/").split("/")
    if not name or os.path.isabs(name) or ".." in parts:
        return f"model file name {file_name!r} must be a relative path without '..' parts"
    if not is_inside(os.path.join(model_dir, name), model_dir):
        return f"model file name {file_name!r} resolves outside the model's directory"
    return None
