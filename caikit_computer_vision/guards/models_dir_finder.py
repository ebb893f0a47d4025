"""A caikit model finder that finds models only directly inside ``runtime.local_models_dir``."""

# Standard
from typing import Optional
import os

# First Party
from caikit.config import get_config
from caikit.core.model_management.local_model_finder import LocalModelFinder
from caikit.core.modules import ModuleConfig
import alog

# Local
from ..model_dir_check import client_message, links_problem
from .paths import model_dir_problem

log = alog.use_channel("CCVGUARD")

# models/<id>, and models/<id>/<name> where ModelMesh's puller puts the model of <id>.
MODEL_DIR_DEPTH = 2


class ModelsDirFinder(LocalModelFinder):
    """LocalModelFinder that refuses any path outside the models directory.

    The front door already refuses every model id that is not a model directory in models/,
    and confines ModelMesh's loadModel paths to models/<id>; this finder is the second line.

    The runtime hands every model load to the finder, including the lazy loader's fallback that
    uses a client's ``mm-model-id`` as a path (``/elsewhere/model``, ``../model``). A refused
    path is a FileNotFoundError, a refused directory's content a ValueError: caikit answers
    both with NOT_FOUND, as for any unknown model. Symlinks are resolved first, so a link inside
    models/ cannot point the loader elsewhere, and neither can a link inside the model directory
    (``hf_model``, the weights, ``config.yml``, which caikit reads here): each must stay inside.
    """

    name = "CCV_MODELS_DIR"

    def find_model(self, model_path: str, **kwargs) -> Optional[ModuleConfig]:
        # Read at each call: caikit builds finders once per process, possibly under another
        # config (dump_interfaces, for one, switches local_models_dir off while it runs).
        problem = model_dir_problem(
            model_path, get_config().runtime.local_models_dir, max_depth=MODEL_DIR_DEPTH
        )
        if problem:
            log.warning("<CCV20830741W>", "refused to load a model: %s", problem)
            raise FileNotFoundError(problem)
        name = os.path.basename(os.path.normpath(model_path))
        problem = links_problem(model_path)
        if problem:
            log.warning("<CCV20830742W>", "refused to load %s: %s", model_path, problem)
            # ValueError, not FileNotFoundError: caikit's ModelManager.load replaces the message
            # of the latter with "does not contain a `config.yml` file".
            raise ValueError(f"model {name!r} cannot be loaded: {problem}")
        try:
            return super().find_model(model_path, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as err:  # a corrupt config.yml: YAML, key or type errors
            # ValueError: caikit answers NOT_FOUND ("not servable") instead of INTERNAL, and the
            # runtime goes on serving the other models.
            reason = client_message(err)
            raise ValueError(f"model {name!r} cannot be loaded: config.yml: {reason}") from err
