"""Image formats: only the accepted ones are opened, and each is refused over the pixel limit
before a pixel is decoded, containers (ICO) and multi-frame files included.

The files are real bytes, each a small file declaring a huge image (a real, decodable one where
that is cheap to write). Unit tests call images.py; the runtime tests send the same bytes to a
runtime that accepts every format (GIF, BMP, TIFF and ICO are off by default), and measure its
memory.
"""

# Standard
from typing import Callable, Dict
import io
import struct

# Third Party
from PIL import Image
import grpc
import numpy as np
import pytest

# Local
from caikit_computer_vision import images
from caikit_computer_vision.defaults import MAX_IMAGE_PIXELS
from caikit_computer_vision.images import ImageLimits, decode_image

from .image_files import (
    EVERY_FORMAT,
    MAX_GROWTH_MB,
    blank_png,
    ico_png_bomb,
    ico_wrapping,
    peak_growth_mb,
)


# -- files declaring huge images -------------------------------------------------------------


def _encoded(image_format: str, size=(16, 16), **options) -> bytearray:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buffer, image_format, **options)
    return bytearray(buffer.getvalue())


def jpeg_declaring(width: int, height: int) -> bytes:
    data = _encoded("JPEG")
    start_of_frame = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, start_of_frame + 5, height, width)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    data = _encoded("BMP")
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def gif_screen_declaring(width: int, height: int) -> bytes:
    data = _encoded("GIF")
    struct.pack_into("<HH", data, 6, width, height)  # the logical screen
    return bytes(data)


def gif_first_frame_declaring(width: int, height: int) -> bytes:
    """A 16x16 screen whose first frame is huge: Pillow grows the canvas to hold it."""
    data = _encoded("GIF")
    struct.pack_into("<HH", data, _gif_descriptors(data)[0] + 5, width, height)
    return bytes(data)


def gif_second_frame_declaring(width: int, height: int) -> bytes:
    """Frame 0 is 16x16, frame 1 huge: only frame 0 is ever decoded."""
    buffer = io.BytesIO()
    first, second = Image.new("P", (16, 16), 1), Image.new("P", (16, 16), 2)
    first.save(buffer, "GIF", save_all=True, append_images=[second], disposal=0, optimize=False)
    data = bytearray(buffer.getvalue())
    struct.pack_into("<HH", data, _gif_descriptors(data)[1] + 5, width, height)
    return bytes(data)


def _gif_descriptors(data: bytes) -> list:
    """Offsets of a GIF's image descriptors (one a frame), walking its blocks."""
    flags = data[10]
    position = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    descriptors = []
    while data[position] != 0x3B:  # trailer
        if data[position] == 0x21:  # extension: label, then sub-blocks
            position += 2
        else:  # 0x2C image descriptor, local palette, LZW minimum code size, sub-blocks
            descriptors.append(position)
            local = data[position + 9]
            position += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        while data[position]:
            position += data[position] + 1
        position += 1
    return descriptors


def tiff_declaring(width: int, height: int) -> bytes:
    data = _encoded("TIFF")
    directory = struct.unpack_from("<I", data, 4)[0]
    for index in range(struct.unpack_from("<H", data, directory)[0]):
        entry = directory + 2 + 12 * index
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<H" if kind == 3 else "<I", data, entry + 8, width if tag == 256 else height)
    return bytes(data)


def webp_declaring(width: int, height: int) -> bytes:
    """A lossy WebP whose VP8 frame header declares the size."""
    data = _encoded("WEBP")
    start_code = data.index(b"\x9d\x01\x2a")
    struct.pack_into("<HH", data, start_code + 3, width, height)
    return bytes(data)


def animated_webp_canvas_declaring(width: int, height: int) -> bytes:
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:], duration=100)
    data = bytearray(buffer.getvalue())
    vp8x = data.index(b"VP8X")
    data[vp8x + 12 : vp8x + 15] = (width - 1).to_bytes(3, "little")
    data[vp8x + 15 : vp8x + 18] = (height - 1).to_bytes(3, "little")
    return bytes(data)


def ico_bmp_bomb(side: int = 12_000) -> bytes:
    # BITMAPINFOHEADER, 32 bits a pixel, height doubled for the AND mask; no pixel data.
    header = struct.pack("<IiiHHIIiiII", 40, side, 2 * side, 1, 32, 0, 0, 0, 0, 0, 0)
    return ico_wrapping(header)


