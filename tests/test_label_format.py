"""Tests of the label file format (label_format) and of set validation (labelled_images)."""

# Standard
import io
import os
import pathlib
import pickle
import re

# Third Party
from PIL import Image
import pytest

# Local
from caikit_computer_vision.defaults import MAX_IMAGE_PIXELS
from caikit_computer_vision.label_format import (
    EXPECTED_LINE_FORMAT,
    LabelFileError,
    LabelledBox,
    format_label_line,
    parse_label_line,
    read_numbered_labels,
    write_labels_file,
)
from caikit_computer_vision.labelled_images import LabelledImage, load_labelled_images

from .image_files import write_jpeg, write_text

VALID_LINE = "a.jpg\tcat\t(1, 20, 2, 30)"


def at(path, line_number: int) -> str:
    """Regex for the start of an error message about ``path`` line ``line_number``."""
    return f"^{re.escape(str(path))}:{line_number}: "


# ----- label_format --------------------------------------------------------------------------


def test_format_label_line_writes_upstream_order_and_ints():
    box = LabelledBox("a.jpg", "cat", 1.0, 20.0, 2.0, 30.0)
    assert format_label_line(box) == VALID_LINE


def test_parse_label_line_reads_x_min_x_max_y_min_y_max():
    box = parse_label_line(VALID_LINE + "\n", "labels.txt", 1)
    assert box == LabelledBox("a.jpg", "cat", xmin=1, xmax=20, ymin=2, ymax=30)


def test_parse_label_line_accepts_floats_and_spaces_around_fields():
    box = parse_label_line(" b.png \t dog \t (1.5,2.25 , 3e1,  40.)\r\n", "labels.txt", 1)
    assert box == LabelledBox("b.png", "dog", 1.5, 2.25, 30.0, 40.0)


def test_write_then_read_gives_the_same_boxes(tmp_path):
    boxes = [
        LabelledBox("a.jpg", "cat", 1, 20, 2, 30),
        LabelledBox("a.jpg", "dog", 0.1, 0.30000000000000004, 5, 6.5),
        LabelledBox("b.jpg", "cat", 0, 64, 0, 64),
    ]
    path = tmp_path / "labels.txt"
    write_labels_file(str(path), boxes)
    assert [box for _, box in read_numbered_labels(str(path))] == boxes


def test_write_labels_file_replaces_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("old content\n")
    write_labels_file(str(path), [LabelledBox("a.jpg", "cat", 1, 20, 2, 30)])
    assert path.read_text() == VALID_LINE + "\n"
    assert os.listdir(tmp_path) == ["labels.txt"]


def test_write_labels_file_refuses_no_boxes_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text(VALID_LINE + "\n")
    with pytest.raises(ValueError, match="empty"):
        write_labels_file(str(path), [])
    assert path.read_text() == VALID_LINE + "\n"
    assert os.listdir(tmp_path) == ["labels.txt"]


@pytest.mark.parametrize(
    "box",
    [
        LabelledBox("a.jpg", "c\tat", 1, 2, 3, 4),
        LabelledBox("dir/a.jpg", "cat", 1, 2, 3, 4),
        LabelledBox("a.jpg", "cat", 2, 1, 3, 4),
        LabelledBox("a.jpg", "cat", 1, 2, 3, float("nan")),
    ],
)
def test_format_label_line_refuses_a_box_that_could_not_be_read_back(box):
    with pytest.raises(ValueError, match="cannot write"):
        format_label_line(box)


