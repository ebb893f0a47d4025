"""Small image files that cost a decoder far more than their size: the attacks of issue 18.

Each builder returns real bytes that Pillow opens (and, before the runtime's work bounds, decoded)
without complaint. They stay inside the runtime's pixel limit: what makes them expensive is the
work per pixel (scans of a progressive JPEG, chunks of a PNG, a codec decoded in Python) or the
memory per pixel (16-bit and float samples, an image one pixel wide). Sizes are parameters so
that the tests build cheap ones and ``bench/`` the issue's.

Standard library, numpy and Pillow only: imported by ``tests/`` and by ``bench/`` alike.
"""

# Standard
import io
import re
import struct
import zlib

# Third Party
from PIL import Image
import numpy as np

_SOS = b"\xff\xda"
# Entropy-coded data ends at the first 0xFF that is neither stuffing (FF 00) nor a restart
# marker (FF D0..D7).
_END_OF_ENTROPY_DATA = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def progressive_jpeg_scan_bomb(side: int = 6000, repeats: int = 1000) -> bytes:
    """A grey ``side`` x ``side`` progressive JPEG, its first AC scan repeated ``repeats`` times.

    libjpeg reads every scan before it outputs a row, and each scan walks every 8x8 block of the
    image, so decoding time grows with ``repeats`` while the file grows by a few hundred bytes a
    scan (the image is flat: a scan is mostly end-of-band runs). The issue's case: 6000 x 6000,
    1000 repeats, 200 kB here, about 14 s of a core on the issue's machine (3 s on our VM).
    """
    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    for start, end in _jpeg_scans(data):
        components = data[start + 4]
        spectral_start = data[start + 5 + 2 * components]  # after each component's selectors
        if spectral_start > 0:  # an AC scan
            return data[:end] + data[start:end] * repeats + data[end:]
    raise AssertionError("Pillow wrote a progressive JPEG without an AC scan")


def count_jpeg_scans(data: bytes) -> int:
    """How many scans (SOS segments) the JPEG ``data`` holds up to its end (EOI)."""
    return sum(1 for _ in _jpeg_scans(data))


def jpeg_with_many_segments(count: int = 1_000_000, stray_bytes: int = 0) -> bytes:
    """A 16 x 16 JPEG with ``count`` empty comment segments and ``stray_bytes`` zero bytes
    before its first scan.

    Pillow's JPEG parser reads each segment before the first scan in Python, and steps over a
    stray byte one at a time: 4 bytes a segment, 1 a stray byte.
    """
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 150)).save(buffer, "JPEG")
    data = buffer.getvalue()
    first_scan = data.index(_SOS)
    comments = b"\xff\xfe\x00\x02" * count
    return data[:2] + comments + data[2:first_scan] + bytes(stray_bytes) + data[first_scan:]


def _jpeg_scans(data: bytes):
    """(start, end) of each scan: its SOS segment and the entropy-coded data that follows."""
    position = 2  # after SOI
    while position + 4 <= len(data):
        marker = data[position : position + 2]
        if marker == b"\xff\xd9":  # EOI
            return
        length = struct.unpack_from(">H", data, position + 2)[0]
        if marker != _SOS:
            position += 2 + length
            continue
        end = _END_OF_ENTROPY_DATA.search(data, position + 2 + length).start()
        yield position, end
        position = end


