"""COCO label files (read, written, scored with pycocotools) and the confinement of training data.

Every file a training reads must resolve, symlinks followed, inside the directory the client
named; refusals name what the client sent, never where a link leads.
"""

# Standard
import io
import json
import os
import pathlib

# Third Party
import pytest

# Local
from caikit_computer_vision.coco_format import is_coco_file, read_coco_boxes
from caikit_computer_vision.label_format import LabelledBox
from caikit_computer_vision.labelled_images import load_labelled_images
from example_tools.evaluation import ScoredBox, coco_scores, read_coco_ground_truth
from example_tools.synthetic_data import generate_train_data
from vision_client.calls import ProgressLine

from .image_files import write_jpeg, write_text


@pytest.fixture(scope="module")
def both_formats(tmp_path_factory) -> pathlib.Path:
    """One generated set written with both label files: labels.txt and annotations.json."""
    directory = tmp_path_factory.mktemp("both")
    generate_train_data(str(directory), num_images=12, seed=3)
    generate_train_data(str(directory), num_images=12, seed=3, label_format="coco")
    return directory


def coco(images, annotations, categories=({"id": 1, "name": "cat"},)) -> dict:
    return {"images": list(images), "annotations": list(annotations),
            "categories": list(categories)}


def write_json(path: pathlib.Path, value) -> str:
    path.write_text(json.dumps(value), encoding="utf-8")
    return str(path)


# ----- COCO label files ------------------------------------------------------------------------


def test_a_coco_file_reads_as_the_same_set_as_the_tab_file(both_formats):
    images_dir = str(both_formats / "images")
    from_coco = load_labelled_images(images_dir, str(both_formats / "annotations.json"))
    from_tab = load_labelled_images(images_dir, str(both_formats / "labels.txt"))
    assert from_coco == from_tab
    assert is_coco_file(str(both_formats / "annotations.json"))
    assert not is_coco_file(str(both_formats / "labels.txt"))


def test_coco_crowd_and_empty_boxes_are_skipped_and_boxes_clipped_to_the_image(tmp_path):
    path = write_json(tmp_path / "a.json", coco(
        [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48}],
        [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [50, 40, 20, 20]},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [3, 3, 0, 5]},
        ],
    ))
    ((where, box, size),) = read_coco_boxes(path)
    assert where == f"{path}: annotation id 1"
    assert box == LabelledBox("a.jpg", "cat", 50, 64, 40, 48)
    assert size == (64, 48)


@pytest.mark.parametrize(
    "dataset, problem",
    [
        ({"images": []}, "'annotations' is missing or not a list"),
        (coco([{"id": 1}], []), r"images\[0\] has no valid 'file_name'"),
        (coco([{"id": 1, "file_name": "a.jpg"}],
              [{"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}]),
         "annotation id 4 names image_id 2, which 'images' does not list"),
        (coco([{"id": 1, "file_name": "a.jpg"}],
              [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1]}]),
         r"annotations\[0\].bbox must be 4 finite numbers"),
        (coco([{"id": 1, "file_name": "../a.jpg"}],
              [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]),
         "must be a plain name"),
        (coco([{"id": 1, "file_name": "a.jpg"}], []), "no usable"),
    ],
    ids=["no-annotations", "no-file-name", "unknown-image", "short-bbox", "path", "empty"],
)
def test_a_bad_coco_file_is_refused_with_what_to_fix(tmp_path, dataset, problem):
    path = write_json(tmp_path / "bad.json", dataset)
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match=f"^{path}: .*{problem}.*COCO detection JSON needs"):
        load_labelled_images(str(tmp_path / "images"), path)


def test_json_that_does_not_parse_is_refused_as_coco(tmp_path):
    path = write_text(tmp_path / "broken.json", '{"images": [')
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="not valid UTF-8 JSON"):
        load_labelled_images(str(tmp_path / "images"), path)


# ----- ground truth read for scoring ----------------------------------------------------------


def test_ground_truth_for_scoring_is_what_training_reads(both_formats):
    ground_truth = read_coco_ground_truth(str(both_formats / "annotations.json"))
    trained_on = load_labelled_images(
        str(both_formats / "images"), str(both_formats / "labels.txt")
    )
    assert ground_truth == {image.boxes[0].image: list(image.boxes) for image in trained_on}


def test_perfect_predictions_of_a_generated_set_score_one(both_formats):
    ground_truth = read_coco_ground_truth(str(both_formats / "annotations.json"))
    predictions = {
        image: [ScoredBox(b.label, 0.9, b.xmin, b.xmax, b.ymin, b.ymax) for b in boxes]
        for image, boxes in ground_truth.items()
    }
    assert coco_scores(ground_truth, predictions).map_50_95 == pytest.approx(1.0)


