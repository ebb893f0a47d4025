"""Checks of model ids and of paths against the directory they must stay in."""

# Standard
from typing import Optional
import os
import re

# A model id names a directory directly inside the models directory: letters, digits, "_",
# "-" and ".", not starting with "." (staging directories of atomic saves do) and without "..".
MODEL_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def model_id_problem(model_id: str) -> Optional[str]:
    """Why ``model_id`` is not acceptable, or None."""
    if not isinstance(model_id, str) or not model_id:
        return "a model id must be a non-empty string"
    if not MODEL_ID_PATTERN.fullmatch(model_id) or ".." in model_id:
        return (
            f"model id {model_id!r} is not allowed: use 1 to 128 letters, digits, '_', '-' or "
            "'.', starting with a letter or digit, without '..' or path separators"
        )
    return None


def is_inside(path: str, root: str) -> bool:
    """True when ``path`` (symlinks resolved) is ``root`` itself or lies below it."""
    real_path, real_root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real_path, real_root]) == real_root


def model_dir_problem(path: str, models_dir: str) -> Optional[str]:
    """Why ``path`` is not a model directory directly inside ``models_dir``, or None."""
    real_path, real_root = os.path.realpath(path), os.path.realpath(models_dir)
    if os.path.dirname(real_path) != real_root:
        return f"{path} is not a directory directly inside the models directory {models_dir}"
    return model_id_problem(os.path.basename(real_path))
