"""The one reader and writer of the upstream label file format.

caikit-computer-vision's object detector is trained from a directory of images plus a text file
with one object per line::

    <file>\\t<label>\\t(<x_min>, <x_max>, <y_min>, <y_max>)

Note the coordinate order: both x values first, then both y values (not the usual
``(x_min, y_min, x_max, y_max)``). Coordinates are pixel positions, ints or floats. Several lines
may name the same image. Blank lines are skipped; every other line must be an object.

The training job runs inside the server with data the client points at, so this module is strict:
a bad line stops the whole read with ``file:line`` and what to fix, and a file name can never
lead outside the image directory.
"""

# Standard
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple
import math
import os
import re

# Local
from .atomic_dirs import write_file_atomically

EXPECTED_LINE_FORMAT = "<file>\\t<label>\\t(<x_min>, <x_max>, <y_min>, <y_max>)"

# Plain decimal numbers only: float() alone would also take "nan", "inf" and "1_000".
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

# A file name is joined to the image directory, so anything that could climb out of it or
# point elsewhere is refused; both separators, so that a file written on one OS is judged the
# same on another.
_PATH_SEPARATORS = ("/", "\\")


@dataclass(frozen=True)
class LabelledBox:
    """One labelled object: the image it is in, its label and its box in pixels."""

    image: str
    label: str
    xmin: float
    xmax: float
    ymin: float
    ymax: float


class LabelFileError(ValueError):
    """A label file line that cannot be used.

    A ``ValueError`` on purpose: caikit's runtime reports ValueError as INVALID_ARGUMENT, which
    tells the client that its data, not the server, needs fixing.
    """

    def __init__(self, path: str, line_number: Optional[int], problem: str) -> None:
        self.path = str(path)
        self.line_number = line_number
        self.problem = problem
        where = self.path if line_number is None else f"{self.path}:{line_number}"
        super().__init__(f"{where}: {problem}; expected '{EXPECTED_LINE_FORMAT}'")

    def __reduce__(self) -> Tuple[type, Tuple[str, Optional[int], str]]:
        # Exceptions pickle as cls(*args); ours takes three arguments, not the message. Needed
        # where caikit runs training in a subprocess and sends the error back.
        return (type(self), (self.path, self.line_number, self.problem))


def box_problem(box: LabelledBox) -> Optional[str]:
    """Say what makes ``box`` unusable, or None when it is fine.

    Shared by the reader and the writer so that every file written can be read back.
    """
    problem = _file_name_problem(box.image) or label_problem(box.label)
    if problem:
        return problem
    coordinates = (box.xmin, box.xmax, box.ymin, box.ymax)
    if not all(math.isfinite(value) for value in coordinates):
        return f"coordinates {coordinates} must be finite numbers"
    if min(coordinates) < 0:
        return f"coordinates {coordinates} must not be negative"
    if box.xmin >= box.xmax:
        return f"x_min {box.xmin} must be smaller than x_max {box.xmax}"
    if box.ymin >= box.ymax:
        return f"y_min {box.ymin} must be smaller than y_max {box.ymax}"
    return None


def label_problem(label: str) -> Optional[str]:
    """Say why ``label`` cannot stand in a label file, or None when it can."""
    return _text_field_problem("label", label)


def format_label_line(box: LabelledBox) -> str:
    """Return the line (without newline) that stands for ``box`` in a label file.

    Integral coordinates are written as ints (``12``, not ``12.0``) to match upstream files;
    others with ``repr`` so that reading them back gives the same float.

    Raises:
        ValueError: the box could not be read back (see ``box_problem``).
    """
    problem = box_problem(box)
    if problem:
        raise ValueError(f"cannot write {box}: {problem}")
    coordinates = ", ".join(
        _format_number(value) for value in (box.xmin, box.xmax, box.ymin, box.ymax)
    )
    return f"{box.image}\t{box.label}\t({coordinates})"


def write_labels_file(path: str, boxes: Iterable[LabelledBox]) -> None:
    """Write ``boxes`` to the label file at ``path``, atomically.

    The file is written beside the target and renamed over it, so a reader (or a training job
    started concurrently) never sees half a file.

    Raises:
        ValueError: there are no boxes (the file could not be read back) or a box is invalid.
    """
    lines = [format_label_line(box) for box in boxes]
    if not lines:
        raise ValueError(f"refusing to write {path}: no boxes (the training set would be empty)")
    write_file_atomically(path, "\n".join(lines) + "\n")


