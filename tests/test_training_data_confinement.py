"""A training reads only files inside the training data directory, and takes COCO labels, over
the real Train RPC of a runtime on loopback ports (HTTP here; gRPC's Train goes through the same
trainer guard, caikit_computer_vision/guards/guarded_trainer.py).

Every image is resolved with its symlinks followed; a link out of the image directory is refused
in the Train call itself (HTTP 400 / INVALID_ARGUMENT), and the refusal names only what the
client sent, never where the link leads.
"""

# Standard
import os
import time

# Third Party
import pytest

# Local
from example_tools.runtime_harness import start_example_runtime
from example_tools.synthetic_data import generate_train_data

from .test_label_format import write_jpeg

TRAIN_ROUTE = "/api/v1/ObjectDetectionTaskTransformersObjectDetectorTrain"
SECRET_NAME = "private-target"


def _train_body(model_name, img_dir="train_data/images", labels="train_data/labels.txt"):
    return {
        "model_name": model_name,
        "parameters": {
            "model_path": "models/my_model",
            "train_data": {"img_dir_path": img_dir, "labels_file": labels},
            "num_epochs": 1,
            "learning_rate": 0.003,
        },
    }


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, saved_model_dir):
    work_dir = tmp_path_factory.mktemp("confined")
    outside = tmp_path_factory.mktemp(SECRET_NAME)
    write_jpeg(outside / f"{SECRET_NAME}.jpg", 64, 64)
    (outside / "labels.txt").write_text("00000.jpg\tcat\t(1, 20, 2, 30)\n")
    runtime = start_example_runtime(work_dir, saved_model_dir)
    train_data = work_dir / "train_data"
    os.symlink(outside / f"{SECRET_NAME}.jpg", train_data / "images" / "linked.jpg")
    lines = (train_data / "labels.txt").read_text().splitlines()[:4]
    (train_data / "with_link.txt").write_text("\n".join(lines + ["linked.jpg\tcat\t(1, 20, 2, 30)"]))
    os.symlink(outside / "labels.txt", train_data / "linked_labels.txt")
    generate_train_data(str(train_data / "coco"), num_images=16, seed=7, label_format="coco")
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.mark.parametrize(
    "labels, field, names",
    [
        ("train_data/with_link.txt", "with_link.txt:5: image 'linked.jpg' in train_data/images",
         "is a link that leads outside"),
        ("train_data/linked_labels.txt", "train_data.labels_file",
         "'train_data/linked_labels.txt' is not inside the training data directory"),
    ],
    ids=["image", "labels-file"],
)
def test_a_link_out_of_the_training_data_is_refused_naming_only_what_was_sent(
    runtime, labels, field, names
):
    name = "linked_" + labels.rsplit("/", 1)[-1].split(".")[0]
    status, answer = runtime.http("POST", TRAIN_ROUTE, _train_body(name, labels=labels))
    assert status == 400, answer
    assert field in answer["details"] and names in answer["details"]
    assert SECRET_NAME not in answer["details"]
    assert SECRET_NAME not in runtime.log()


def test_a_coco_labels_file_trains_through_the_same_rpc(runtime):
    body = _train_body(
        "from_coco", img_dir="train_data/coco/images", labels="train_data/coco/annotations.json"
    )
    status, answer = runtime.http("POST", TRAIN_ROUTE, body)
    assert status == 200, answer
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = runtime.http_json(f"/management/trainings?training_id={answer['training_id']}")
        if info["state"] in ("COMPLETED", "ERRORED", "CANCELED"):
            break
        time.sleep(0.2)
    assert info["state"] == "COMPLETED", info
    assert (runtime.work_dir / "models" / "from_coco" / "config.yml").is_file()

