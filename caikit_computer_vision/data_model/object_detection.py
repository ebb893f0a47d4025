"""Data model objects for object detection.

Each ``@dataobject`` class becomes a protobuf message in the package
``caikit_data_model.caikit_computer_vision``; ``FieldNumber`` pins the wire field numbers so that
reordering attributes here never silently breaks existing clients.
"""

# Standard
from typing import List

# Third Party
from py_to_proto.dataclass_to_proto import Annotated, FieldNumber

# First Party
from caikit.core import DataObjectBase, dataobject
from caikit.core.data_model.producer import ProducerId

PACKAGE = "caikit_data_model.caikit_computer_vision"


@dataobject(package=PACKAGE)
class BoundingBox(DataObjectBase):
    """An axis-aligned box in pixel coordinates of the input image.

    The field order (xmin, xmax, ymin, ymax) follows the upstream data model and its label file
    format, not the more common (xmin, ymin, xmax, ymax): always fill it by keyword.
    """

    xmin: Annotated[int, FieldNumber(1)]
    xmax: Annotated[int, FieldNumber(2)]
    ymin: Annotated[int, FieldNumber(3)]
    ymax: Annotated[int, FieldNumber(4)]


@dataobject(package=PACKAGE)
class DetectedObject(DataObjectBase):
    """One detection: the class probability, the label name and where it is."""

    score: Annotated[float, FieldNumber(1)]
    label: Annotated[str, FieldNumber(2)]
    box: Annotated[BoundingBox, FieldNumber(3)]


@dataobject(package=PACKAGE)
class ObjectDetectionResult(DataObjectBase):
    """Everything detected in one image, with the model that produced it."""

    detected_objects: Annotated[List[DetectedObject], FieldNumber(1)]
    producer_id: Annotated[ProducerId, FieldNumber(2)]


@dataobject(package=PACKAGE)
class ObjectDetectionTrainSet(DataObjectBase):
    """Where a training set lives on the server: an image directory and a label file.

    The label file holds one object per line:
    ``<file>\\t<label>\\t(<x_min>, <x_max>, <y_min>, <y_max>)``; see ``label_format``.
    """

    img_dir_path: Annotated[str, FieldNumber(1)]
    labels_file: Annotated[str, FieldNumber(2)]