def parse_label_line(line: str, path: str, line_number: int) -> LabelledBox:
    """Parse one non-blank label file line; ``path`` and ``line_number`` go into errors.

    Fields may carry spaces around them (hand-edited files do); the file name and label are
    stripped of them.

    Raises:
        LabelFileError: the line is not a valid object line.
    """

    def fail(problem: str) -> LabelFileError:
        return LabelFileError(path, line_number, problem)

    fields = line.rstrip("\r\n").split("\t")
    if len(fields) != 3:
        raise fail(f"found {len(fields)} tab-separated field(s), need 3")
    image, label, coordinates_text = (field.strip() for field in fields)
    if not (coordinates_text.startswith("(") and coordinates_text.endswith(")")):
        raise fail(f"coordinates {coordinates_text!r} must be in parentheses")
    parts = [part.strip() for part in coordinates_text[1:-1].split(",")]
    if len(parts) != 4:
        raise fail(f"found {len(parts)} coordinate(s) in {coordinates_text!r}, need 4")
    for part in parts:
        if not _NUMBER.fullmatch(part):
            raise fail(f"coordinate {part!r} in {coordinates_text!r} is not a number")
    xmin, xmax, ymin, ymax = (float(part) for part in parts)
    box = LabelledBox(image=image, label=label, xmin=xmin, xmax=xmax, ymin=ymin, ymax=ymax)
    problem = box_problem(box)
    if problem:
        raise fail(problem)
    return box


def read_numbered_labels(
    path: str, max_boxes_per_image: Optional[int] = None
) -> List[Tuple[int, LabelledBox]]:
    """Read a whole label file into ``(line_number, box)`` pairs (line numbers from 1).

    The line numbers let later checks (image exists, box inside image) point at the line to fix.
    With ``max_boxes_per_image``, reading stops at the first line that gives an image one box
    more (a file of 200,000 boxes for one image is refused at its line 301, not parsed whole).

    Raises:
        LabelFileError: the first bad line, an image with too many boxes, or no boxes at all.
        OSError: the file cannot be opened.
    """
    numbered_boxes = []
    boxes_of: Dict[str, int] = {}
    with open(path, "rb") as label_file:
        for line_number, raw_line in enumerate(label_file, start=1):
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise LabelFileError(path, line_number, f"the line is not UTF-8 ({err})") from err
            if not line.strip():
                continue
            box = parse_label_line(line, path, line_number)
            boxes_of[box.image] = boxes_of.get(box.image, 0) + 1
            if max_boxes_per_image is not None and boxes_of[box.image] > max_boxes_per_image:
                raise LabelFileError(
                    path, line_number, too_many_boxes_problem(box.image, max_boxes_per_image)
                )
            numbered_boxes.append((line_number, box))
    if not numbered_boxes:
        raise LabelFileError(path, None, "the file holds no boxes, so the training set is empty")
    return numbered_boxes


def too_many_boxes_problem(image: str, max_boxes_per_image: int) -> str:
    """What to say of an image given more boxes than ``max_boxes_per_image``."""
    return (
        f"image '{image}' has more than {max_boxes_per_image} boxes, the limit "
        "(caikit_computer_vision.max_boxes_per_image)"
    )


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _text_field_problem(name: str, value: str) -> Optional[str]:
    if not value:
        return f"the {name} is empty"
    if value != value.strip():
        return f"the {name} {value!r} has spaces around it"
    if any(character in value for character in "\t\r\n"):
        return f"the {name} {value!r} holds a tab or a line break"
    return None


def _file_name_problem(image: str) -> Optional[str]:
    problem = _text_field_problem("file name", image)
    if problem:
        return problem
    if os.path.isabs(image) or any(separator in image for separator in _PATH_SEPARATORS):
        return f"the file name {image!r} must be a plain name in the image directory, not a path"
    if ".." in image or image == "." or "\0" in image:
        return f"the file name {image!r} must not contain '..', be '.' or hold a NUL byte"
    return None