BOMB_SIDE = 10_000  # 100 MP: over our limit, under Pillow's own (179 MP)
BOMBS: Dict[str, Callable[[], bytes]] = {
    "jpeg": lambda: jpeg_declaring(BOMB_SIDE, BOMB_SIDE),
    "png": lambda: blank_png(BOMB_SIDE, BOMB_SIDE),
    "bmp": lambda: bmp_declaring(BOMB_SIDE, BOMB_SIDE),
    "gif-screen": lambda: gif_screen_declaring(BOMB_SIDE, BOMB_SIDE),
    "gif-first-frame": lambda: gif_first_frame_declaring(BOMB_SIDE, BOMB_SIDE),
    "tiff": lambda: tiff_declaring(BOMB_SIDE, BOMB_SIDE),
    "webp": lambda: webp_declaring(7_000, 7_000),  # 49 MP: the VP8 header holds 14 bits a side
    "webp-animation-canvas": lambda: animated_webp_canvas_declaring(BOMB_SIDE, BOMB_SIDE),
    "ico-png-frame": ico_png_bomb,
    "ico-bmp-frame": ico_bmp_bomb,
}


def _pcx() -> bytes:
    return bytes(_encoded("PCX"))


def _frames(count: int):
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)) for _ in range(count)]


def _saved(image_format: str, **options) -> bytes:
    first, *rest = _frames(3)
    buffer = io.BytesIO()
    if rest and options.pop("animated", False):
        options.update(save_all=True, append_images=rest)
    first.save(buffer, image_format, **options)
    return buffer.getvalue()


VALID: Dict[str, Callable[[], bytes]] = {
    "jpeg": lambda: _saved("JPEG"),
    "png": lambda: _saved("PNG"),
    "apng": lambda: _saved("PNG", animated=True),
    "webp": lambda: _saved("WEBP"),
    "webp-animation": lambda: _saved("WEBP", animated=True),
    "gif-animation": lambda: _saved("GIF", animated=True),
    "bmp": lambda: _saved("BMP"),
    "tiff-3-pages": lambda: _saved("TIFF", animated=True),
}


def test_decoding_an_image_under_the_limit_shows_in_the_peak_growth():
    """The control of the refusals below: the 100 MB of RGBA pixels decode_image decodes show."""
    data = blank_png(10_000, 2_500, color_type=6, bit_depth=8)  # 25 MP, under the limit
    growth = peak_growth_mb(lambda: decode_image(data, EVERY_FORMAT))
    assert growth > 90, growth


# -- images.py ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BOMBS)
def test_bomb_is_refused_before_decoding(name):
    data = BOMBS[name]()
    assert len(data) < 1_000_000

    def refuse():
        with pytest.raises(ValueError, match=f"over the limit of {MAX_IMAGE_PIXELS}"):
            decode_image(data, EVERY_FORMAT)

    assert peak_growth_mb(refuse) < MAX_GROWTH_MB


def test_ico_is_not_accepted_by_default():
    with pytest.raises(ValueError) as refused:
        decode_image(ico_png_bomb(), ImageLimits())
    message = str(refused.value)
    assert "in ICO format, which this runtime does not accept" in message
    assert "send the bytes of a JPEG, PNG or WEBP image" in message


@pytest.mark.parametrize("name", ["gif-animation", "bmp", "tiff-3-pages"])
def test_formats_no_client_of_the_example_sends_are_off_by_default(name):
    with pytest.raises(ValueError, match="which this runtime does not accept"):
        decode_image(VALID[name](), ImageLimits())


def test_a_format_outside_the_list_names_the_accepted_ones():
    with pytest.raises(ValueError, match="in PCX format.*send the bytes of a JPEG or PNG image"):
        decode_image(_pcx(), ImageLimits(formats=("JPEG", "PNG")))


def test_a_format_can_be_switched_off():
    with pytest.raises(ValueError, match="in WEBP format"):
        decode_image(VALID["webp"](), ImageLimits(formats=("JPEG", "PNG")))


@pytest.mark.parametrize("name", VALID)
def test_valid_image_of_each_format_decodes_its_first_frame(name):
    image = decode_image(VALID[name](), EVERY_FORMAT)
    assert image.mode == "RGB" and image.size == (40, 30)


def test_a_valid_icon_decodes_when_ico_is_accepted():
    icon = ico_wrapping(blank_png(48, 48, color_type=2, bit_depth=8))
    image = decode_image(icon, EVERY_FORMAT)
    assert image.mode == "RGB" and image.size == (48, 48)


