"""A training reads only files inside the training data directory, and takes COCO labels, over
the real Train RPC of a runtime on loopback ports (HTTP here; gRPC's Train goes through the same
trainer guard, caikit_computer_vision/guards/guarded_trainer.py).

Every image is resolved with its symlinks followed; a link out of the image directory is refused
in the Train call itself (HTTP 400 / INVALID_ARGUMENT), and the refusal names only what the
client sent, never where the link leads.
"""

# Standard
import os
import shutil

# Third Party
import pytest

# Local
from example_tools.synthetic_data import generate_train_data

from .conftest import encode_image, noise_image
from .served_example import TRAIN_ROUTE, train_body, wait_for_training

SECRET_NAME = "private-target"


@pytest.fixture(scope="module")
def runtime(served, tmp_path_factory):
    """The shared runtime, its train_data/ holding links out of it and a COCO data set.

    The links stand in a directory of their own (train_data/linked/), so that the other tests'
    trainings on train_data/images never meet them.
    """
    runtime = served.runtime
    outside = tmp_path_factory.mktemp(SECRET_NAME)
    (outside / f"{SECRET_NAME}.jpg").write_bytes(encode_image(noise_image(64, 64)))
    (outside / "labels.txt").write_text("00000.jpg\tcat\t(1, 20, 2, 30)\n")
    train_data = runtime.work_dir / "train_data"
    linked = train_data / "linked"
    shutil.copytree(train_data / "images", linked / "images")
    os.symlink(outside / f"{SECRET_NAME}.jpg", linked / "images" / "linked.jpg")
    lines = (train_data / "labels.txt").read_text().splitlines()[:4]
    (linked / "with_link.txt").write_text("\n".join(lines + ["linked.jpg\tcat\t(1, 20, 2, 30)"]))
    os.symlink(outside / "labels.txt", linked / "linked_labels.txt")
    generate_train_data(str(train_data / "coco"), num_images=16, seed=7, label_format="coco")
    return runtime


@pytest.mark.parametrize(
    "labels, field, names",
    [
        ("train_data/linked/with_link.txt",
         "with_link.txt:5: image 'linked.jpg' in train_data/linked/images",
         "is a link that leads outside"),
        ("train_data/linked/linked_labels.txt", "train_data.labels_file",
         "'train_data/linked/linked_labels.txt' is not inside the training data directory"),
    ],
    ids=["image", "labels-file"],
)
def test_a_link_out_of_the_training_data_is_refused_naming_only_what_was_sent(
    runtime, labels, field, names
):
    name = "linked_" + labels.rsplit("/", 1)[-1].split(".")[0]
    body = train_body(name, img_dir="train_data/linked/images", labels=labels)
    status, answer = runtime.http("POST", TRAIN_ROUTE, body)
    assert status == 400, answer
    assert field in answer["details"] and names in answer["details"]
    assert SECRET_NAME not in answer["details"]
    assert SECRET_NAME not in runtime.log()


def test_a_coco_labels_file_trains_through_the_same_rpc(runtime):
    body = train_body(
        "from_coco", img_dir="train_data/coco/images", labels="train_data/coco/annotations.json"
    )
    status, answer = runtime.http("POST", TRAIN_ROUTE, body)
    assert status == 200, answer
    wait_for_training(runtime, answer["training_id"], "COMPLETED")
    assert (runtime.work_dir / "models" / "from_coco" / "config.yml").is_file()
