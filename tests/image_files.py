"""Image files and memory measurements shared by the image tests.

Whole, decodable files written without holding their pixels (a PNG of zeros, compressed row by
row; an icon around any frame), and the peak memory a call adds to a process (/proc, Linux).
"""

# Standard
from typing import Callable
import pathlib
import struct
import zlib

# Third Party
from PIL import Image

# Local
from caikit_computer_vision import images
from caikit_computer_vision.images import ImageLimits
from caikit_computer_vision.memory import return_freed_memory
from example_tools.hostile_images import png_chunk

# Every format images.py checks, ICO included: GIF, BMP and TIFF are off by default too.
EVERY_FORMAT = ImageLimits(formats=images.CHECKED_FORMATS)
# The most a refused bomb may add to a process's peak memory (a decoded one adds 100s of MB).
MAX_GROWTH_MB = 30


# -- files ------------------------------------------------------------------------------------


def write_text(path: pathlib.Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def write_jpeg(path: pathlib.Path, width: int, height: int) -> None:
    Image.new("RGB", (width, height), (90, 120, 150)).save(path, format="JPEG", quality=90)



def blank_png(width: int, height: int, color_type: int = 0, bit_depth: int = 1) -> bytes:
    """A whole, decodable PNG of zeros, compressed row by row (never held in memory whole)."""
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    row = b"\x00" * (1 + (width * channels * bit_depth + 7) // 8)
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def ico_wrapping(frame: bytes) -> bytes:
    """An icon whose directory says 256x256 (0) and whose one frame is ``frame``."""
    directory = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(frame), 6 + 16)
    return directory + entry + frame


def ico_png_bomb(side: int = 12_000) -> bytes:
    """The issue's case: a small ICO whose PNG frame is side x side RGBA (576 MB decoded)."""
    return ico_wrapping(blank_png(side, side, color_type=6, bit_depth=8))


# -- memory ------------------------------------------------------------------------------------


def _status_mb(pid: str, field: str) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak(pid: str) -> None:
    """Set the peak RSS (VmHWM) back to the current RSS (Linux >= 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_growth_mb(call: Callable[[], object], pid: str = "self") -> float:
    """How far ``call`` raises process ``pid``'s peak RSS above its RSS before the call.

    Freed memory is given back first: pages that glibc keeps from earlier tests (the decode
    tests before this one free hundreds of MB) would otherwise count in the RSS before and be
    reused by ``call`` without raising the peak.
    """
    return_freed_memory()
    _reset_peak(pid)
    before = _status_mb(pid, "VmRSS")
    call()
    return _status_mb(pid, "VmHWM") - before