def test_read_skips_blank_lines_and_keeps_line_numbers(tmp_path):
    path = write_text(tmp_path / "labels.txt", f"\n{VALID_LINE}\n   \n\nb.jpg\tdog\t(0, 1, 0, 1)\n")
    numbered = read_numbered_labels(path)
    assert [line_number for line_number, _ in numbered] == [2, 5]
    assert [box.image for _, box in numbered] == ["a.jpg", "b.jpg"]


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ("a.jpg\tcat", "found 2 tab-separated field(s), need 3"),
        ("a.jpg\tcat\t(1, 2, 3, 4)\textra", "found 4 tab-separated field(s)"),
        ("a.jpg cat (1, 2, 3, 4)", "found 1 tab-separated field(s)"),
        ("\tcat\t(1, 2, 3, 4)", "the file name is empty"),
        ("a.jpg\t \t(1, 2, 3, 4)", "the label is empty"),
        ("a.jpg\tcat\t(1, two, 3, 4)", "coordinate 'two'"),
        ("a.jpg\tcat\t(1, 2, 3, )", "coordinate ''"),
        ("a.jpg\tcat\t(nan, 2, 3, 4)", "coordinate 'nan'"),
        ("a.jpg\tcat\t(1, inf, 3, 4)", "coordinate 'inf'"),
        ("a.jpg\tcat\t(1, 1e999, 3, 4)", "must be finite"),
        ("a.jpg\tcat\t[1, 2, 3, 4]", "must be in parentheses"),
        ("a.jpg\tcat\t1, 2, 3, 4", "must be in parentheses"),
        ("a.jpg\tcat\t(1, 2, 3, 4", "must be in parentheses"),
        ("a.jpg\tcat\t(1, 2, 3)", "found 3 coordinate(s)"),
        ("a.jpg\tcat\t(1, 2, 3, 4, 5)", "found 5 coordinate(s)"),
        ("a.jpg\tcat\t(5, 5, 1, 2)", "x_min 5.0 must be smaller than x_max 5.0"),
        ("a.jpg\tcat\t(6, 5, 1, 2)", "x_min 6.0 must be smaller than x_max 5.0"),
        ("a.jpg\tcat\t(1, 2, 4, 3)", "y_min 4.0 must be smaller than y_max 3.0"),
        ("a.jpg\tcat\t(-1, 2, 3, 4)", "must not be negative"),
        ("/etc/passwd\tcat\t(1, 2, 3, 4)", "not a path"),
        ("../secret.jpg\tcat\t(1, 2, 3, 4)", "not a path"),
        ("sub/a.jpg\tcat\t(1, 2, 3, 4)", "not a path"),
        ("sub\\a.jpg\tcat\t(1, 2, 3, 4)", "not a path"),
        ("..\tcat\t(1, 2, 3, 4)", "must not contain '..'"),
    ],
)
def test_read_rejects_bad_line_with_file_and_line(tmp_path, bad_line, problem):
    path = write_text(tmp_path / "labels.txt", f"{VALID_LINE}\n\n{bad_line}\n{VALID_LINE}\n")
    with pytest.raises(LabelFileError) as raised:
        read_numbered_labels(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:3: ")
    assert problem in message
    assert message.endswith(f"; expected '{EXPECTED_LINE_FORMAT}'")


def test_label_file_error_is_a_value_error_for_invalid_argument():
    assert issubclass(LabelFileError, ValueError)
    assert EXPECTED_LINE_FORMAT == "<file>\\t<label>\\t(<x_min>, <x_max>, <y_min>, <y_max>)"


def test_label_file_error_survives_pickling():
    original = LabelFileError("labels.txt", 3, "the label is empty")
    copy = pickle.loads(pickle.dumps(original))
    assert (type(copy), str(copy), copy.line_number) == (LabelFileError, str(original), 3)


def test_read_reports_the_first_bad_line(tmp_path):
    path = write_text(tmp_path / "labels.txt", f"{VALID_LINE}\nbad\nworse\tline\n")
    with pytest.raises(LabelFileError, match=at(path, 2)):
        read_numbered_labels(path)


def test_read_rejects_a_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(VALID_LINE.encode() + b"\n\xff\xfe.jpg\tcat\t(1, 2, 3, 4)\n")
    with pytest.raises(LabelFileError, match=at(path, 2) + "the line is not UTF-8"):
        read_numbered_labels(str(path))


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_read_rejects_an_empty_training_set(tmp_path, text):
    path = write_text(tmp_path / "labels.txt", text)
    with pytest.raises(LabelFileError, match="the training set is empty"):
        read_numbered_labels(path)


# ----- labelled_images -----------------------------------------------------------------------


@pytest.fixture
def image_dir(tmp_path):
    """An image directory with a.jpg (64x48) and b.jpg (32x32)."""
    directory = tmp_path / "images"
    directory.mkdir()
    write_jpeg(directory / "a.jpg", 64, 48)
    write_jpeg(directory / "b.jpg", 32, 32)
    return directory


def test_load_labelled_images_returns_every_image_with_its_boxes(tmp_path, image_dir):
    labels = write_text(
        tmp_path / "labels.txt",
        "b.jpg\tdog\t(0, 32, 0, 32)\na.jpg\tcat\t(1, 20, 2, 30)\n\na.jpg\tdog\t(30, 64, 10, 48)\n",
    )
    images = load_labelled_images(str(image_dir), labels)
    assert images == [
        LabelledImage(image_dir / "b.jpg", 32, 32, (LabelledBox("b.jpg", "dog", 0, 32, 0, 32),)),
        LabelledImage(
            image_dir / "a.jpg",
            64,
            48,
            (
                LabelledBox("a.jpg", "cat", 1, 20, 2, 30),
                LabelledBox("a.jpg", "dog", 30, 64, 10, 48),
            ),
        ),
    ]


def test_load_labelled_images_rejects_a_missing_image_dir(tmp_path):
    labels = write_text(tmp_path / "labels.txt", VALID_LINE + "\n")
    with pytest.raises(ValueError, match="image directory .*nowhere does not exist"):
        load_labelled_images(str(tmp_path / "nowhere"), labels)


def test_load_labelled_images_rejects_an_image_dir_that_is_a_file(tmp_path):
    labels = write_text(tmp_path / "labels.txt", VALID_LINE + "\n")
    with pytest.raises(ValueError, match="is not a directory"):
        load_labelled_images(labels, labels)


def test_load_labelled_images_rejects_a_missing_labels_file(tmp_path, image_dir):
    with pytest.raises(ValueError, match="label file .*missing.txt does not exist"):
        load_labelled_images(str(image_dir), str(tmp_path / "missing.txt"))


def test_load_labelled_images_rejects_a_labels_file_that_is_a_directory(image_dir):
    with pytest.raises(ValueError, match="is not a file"):
        load_labelled_images(str(image_dir), str(image_dir))


def test_load_labelled_images_passes_on_label_file_errors(tmp_path, image_dir):
    labels = write_text(tmp_path / "labels.txt", f"{VALID_LINE}\na.jpg\tcat\t(1, 2)\n")
    with pytest.raises(ValueError, match=at(labels, 2) + "found 2 coordinate"):
        load_labelled_images(str(image_dir), labels)


def test_load_labelled_images_rejects_an_image_that_is_not_there(tmp_path, image_dir):
    labels = write_text(
        tmp_path / "labels.txt",
        f"{VALID_LINE}\nghost.jpg\tcat\t(1, 2, 3, 4)\nghost.jpg\tdog\t(1, 2, 3, 4)\n",
    )
    with pytest.raises(ValueError, match=at(labels, 2) + "image 'ghost.jpg' is not a file in"):
        load_labelled_images(str(image_dir), labels)


def test_load_labelled_images_rejects_a_file_that_is_not_an_image(tmp_path, image_dir):
    (image_dir / "notes.jpg").write_text("not an image")
    labels = write_text(tmp_path / "labels.txt", f"{VALID_LINE}\n\nnotes.jpg\tcat\t(1, 2, 3, 4)\n")
    with pytest.raises(ValueError, match=at(labels, 3) + "image 'notes.jpg' .* cannot be used"):
        load_labelled_images(str(image_dir), labels)


def test_load_labelled_images_rejects_a_truncated_jpeg(tmp_path, image_dir):
    whole = (image_dir / "a.jpg").read_bytes()
    (image_dir / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    labels = write_text(tmp_path / "labels.txt", "cut.jpg\tcat\t(1, 2, 3, 4)\n")
    with pytest.raises(ValueError, match=at(labels, 1) + "image 'cut.jpg' .* cannot be used"):
        load_labelled_images(str(image_dir), labels)


def test_load_labelled_images_rejects_an_image_over_the_pixel_limit(tmp_path, image_dir):
    # A 1-bit PNG compresses to almost nothing, so this costs little disk and time.
    width = int(MAX_IMAGE_PIXELS**0.5) + 1
    Image.new("1", (width, width)).save(image_dir / "huge.png")
    labels = write_text(tmp_path / "labels.txt", "huge.png\tcat\t(1, 2, 3, 4)\n")
    with pytest.raises(ValueError, match=at(labels, 1) + "image 'huge.png' .* over the limit"):
        load_labelled_images(str(image_dir), labels)


@pytest.mark.parametrize(
    "bad_box", ["(1, 65, 2, 30)", "(1, 20, 2, 49)", "(64.5, 70, 2, 30)"], ids=["x", "y", "beyond"]
)
def test_load_labelled_images_rejects_a_box_outside_its_image(tmp_path, image_dir, bad_box):
    labels = write_text(tmp_path / "labels.txt", f"{VALID_LINE}\na.jpg\tdog\t{bad_box}\n")
    with pytest.raises(ValueError) as raised:
        load_labelled_images(str(image_dir), labels)
    message = str(raised.value)
    assert message.startswith(f"{labels}:2: box (x_min=")
    assert "lies outside image 'a.jpg' of 64x48 pixels" in message


def test_load_labelled_images_accepts_a_box_on_the_image_edges(tmp_path, image_dir):
    labels = write_text(tmp_path / "labels.txt", "a.jpg\tcat\t(0, 64, 0, 48)\n")
    (image,) = load_labelled_images(str(image_dir), labels)
    assert (image.width, image.height) == (64, 48)


def test_a_training_image_in_a_format_the_runtime_refuses_is_refused_before_decoding(tmp_path):
    # ICO is not among the runtime's accepted formats by default: refused from its signature,
    # before Pillow (whose Image.open decodes icons) sees it, as a client's icon is refused.
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    icon = io.BytesIO()
    Image.new("RGB", (16, 16)).save(icon, format="ICO")
    (images_dir / "icon.ico").write_bytes(icon.getvalue())
    labels = tmp_path / "labels.txt"
    labels.write_text("icon.ico\tcat\t(0, 4, 0, 4)\n")
    with pytest.raises(ValueError, match=r"image 'icon.ico' .* ICO format, which this runtime"):
        load_labelled_images(str(images_dir), str(labels))
