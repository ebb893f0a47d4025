"""Checks of the client's own inputs, made before any call to the runtime.

Each returns None when the input is usable, or one sentence that says what is wrong and what to
pass instead: a mistake is reported before a training starts, not after it has finished.
"""

# Standard
from typing import Optional, Sequence
import difflib
import pathlib

# Third Party
from PIL import Image, UnidentifiedImageError


def image_problem(path: str, flag: str = "--image") -> Optional[str]:
    """Why ``path`` cannot be sent as an image to predict on (None: it is a readable image)."""
    image_path = pathlib.Path(path)
    if not image_path.is_file():
        return f"{flag} {path}: no such file; pass the path of a JPEG or PNG"
    try:
        with Image.open(image_path) as image:
            image.verify()
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as err:
        return (
            f"{flag} {path} is not an image Pillow can read ({err.__class__.__name__}): "
            "pass a JPEG or PNG"
        )
    return None


def train_path_problem(
    path: pathlib.Path, train_dir: pathlib.Path, flag: str, want_dir: bool
) -> Optional[str]:
    """Why ``path`` cannot be sent as training data: it must exist inside ``train_dir``, where
    the runtime reads training data from (a directory when ``want_dir``, else a file)."""
    resolved, root = pathlib.Path(path).resolve(), pathlib.Path(train_dir).resolve()
    if root != resolved and root not in resolved.parents:
        return (
            f"{flag} {path} is outside {train_dir}, the only place the runtime reads training "
            f"data from: copy your data into {train_dir}/ (e.g. {train_dir}/my_data/) and pass "
            "that path"
        )
    if want_dir and not resolved.is_dir():
        return f"{flag} {path}: no such directory inside {train_dir}"
    if not want_dir and not resolved.is_file():
        return f"{flag} {path}: no such file inside {train_dir}"
    return None


def unknown_flags_message(unknown: Sequence[str], known_flags: Sequence[str]) -> str:
    """argparse's "unrecognized arguments", with the closest flag named for each typo."""
    hints = []
    for argument in unknown:
        if argument.startswith("-"):
            close = difflib.get_close_matches(argument.split("=")[0], known_flags, n=1, cutoff=0.6)
            if close:
                hints.append(f"{argument.split('=')[0]} -> {close[0]}")
    message = f"unrecognized arguments: {' '.join(unknown)}"
    if hints:
        message += f" (did you mean: {', '.join(hints)}?)"
    return message
