"""The data model and the task produce the wire format the example's README promises."""

# Third Party
import pytest

# First Party
from caikit.core.data_model.producer import ProducerId

# Local
from caikit_computer_vision.data_model import (
    BoundingBox,
    DetectedObject,
    ObjectDetectionResult,
    ObjectDetectionTask,
    ObjectDetectionTrainSet,
)

PACKAGE = "caikit_data_model.caikit_computer_vision"


def _fields(data_object_class):
    descriptor = data_object_class.get_proto_class().DESCRIPTOR
    return [(field.name, field.number) for field in descriptor.fields]


@pytest.mark.parametrize(
    "data_object_class, expected",
    [
        (BoundingBox, [("xmin", 1), ("xmax", 2), ("ymin", 3), ("ymax", 4)]),
        (DetectedObject, [("score", 1), ("label", 2), ("box", 3)]),
        (ObjectDetectionResult, [("detected_objects", 1), ("producer_id", 2)]),
        (ObjectDetectionTrainSet, [("img_dir_path", 1), ("labels_file", 2)]),
    ],
)
def test_messages_have_the_documented_fields_and_numbers(data_object_class, expected):
    assert _fields(data_object_class) == expected
    full_name = data_object_class.get_proto_class().DESCRIPTOR.full_name
    assert full_name == f"{PACKAGE}.{data_object_class.__name__}"


def _sample_result():
    return ObjectDetectionResult(
        detected_objects=[
            DetectedObject(
                score=0.75, label="cat", box=BoundingBox(xmin=1, xmax=20, ymin=3, ymax=40)
            ),
            DetectedObject(
                score=0.5, label="dog", box=BoundingBox(xmin=0, xmax=5, ymin=6, ymax=7)
            ),
        ],
        producer_id=ProducerId(name="Transformers Object Detector", version="0.1.0"),
    )


def test_result_round_trips_through_proto():
    result = _sample_result()
    again = ObjectDetectionResult.from_proto(result.to_proto())
    assert again.to_dict() == result.to_dict()
    assert again.detected_objects[0].box.ymin == 3


def test_result_round_trips_through_json():
    result = _sample_result()
    again = ObjectDetectionResult.from_json(result.to_json())
    assert again.to_dict() == result.to_dict()
    assert again.detected_objects[1].label == "dog"


def test_train_set_round_trips_through_proto_and_json():
    train_set = ObjectDetectionTrainSet(img_dir_path="train_data/images", labels_file="x.txt")
    assert ObjectDetectionTrainSet.from_proto(train_set.to_proto()).to_dict() == train_set.to_dict()
    assert ObjectDetectionTrainSet.from_json(train_set.to_json()).labels_file == "x.txt"


def test_task_takes_only_image_bytes_and_returns_a_result():
    # bytes alone: a str here would let clients send a path for the server to open.
    assert ObjectDetectionTask.get_required_parameters(input_streaming=False) == {"inputs": bytes}
    assert ObjectDetectionTask.get_output_type(output_streaming=False) is ObjectDetectionResult
