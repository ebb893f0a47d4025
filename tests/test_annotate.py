"""vision_client.annotate: boxes and labels drawn where the detections say, saved atomically."""

# Standard
from types import SimpleNamespace

# Third Party
from PIL import Image, UnidentifiedImageError
import numpy as np
import pytest

# Local
from vision_client import annotate

from .conftest import encode_image

GREY = 90


def _detection(label, score, xmin, xmax, ymin, ymax):
    box = SimpleNamespace(xmin=xmin, xmax=xmax, ymin=ymin, ymax=ymax)
    return SimpleNamespace(label=label, score=score, box=box)


def _grey_png(width: int, height: int) -> bytes:
    # PNG: lossless, so every pixel not drawn on keeps its exact value.
    return encode_image(np.full((height, width, 3), GREY, np.uint8), "PNG")


def test_small_images_are_enlarged_by_a_whole_factor_and_boxes_with_them():
    drawn = annotate.draw_detections(_grey_png(64, 48), [_detection("cat", 0.9, 8, 40, 20, 44)])
    scale = 4  # the smallest whole factor that brings 64 px to MIN_DRAWN_EDGE (256)
    assert drawn.size == (64 * scale, 48 * scale)
    colour = annotate.label_colour("cat")
    pixels = np.asarray(drawn)
    # Left and right edges of the box, below the tag, and its bottom edge.
    assert tuple(pixels[36 * scale, 8 * scale]) == colour
    assert tuple(pixels[36 * scale, 40 * scale - 1]) == colour
    assert tuple(pixels[44 * scale - 1, 24 * scale]) == colour
    # Inside and outside the box, the image is untouched.
    assert tuple(pixels[38 * scale, 24 * scale]) == (GREY,) * 3
    assert tuple(pixels[46 * scale, 50 * scale]) == (GREY,) * 3


def test_large_images_keep_their_size():
    drawn = annotate.draw_detections(_grey_png(640, 300), [_detection("dog", 0.5, 0, 10, 0, 10)])
    assert drawn.size == (640, 300)


def test_each_label_has_its_own_stable_colour_and_a_tag():
    assert annotate.label_colour("cat") != annotate.label_colour("dog")
    assert annotate.label_colour("cat") == annotate.label_colour("cat")
    drawn = np.asarray(
        annotate.draw_detections(_grey_png(256, 256), [_detection("dog", 0.5, 100, 200, 100, 200)])
    )
    # The tag sits on top of the box: filled with the label's colour, with text on it.
    tag = drawn[80:100, 100:150].reshape(-1, 3)
    colours = {tuple(pixel) for pixel in tag}
    assert annotate.label_colour("dog") in colours and len(colours) > 1


def test_boxes_past_the_edges_are_clipped_and_empty_ones_skipped():
    detections = [
        _detection("cat", 0.9, -20, 400, -5, 400),
        _detection("dog", 0.9, 30, 30, 10, 50),  # no width
    ]
    drawn = np.asarray(annotate.draw_detections(_grey_png(256, 256), detections))
    cat = annotate.label_colour("cat")
    assert tuple(drawn[128, 0]) == cat and tuple(drawn[128, 255]) == cat
    assert annotate.label_colour("dog") not in {
        tuple(p) for p in drawn[10:50, 25:35].reshape(-1, 3)
    }


def test_nothing_to_draw_gives_the_image_unchanged():
    drawn = annotate.draw_detections(_grey_png(300, 200), [])
    assert drawn.size == (300, 200)
    assert (np.asarray(drawn) == GREY).all()


def test_grayscale_and_rgba_inputs_are_drawn_in_colour():
    gray = encode_image(np.full((64, 64), GREY, np.uint8), "PNG", mode="L")
    drawn = annotate.draw_detections(gray, [_detection("cat", 0.9, 0, 64, 0, 64)])
    assert drawn.mode == "RGB"


@pytest.mark.parametrize("name, image_format", [("out.png", "PNG"), ("out.JPG", "JPEG")])
def test_save_annotated_writes_the_format_of_the_extension(tmp_path, name, image_format):
    path = annotate.save_annotated(
        _grey_png(64, 64), [_detection("cat", 0.9, 8, 40, 8, 40)], tmp_path / name
    )
    assert path == tmp_path / name
    with Image.open(path) as saved:
        assert saved.format == image_format
        assert saved.size == (256, 256)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_save_annotated_refuses_an_unknown_extension_before_writing(tmp_path):
    with pytest.raises(
        ValueError, match=r"cannot write \.txt images: name the file \.png or \.jpg"
    ):
        annotate.save_annotated(_grey_png(64, 64), [], tmp_path / "out.txt")
    assert not list(tmp_path.iterdir())


def test_undecodable_bytes_are_an_error_not_an_empty_image():
    with pytest.raises(UnidentifiedImageError):
        annotate.draw_detections(b"not an image", [])
