"""Tests of the generated training data: valid, tight, seeded and learnable."""

# Standard
from typing import Dict, List
import io
import itertools
import pathlib

# Third Party
from PIL import Image
import numpy as np
import pytest

# Local
from common import DEFAULT_LABELS
from caikit_computer_vision.label_format import LabelledBox, read_numbered_labels
from caikit_computer_vision.labelled_images import LabelledImage, load_labelled_images
from common import DEFAULT_IMAGE_SIZE, IMAGES_DIR_NAME, LABELS_FILE_NAME
from example_tools.evaluation import box_iou
from example_tools.synthetic_data import (
    EXAMPLE_IMAGE_NAME,
    MAX_LABELS,
    generate_train_data,
    render_example,
)

FOUR_LABELS = ("square", "circle", "triangle", "cross")


def pixels(source) -> np.ndarray:
    """RGB pixels as floats, from a path or JPEG bytes."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    with Image.open(source) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def object_bounds(image_pixels: np.ndarray, box: LabelledBox) -> tuple:
    """Bounds of the pixels coloured like the centre of ``box`` (every shape covers its centre)."""
    centre_x, centre_y = int((box.xmin + box.xmax) / 2), int((box.ymin + box.ymax) / 2)
    centre = image_pixels[centre_y - 1 : centre_y + 2, centre_x - 1 : centre_x + 2]
    colour = np.median(centre.reshape(-1, 3), axis=0)
    # Backgrounds are kept >= 110 (RGB distance) from object colours; JPEG and noise move < 50.
    mask = np.linalg.norm(image_pixels - colour, axis=2) < 50
    columns, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    return columns[0], columns[-1] + 1, rows[0], rows[-1] + 1


def all_files(directory: pathlib.Path) -> Dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def default_set(tmp_path_factory) -> List[LabelledImage]:
    """80 default images (64x64, cat and dog, up to 2 objects), loaded through the validator."""
    output_dir = tmp_path_factory.mktemp("default_set")
    labels_path = generate_train_data(str(output_dir), 80)
    return load_labelled_images(str(output_dir / IMAGES_DIR_NAME), str(labels_path))


def test_generate_writes_images_and_label_file_where_the_defaults_say(tmp_path):
    labels_path = generate_train_data(str(tmp_path), 3)
    assert labels_path == tmp_path / LABELS_FILE_NAME
    images = sorted(path.name for path in (tmp_path / IMAGES_DIR_NAME).iterdir())
    assert images == ["00000.jpg", "00001.jpg", "00002.jpg"]
    for name in images:
        with Image.open(tmp_path / IMAGES_DIR_NAME / name) as image:
            assert (image.format, image.size) == ("JPEG", (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE))


def test_generated_label_file_reads_back_as_the_validated_set(tmp_path):
    labels_path = generate_train_data(str(tmp_path), 20, image_size=48, labels=FOUR_LABELS)
    written = [box for _, box in read_numbered_labels(str(labels_path))]
    images = load_labelled_images(str(tmp_path / IMAGES_DIR_NAME), str(labels_path))
    assert [box for image in images for box in image.boxes] == written
    assert all((image.width, image.height) == (48, 48) for image in images)
    for box in written:
        assert all(float(value).is_integer() for value in (box.xmin, box.xmax, box.ymin, box.ymax))


def test_every_box_lies_inside_its_image(default_set):
    for image in default_set:
        for box in image.boxes:
            assert 0 <= box.xmin < box.xmax <= image.width
            assert 0 <= box.ymin < box.ymax <= image.height


def test_objects_of_one_image_barely_overlap(default_set):
    pairs = [pair for image in default_set for pair in itertools.combinations(image.boxes, 2)]
    assert pairs, "the default set should hold images with two objects"
    assert max(box_iou(first, second) for first, second in pairs) < 0.1


def test_objects_are_30_to_55_percent_of_the_image_side(default_set):
    # Occlusion only shrinks a box, so the longer side of every box is at most 55%, and the
    # longer side of a lone object is at least 30%.
    for image in default_set:
        for box in image.boxes:
            assert max(box.xmax - box.xmin, box.ymax - box.ymin) <= round(0.55 * image.width)
        if len(image.boxes) == 1:
            (box,) = image.boxes
            assert max(box.xmax - box.xmin, box.ymax - box.ymin) >= round(0.30 * image.width)


def test_boxes_tightly_contain_the_drawn_object(tmp_path):
    labels_path = generate_train_data(
        str(tmp_path), 40, labels=FOUR_LABELS, max_objects_per_image=1, seed=7
    )
    for image in load_labelled_images(str(tmp_path / IMAGES_DIR_NAME), str(labels_path)):
        (box,) = image.boxes
        found = object_bounds(pixels(image.path), box)
        written = (box.xmin, box.xmax, box.ymin, box.ymax)
        assert max(abs(a - b) for a, b in zip(found, written)) <= 1, (image.path.name, found, box)


def test_max_objects_per_image_caps_the_boxes_of_each_image(tmp_path):
    labels_path = generate_train_data(str(tmp_path), 30, max_objects_per_image=1)
    images = load_labelled_images(str(tmp_path / IMAGES_DIR_NAME), str(labels_path))
    assert [len(image.boxes) for image in images] == [1] * 30


def test_every_label_is_drawn(default_set):
    assert {box.label for image in default_set for box in image.boxes} == set(DEFAULT_LABELS)


def test_same_seed_gives_byte_identical_files(tmp_path):
    generate_train_data(str(tmp_path / "first"), 10, seed=3)
    generate_train_data(str(tmp_path / "second"), 10, seed=3)
    assert all_files(tmp_path / "first") == all_files(tmp_path / "second")


def test_different_seeds_give_different_images_and_boxes(tmp_path):
    generate_train_data(str(tmp_path / "first"), 10, seed=3)
    generate_train_data(str(tmp_path / "second"), 10, seed=4)
    first, second = all_files(tmp_path / "first"), all_files(tmp_path / "second")
    assert first[LABELS_FILE_NAME] != second[LABELS_FILE_NAME]
    image_names = [name for name in first if name != LABELS_FILE_NAME]
    assert all(first[name] != second[name] for name in image_names)


def test_labels_have_clearly_different_colours_inside_their_boxes(default_set):
    # The learnability check: what is inside a cat box must not look like a dog box, and neither
    # like the background. Mean colours per label over the whole set, RGB 0-255.
    inside: Dict[str, List[np.ndarray]] = {label: [] for label in DEFAULT_LABELS}
    outside = []
    for image in default_set:
        image_pixels = pixels(image.path)
        covered = np.zeros(image_pixels.shape[:2], dtype=bool)
        for box in image.boxes:
            region = (slice(int(box.ymin), int(box.ymax)), slice(int(box.xmin), int(box.xmax)))
            inside[box.label].append(image_pixels[region].reshape(-1, 3))
            covered[region] = True
        outside.append(image_pixels[~covered])
    cat, dog = (np.concatenate(inside[label]).mean(axis=0) for label in DEFAULT_LABELS)
    background = np.concatenate(outside).mean(axis=0)
    assert cat[0] > cat[2] + 80, f"cats should be warm (red > blue), mean RGB {cat}"
    assert dog[2] > dog[0] + 80, f"dogs should be cool (blue > red), mean RGB {dog}"
    assert np.linalg.norm(cat - dog) > 120
    assert min(np.linalg.norm(cat - background), np.linalg.norm(dog - background)) > 60


def test_render_example_returns_a_jpeg_and_the_box_of_its_one_object():
    jpeg, box = render_example("dog")
    image_pixels = pixels(jpeg)
    assert image_pixels.shape == (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE, 3)
    assert (box.image, box.label) == (EXAMPLE_IMAGE_NAME, "dog")
    assert 0 <= box.xmin < box.xmax <= DEFAULT_IMAGE_SIZE
    found = object_bounds(image_pixels, box)
    assert max(abs(a - b) for a, b in zip(found, (box.xmin, box.xmax, box.ymin, box.ymax))) <= 1


def test_render_example_is_seeded():
    assert render_example("cat", seed=5) == render_example("cat", seed=5)
    assert render_example("cat", seed=5)[0] != render_example("cat", seed=6)[0]


def test_labels_that_share_a_shape_differ_in_colour():
    labels = tuple("abcdefgh")
    # Labels 0 and 4 are both squares, 1 and 5 both circles: their colour families must differ.
    for first, second in [("a", "e"), ("b", "f"), ("c", "g"), ("d", "h")]:
        colours = []
        for label in (first, second):
            jpeg, box = render_example(label, labels=labels)
            centre_x, centre_y = int((box.xmin + box.xmax) / 2), int((box.ymin + box.ymax) / 2)
            colours.append(pixels(jpeg)[centre_y, centre_x])
        assert np.linalg.norm(colours[0] - colours[1]) > 60, (first, second, colours)


def test_render_example_rejects_an_unknown_label():
    with pytest.raises(ValueError, match="'horse' is not one of"):
        render_example("horse")


@pytest.mark.parametrize(
    "arguments, problem",
    [
        ({"num_images": 0}, "num_images must be an int >= 1"),
        ({"num_images": True}, "num_images must be an int >= 1"),
        ({"image_size": 15}, "image_size must be an int >= 16"),
        ({"labels": ()}, "labels must be a non-empty sequence"),
        ({"labels": "cat"}, "labels must be a non-empty sequence"),
        ({"labels": ("cat", "cat")}, "labels must be unique"),
        ({"labels": ("cat", 3)}, "labels must all be str"),
        ({"labels": ("c\tat",)}, "holds a tab or a line break"),
        ({"labels": ("c\nat",)}, "holds a tab or a line break"),
        ({"labels": ("",)}, "the label is empty"),
        ({"labels": tuple(f"l{i}" for i in range(MAX_LABELS + 1))}, "distinct shape and colour"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"max_objects_per_image": 0}, "max_objects_per_image must be an int >= 1"),
    ],
)
def test_generate_rejects_bad_arguments_before_writing(tmp_path, arguments, problem):
    call = {"num_images": 2, **arguments}
    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        generate_train_data(str(tmp_path / "out"), **call)
    assert not (tmp_path / "out").exists()