# ----- confinement -----------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path):
    """train/images/a.jpg with its label file, and a secret image outside train/."""
    (tmp_path / "train" / "images").mkdir(parents=True)
    write_jpeg(tmp_path / "train" / "images" / "a.jpg", 32, 32)
    (tmp_path / "secret").mkdir()
    write_jpeg(tmp_path / "secret" / "outside.jpg", 32, 32)
    return tmp_path


def test_an_image_linked_from_outside_its_directory_is_refused_without_naming_the_target(
    data_dir,
):
    images = data_dir / "train" / "images"
    os.symlink(data_dir / "secret" / "outside.jpg", images / "linked.jpg")
    labels = write_text(data_dir / "train" / "labels.txt",
                        "a.jpg\tcat\t(1, 20, 2, 30)\nlinked.jpg\tcat\t(1, 20, 2, 30)\n")
    with pytest.raises(ValueError) as raised:
        load_labelled_images(str(images), labels)
    message = str(raised.value)
    assert message.startswith(f"{labels}:2: image 'linked.jpg' in {images} is a link that leads "
                              "outside that directory")
    assert "secret" not in message and "outside.jpg" not in message


@pytest.mark.parametrize(
    "target, problem",
    [("../../secret/gone.jpg", "is a link that leads outside"), ("gone.jpg", "is not a file in")],
    ids=["outside", "inside"],
)
def test_a_broken_link_is_refused_without_naming_the_target(data_dir, target, problem):
    images = data_dir / "train" / "images"
    os.symlink(target, images / "broken.jpg")
    labels = write_text(data_dir / "train" / "labels.txt", "broken.jpg\tcat\t(1, 20, 2, 30)\n")
    with pytest.raises(ValueError, match=f"image 'broken.jpg' .*{problem}") as raised:
        load_labelled_images(str(images), labels)
    assert "secret" not in str(raised.value) and "gone" not in str(raised.value)


def test_a_link_that_stays_inside_the_directory_is_read(data_dir):
    images = data_dir / "train" / "images"
    (images / "sub").mkdir()
    os.rename(images / "a.jpg", images / "sub" / "a.jpg")
    os.symlink("sub/a.jpg", images / "a.jpg")
    labels = write_text(data_dir / "train" / "labels.txt", "a.jpg\tcat\t(1, 20, 2, 30)\n")
    (image,) = load_labelled_images(str(images), labels)
    assert image.read_bytes() == (images / "sub" / "a.jpg").read_bytes()


def test_an_image_swapped_for_an_outside_link_after_the_check_is_not_read(data_dir):
    images = data_dir / "train" / "images"
    labels = write_text(data_dir / "train" / "labels.txt", "a.jpg\tcat\t(1, 20, 2, 30)\n")
    (image,) = load_labelled_images(str(images), labels)
    os.remove(images / "a.jpg")
    os.symlink(data_dir / "secret" / "outside.jpg", images / "a.jpg")
    with pytest.raises(ValueError, match="is a link that leads outside") as raised:
        image.read_bytes()
    assert "secret" not in str(raised.value)


def test_an_undecodable_image_behind_a_link_is_refused_without_naming_the_target(data_dir):
    images = data_dir / "train" / "images"
    (images / "real").mkdir()
    (images / "real" / "notes.txt").write_text("not an image")
    os.symlink("real/notes.txt", images / "b.jpg")
    labels = write_text(data_dir / "train" / "labels.txt", "b.jpg\tcat\t(1, 2, 3, 4)\n")
    with pytest.raises(ValueError, match="cannot be used") as raised:
        load_labelled_images(str(images), labels)
    assert "notes.txt" not in str(raised.value)


# ----- the demo client's progress line ---------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal():
    terminal = _Terminal()
    progress = ProgressLine(terminal)
    for second in range(30):
        progress.update("RUNNING", f"training: RUNNING {second} s")
    progress.finish("training: COMPLETED after 30.0 s")
    assert terminal.getvalue().count("\n") == 1
    assert terminal.getvalue().endswith("\rtraining: COMPLETED after 30.0 s".ljust(22) + "\n")


def test_progress_prints_sparse_lines_when_not_a_terminal():
    piped = io.StringIO()
    progress = ProgressLine(piped, sparse_every_s=3600)
    for second in range(30):
        progress.update("RUNNING", f"training: RUNNING {second} s")
    progress.update("QUEUED", "training: QUEUED")
    progress.finish("training: COMPLETED")
    assert piped.getvalue().splitlines() == [
        "training: RUNNING 0 s", "training: QUEUED", "training: COMPLETED"
    ]
    assert "\r" not in piped.getvalue()