def test_a_huge_later_frame_is_never_decoded():
    data = gif_second_frame_declaring(BOMB_SIDE, BOMB_SIDE)
    image = Image.open(io.BytesIO(data))
    assert image.n_frames == 2  # both frames are there
    growth = peak_growth_mb(lambda: decode_image(data, EVERY_FORMAT))
    assert growth < MAX_GROWTH_MB
    assert decode_image(data, EVERY_FORMAT).size == (16, 16)


@pytest.mark.parametrize(
    "frame, reason",
    [(b"\x89PNG\r\n\x1a\n", "no readable PNG or BMP header"), (b"", "no readable")],
)
def test_an_icon_frame_without_a_header_is_refused(frame, reason):
    with pytest.raises(ValueError, match=reason):
        decode_image(ico_wrapping(frame), EVERY_FORMAT)


@pytest.mark.parametrize(
    "length, reason",
    [
        # Not even the directory: no format can be told.
        (4, r"inputs \(4 bytes\) is not a complete image \(unknown format\)"),
        (6 + 8, r"a truncated ICO file \(frame 1 of 1 is missing\)"),  # half a directory entry
        (6 + 16, "whose frame 1 has no readable PNG or BMP header"),  # the entry, no frame
        (6 + 16 + 20, "whose frame 1 has no readable PNG or BMP header"),  # part of the header
    ],
)
def test_a_truncated_icon_is_refused(length, reason):
    icon = ico_wrapping(blank_png(48, 48, color_type=2, bit_depth=8))
    with pytest.raises(ValueError, match=reason):
        decode_image(icon[:length], EVERY_FORMAT)


@pytest.mark.parametrize("name", VALID)
def test_the_first_bytes_of_any_image_are_refused_as_a_value_error(name):
    """Pillow's format tests read a few header bytes: a shorter input must not break them."""
    data = VALID[name]()
    for length in range(1, 33):
        with pytest.raises(ValueError, match="not a complete image"):
            decode_image(data[:length], EVERY_FORMAT)


@pytest.mark.parametrize(
    "section, key",
    [
        ({"image_formats": []}, "image_formats"),
        ({"image_formats": ["JPEG", "PSD"]}, "image_formats"),
        ({"image_formats": "JPEG, EPS"}, "image_formats"),
        ({"max_image_pixels": 0}, "max_image_pixels"),
        ({"max_image_pixels": "40000000"}, "max_image_pixels"),
    ],
)
def test_a_wrong_config_value_names_its_key(monkeypatch, section, key):
    monkeypatch.setattr(images, "get_config", lambda: {"caikit_computer_vision": section})
    with pytest.raises(ValueError, match=f"caikit_computer_vision.{key}"):
        ImageLimits.from_config()


def test_config_values_are_read(monkeypatch):
    section = {"image_formats": "jpeg, ICO", "max_image_pixels": 1000}
    monkeypatch.setattr(images, "get_config", lambda: {"caikit_computer_vision": section})
    assert ImageLimits.from_config() == ImageLimits(formats=("JPEG", "ICO"), max_pixels=1000)
    monkeypatch.setattr(images, "get_config", lambda: {})
    assert ImageLimits.from_config() == ImageLimits()


# -- through a runtime that accepts every format -----------------------------------------------


@pytest.fixture(scope="module")
def served(served_tuned):
    """The runtime that accepts every format (conftest's ``runtime`` and ``predict`` come from it)."""
    return served_tuned


def _refusal(predict, data: bytes) -> str:
    with pytest.raises(grpc.RpcError) as raised:
        predict(data, 0.0)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    return raised.value.details()


@pytest.mark.parametrize("name", BOMBS)
def test_runtime_refuses_each_bomb_without_growing(runtime, predict, name):
    pid = str(runtime.process.pid)
    details = []
    growth = peak_growth_mb(lambda: details.append(_refusal(predict, BOMBS[name]())), pid)
    assert f"over the limit of {MAX_IMAGE_PIXELS}" in details[0]
    assert growth < MAX_GROWTH_MB, f"{name}: runtime peak RSS +{growth:.0f} MB"


def test_runtime_serves_an_icon_and_each_valid_format(predict):
    icon = ico_wrapping(blank_png(48, 48, color_type=2, bit_depth=8))
    for data in [icon] + [make() for make in VALID.values()]:
        result = predict(data, 0.0)
        assert result.detected_objects


def test_runtime_names_the_accepted_formats(runtime, predict):
    details = _refusal(predict, _pcx())
    assert "in PCX format" in details
    assert "JPEG, PNG, WEBP, GIF, BMP, TIFF or ICO" in details
    assert runtime.process.poll() is None
