"""The library's defaults: the values of its caikit config keys that a runtime config leaves out.

Nothing here knows the example's ports, directories or generated files (those are in the
top-level ``common.py``).
"""

# Standard
from typing import Tuple

# Section of the caikit config (runtime_config.yaml) that holds this library's settings.
LIBRARY_CONFIG_KEY: str = "caikit_computer_vision"

# Seed used wherever randomness is involved (model init, data generation, training order)
# so that a run can be reproduced exactly.
DEFAULT_SEED: int = 0

# Default score threshold of ObjectDetectionTask predictions (same as the upstream module).
DEFAULT_THRESHOLD: float = 0.5

# Largest image, in pixels (width x height), that run() and training accept: the default of
# caikit_computer_vision.max_image_pixels. It is checked from the file's headers, so a
# "decompression bomb" (a tiny file declaring a huge image) is refused before any pixel is
# decoded (images.py). 40 MP holds any phone photo.
MAX_IMAGE_PIXELS: int = 40_000_000

# Most scans a JPEG may hold: the default of caikit_computer_vision.max_image_scans. libjpeg
# reads every scan of a progressive JPEG before it outputs a row, and each scan is a pass over
# the whole image, so decoding time grows with them (a 36 MP grey JPEG: about 3 ms a scan here,
# 14 ms on the machine). Encoders write 1 to 3 (baseline) or about 10 (progressive;
# Photoshop 3 to 5), so 64 leaves room and costs at most a second or so more than a real photo.
MAX_IMAGE_SCANS: int = 64

# Most chunks (PNG, WebP), marker segments (JPEG), blocks (GIF), directory values (TIFF) or
# frames (ICO) an image file may hold: the default of caikit_computer_vision.max_image_chunks.
# Pillow reads these one at a time in Python (about 20 us each), so a file of millions of empty
# chunks held a core for tens of seconds. A real file holds a few dozen; a 32 MB PNG written
# by libpng (8 kB image-data chunks) about 4000.
MAX_IMAGE_CHUNKS: int = 10_000

# Image formats accepted by default (Pillow's names): the default of
# caikit_computer_vision.image_formats. What cameras, phones and browsers send. GIF, BMP, TIFF
# and ICO can be switched on (each has the same checks before decoding in images.py); they are
# off because no client of the example sends them, and they are where Pillow decodes in Python
# (GIF blocks, BMP RLE) or through libtiff's many codecs into 16-bit and float pixels.
DEFAULT_IMAGE_FORMATS: Tuple[str, ...] = ("JPEG", "PNG", "WEBP")

# Most boxes one image of a training set may carry: the default of
# caikit_computer_vision.max_boxes_per_image. The training loss matches every box against every
# detection token, so a step's cost grows with the boxes of its images (one image with 200,000
# boxes ran one epoch for over 4 minutes and took +974 MB). COCO's busiest image has 93.
MAX_BOXES_PER_IMAGE: int = 300

# Images per optimisation step in train(), unless runtime_config.yaml sets
# caikit_computer_vision.train_batch_size. The train signature is fixed by the example's proto
# (model_path, train_data, num_epochs, learning_rate), so this is a library setting. 64: a step
# of a small model costs little more at 64 than at 32 on a CPU (Python and dispatch overhead), so
# the demo's 120 epochs at 64 are faster than its 100 at 32 and score better (docs/training.md).
# A large model on a small machine wants less: activations grow with the batch.
DEFAULT_TRAIN_BATCH_SIZE: int = 64