def png_chunk(tag: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload and CRC."""
    crc = zlib.crc32(tag + payload)
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", crc)


def png_from_rows(
    width: int, height: int, first_row: bytes, bit_depth: int = 8, color_type: int = 0
) -> bytes:
    """A whole PNG whose every row repeats ``first_row`` (filter "Up": the later rows are zeros).

    Compressed as it is written, so a PNG of billions of samples is built in little memory and
    compresses to about a thousandth of its pixel bytes.
    """
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    compressor = zlib.compressobj(9)
    rows = [compressor.compress(b"\x00" + first_row)]
    repeated = b"\x02" + bytes(len(first_row))
    rows_per_call = max(1, (1 << 20) // len(repeated))
    for start in range(1, height, rows_per_call):
        rows.append(compressor.compress(repeated * min(rows_per_call, height - start)))
    rows.append(compressor.flush())
    return (
        _PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(rows))
        + png_chunk(b"IEND", b"")
    )


def png_with_many_chunks(count: int = 2_000_000, before_image_data: bool = True) -> bytes:
    """A 16 x 16 grey PNG with ``count`` empty private ancillary chunks (12 bytes each).

    Pillow reads a PNG's chunks one by one in Python (before the image data in ``Image.open``,
    after it in ``load``), so time, and the list of private chunks it keeps, grow with ``count``.
    The issue's case: 2 million chunks (24 MB), 43 s.
    """
    image = png_from_rows(16, 16, bytes(range(0, 256, 16)))
    header_end = len(_PNG_SIGNATURE) + 25  # signature + IHDR chunk
    iend_start = len(image) - 12
    chunks = png_chunk(b"prVt", b"") * count
    if before_image_data:
        return image[:header_end] + chunks + image[header_end:]
    return image[:iend_start] + chunks + image[iend_start:]


def bmp_rle8(width: int = 4000, height: int = 4000) -> bytes:
    """An 8-bit BMP compressed with RLE8 in runs of one pixel: the worst case of its decoder.

    Pillow decodes BMP RLE in Python, a step per run; two bytes a run make a 4000 x 4000 image a
    32 MB file. The issue's case held a model call for 35 s.
    """
    runs = np.stack([np.ones(width, np.uint8), np.arange(width, dtype=np.uint32).astype(np.uint8)])
    row = runs.T.tobytes() + b"\x00\x00"
    pixels = row * height + b"\x00\x01"  # end of line after each row, end of bitmap at the end
    palette = b"".join(bytes((level, level, level, 0)) for level in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    file_header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return file_header + info + palette + pixels


def png_16_bit(side: int = 6324) -> bytes:
    """A grey 16-bit PNG of ``side`` x ``side`` pixels, a ramp along each row (104 kB at 6324).

    Pillow decodes it as mode I;16 (2 bytes a pixel); converting it to 8 bits through float64
    arrays of the whole image cost about 1 GB at 6324 x 6324 (40 MP).
    """
    ramp = (np.arange(side, dtype=np.uint32) * 65535 // max(side - 1, 1)).astype(">u2")
    return png_from_rows(side, side, ramp.tobytes(), bit_depth=16)


def float_tiff(side: int = 6324) -> bytes:
    """A float32 TIFF (mode F) of ``side`` x ``side`` pixels, a ramp from top to bottom, deflated.

    4 bytes a pixel decoded, 8 in a float64 copy: about 1 GB at 6324 x 6324 through the old
    conversion. Written by hand, row by row, so that building it takes little memory.
    """
    compressor = zlib.compressobj(9)
    levels = np.linspace(-1.0, 1.0, side, dtype="<f4")
    parts = [compressor.compress(np.full(side, level, dtype="<f4").tobytes()) for level in levels]
    strip = b"".join(parts) + compressor.flush()
    entries = [  # (tag, type, count, value): types 3 SHORT, 4 LONG
        (256, 4, 1, side),  # ImageWidth
        (257, 4, 1, side),  # ImageLength
        (258, 3, 1, 32),  # BitsPerSample
        (259, 3, 1, 8),  # Compression: deflate
        (262, 3, 1, 1),  # PhotometricInterpretation: black is zero
        (273, 4, 1, 0),  # StripOffsets, filled in below
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, side),  # RowsPerStrip: one strip
        (279, 4, 1, len(strip)),  # StripByteCounts
        (339, 3, 1, 3),  # SampleFormat: IEEE float
    ]
    directory_size = 2 + 12 * len(entries) + 4
    strip_offset = 8 + directory_size
    directory = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = strip_offset if tag == 273 else value
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
        directory += struct.pack("<HHI", tag, kind, count) + packed
    directory += struct.pack("<I", 0)  # no next directory
    return b"II*\x00" + struct.pack("<I", 8) + directory + strip


def elongated_png(width: int = 1, height: int = 40_000_000) -> bytes:
    """A grey PNG of ``width`` x ``height`` pixels (78 kB at 1 x 40 million).

    Within the pixel limit, but Pillow keeps a pointer per row: 8 bytes a pixel on top of the
    pixel itself when the image is one pixel wide, and every full-size copy (RGB, padding) pays
    that again.
    """
    return png_from_rows(width, height, bytes(index & 0xFF for index in range(width)))


def gif_with_long_comment(sub_blocks: int = 100_000) -> bytes:
    """A 16 x 16 GIF whose comment is ``sub_blocks`` sub-blocks of 255 bytes.

    Pillow joins a comment by copying what it has read so far once a sub-block, so its time
    grows with the square of the comment's length (and each sub-block is a step in Python).
    """
    buffer = io.BytesIO()
    Image.new("P", (16, 16), 1).save(buffer, "GIF")
    data = buffer.getvalue()
    flags = data[10]
    after_palette = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    comment = b"\x21\xfe" + (b"\xff" + b"c" * 255) * sub_blocks + b"\x00"
    return data[:after_palette] + comment + data[after_palette:]


def tiff_with_many_strips(strips: int = 1_000_000) -> bytes:
    """An uncompressed grey TIFF of 1 x ``strips`` pixels, one row a strip, stored last first.

    Pillow reads a number per strip offset and per strip size into Python ints, and decodes each
    strip of an uncompressed image as a tile of its own unless they follow each other in the
    file: time and memory grow with ``strips``.
    """
    entries = 8
    offsets_at = 8 + 2 + 12 * entries + 4
    counts_at = offsets_at + 4 * strips
    pixels_at = counts_at + 4 * strips
    directory = struct.pack("<H", entries) + b"".join(
        struct.pack("<HHII", tag, kind, count, value)
        for tag, kind, count, value in (  # types 3 SHORT, 4 LONG (a SHORT value left-aligned)
            (256, 4, 1, 1),  # ImageWidth
            (257, 4, 1, strips),  # ImageLength
            (258, 3, 1, 8),  # BitsPerSample
            (259, 3, 1, 1),  # Compression: none
            (262, 3, 1, 1),  # PhotometricInterpretation: black is zero
            (273, 4, strips, offsets_at),  # StripOffsets
            (278, 4, 1, 1),  # RowsPerStrip
            (279, 4, strips, counts_at),  # StripByteCounts
        )
    ) + struct.pack("<I", 0)
    offsets = np.arange(pixels_at + strips - 1, pixels_at - 1, -1, dtype="<u4")
    pixels = (np.arange(strips, dtype=np.uint32) & 0xFF).astype(np.uint8)[::-1]
    counts = np.ones(strips, dtype="<u4")
    header = b"II*\x00" + struct.pack("<I", 8)
    return header + directory + offsets.tobytes() + counts.tobytes() + pixels.tobytes()


def webp_with_many_chunks(count: int = 1_000_000) -> bytes:
    """A 16 x 16 extended WebP (it carries EXIF) followed by ``count`` empty unknown chunks,
    which a decoder must walk and skip (8 bytes each)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 150)).save(buffer, "WEBP", exif=Image.Exif().tobytes())
    body = buffer.getvalue()[12:] + b"XTRA\x00\x00\x00\x00" * count
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def ico_with_many_frames(count: int = 65_535) -> bytes:
    """An icon whose directory lists ``count`` frames, all the same 16 x 16 PNG.

    Pillow reads and sorts every directory entry before it decodes the largest frame.
    """
    frame = png_from_rows(16, 16, bytes(range(0, 256, 16)))
    directory = struct.pack("<HHH", 0, 1, count)
    offset = len(directory) + 16 * count
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(frame), offset)
    return directory + entry * count + frame


def bmp_rle4(width: int = 4000, height: int = 4000) -> bytes:
    """A 4-bit BMP compressed with RLE4 in runs of one pixel (see ``bmp_rle8``)."""
    data = bytearray(bmp_rle8(width, height))
    struct.pack_into("<HI", data, 28, 4, 2)  # 4 bits a pixel, RLE4
    struct.pack_into("<I", data, 46, 16)  # colours in the palette
    return bytes(data)
