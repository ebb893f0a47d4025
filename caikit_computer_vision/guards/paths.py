"""Checks of model ids and of paths against the directory they must stay in."""

# Standard
from typing import Optional
import os
import re

# A model id names a directory directly inside the models directory: letters, digits, "_",
# "-" and ".", not starting with "." (staging directories of atomic saves do) and without "..".
MODEL_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# The default of caikit_computer_vision.max_model_id_length; file names cannot exceed 255 bytes.
MAX_MODEL_ID_LENGTH = 128
FILE_NAME_MAX = 255


def model_id_problem(model_id: str, max_length: int = MAX_MODEL_ID_LENGTH) -> Optional[str]:
    """Why ``model_id`` is not acceptable, or None. Looks at the string only, never the disk."""
    if not isinstance(model_id, str) or not model_id:
        return "a model id must be a non-empty string"
    if len(model_id) > max_length:
        return (
            f"model id of {len(model_id)} characters is longer than the limit of {max_length} "
            "(caikit_computer_vision.max_model_id_length)"
        )
    if not MODEL_ID_PATTERN.fullmatch(model_id) or ".." in model_id:
        return (
            f"model id {model_id!r} is not allowed: use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit, without '..' or path separators"
        )
    return None


def is_inside(path: str, root: str) -> bool:
    """True when ``path`` (symlinks resolved) is ``root`` itself or lies below it."""
    real_path, real_root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real_path, real_root]) == real_root


def model_dir_problem(path: str, models_dir: str, max_depth: int = 1) -> Optional[str]:
    """Why ``path`` is not a model directory inside ``models_dir``, or None.

    ``max_depth`` 1: directly inside it (``models/<id>``); 2 also allows ``models/<id>/<name>``,
    where ModelMesh's puller puts the model of ``<id>``. Every part is a plain model id.
    """
    real_path, real_root = os.path.realpath(path), os.path.realpath(models_dir)
    parts = os.path.relpath(real_path, real_root).split(os.sep)
    if not is_inside(real_path, real_root) or parts == ["."] or len(parts) > max_depth:
        where = "directly inside" if max_depth == 1 else f"at most {max_depth} levels inside"
        return f"{path} is not a directory {where} the models directory {models_dir}"
    for part in parts:
        problem = model_id_problem(part, FILE_NAME_MAX)
        if problem:
            return problem
    return None


# An atomic save's hidden staging or retired directory: ".<name>.staging-<pid>@<host>-<random>".
_HIDDEN_WRITE_DIR = re.compile(r"\.([^/\s'\"]{1,64}?)\.(?:staging|old)-\d+@[^/\s'\"]*")
# An absolute path: "/" after a space, a quote or "(" (or at the start), then non-space text.
_ABSOLUTE_PATH = re.compile(r"(?:(?<=^)|(?<=[\s'\"(=]))/(?:[^\s'\":,)]+/)*([^\s'\":,)/]+)")


def client_safe(message: str, work_dir: Optional[str] = None) -> str:
    """``message`` as a client may read it: no server paths, process ids or host names.

    Paths inside the runtime's working directory become relative (as the client names them:
    ``models/new_model``), a save's staging directory becomes the model's name, and any other
    absolute path is cut to its last part. Log lines keep the full message; this is for what
    goes back to the client (a training's ERRORED reasons, for one).
    """
    work_dir = work_dir or os.getcwd()
    for prefix in {os.path.realpath(work_dir), os.path.abspath(work_dir)}:
        message = message.replace(prefix.rstrip("/") + "/", "")
    message = _HIDDEN_WRITE_DIR.sub(r"\1", message)
    return _ABSOLUTE_PATH.sub(r"\1", message)
