"""Make what the runtime demo needs on disk: the base model and the training set.

Both are written to a temporary directory beside their target and renamed into place, so an
interrupted launcher never leaves half a model or half a data set behind. Only what the example
generated is ever replaced (example_tools.workspace): the user's models and data stay.
"""

# Standard
from typing import Dict, List, Sequence
import dataclasses
import io
import pathlib
import tempfile

# Third Party
from PIL import Image

# First Party
import alog

# Local
from caikit_computer_vision.coco_format import write_coco_file
from caikit_computer_vision.defaults import DEFAULT_SEED
from common import DEFAULT_LABELS, IMAGES_DIR_NAME, LABELS_FILE_NAME
from caikit_computer_vision.modules.object_detection import TransformersObjectDetector
from example_tools import workspace
from example_tools.synthetic_data import generate_train_data, render_example
from example_tools.tiny_yolos import build_tiny_yolos

log = alog.use_channel("CCVDEMO")


def create_base_model(
    model_dir: pathlib.Path,
    architecture: str = "tiny",
    labels: Sequence[str] = DEFAULT_LABELS,
    seed: int = DEFAULT_SEED,
) -> TransformersObjectDetector:
    """Build a random YOLOS, check that it runs on a real JPEG, and save it to ``model_dir``."""
    module = TransformersObjectDetector(*build_tiny_yolos(labels, architecture, seed))
    image, _ = render_example(labels[0], seed=seed, labels=labels)
    # Sanity inference: a model that cannot predict must never reach models/.
    result = module.run(image, threshold=0.0)
    if not result.detected_objects:
        raise RuntimeError("the new model detected nothing at threshold 0; not saving it")
    module.save(str(model_dir))
    return module


# Beside the training set: a held-out set the demo client scores both models on, and the
# expected objects of the query image, both as COCO JSON (the client reads them without caikit).
HELD_OUT_DIR_NAME = "held_out"
QUERY_ANNOTATIONS_NAME = "query.json"
# The held-out set's seed: generated images depend on the seed alone, so any other seed than
# the training's gives images the training never saw.
HELD_OUT_SEED_OFFSET = 1234


def create_train_data(
    train_dir: pathlib.Path,
    num_images: int,
    query_image_name: str,
    query_label: str,
    seed: int = DEFAULT_SEED,
    num_held_out_images: int = 100,
) -> List[pathlib.Path]:
    """Generate ``num_images`` labelled JPEGs into ``train_dir``, one query image with a
    ``query_label`` object named ``query_image_name`` and its expected box
    (``QUERY_ANNOTATIONS_NAME``), and ``num_held_out_images`` more under ``HELD_OUT_DIR_NAME/``
    (COCO labels) from a seed the training set does not use.

    Each entry replaces a generated one of the same name (``example_tools.workspace``):
    anything else in ``train_dir``, such as the user's own data, stays. Raises
    ``workspace.NotGenerated``, replacing nothing, when a name holds something the example did
    not write (callers check their names first, before the work). Returns what was replaced.
    """
    train_dir = pathlib.Path(train_dir).absolute()
    train_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=train_dir.parent, prefix=f".{train_dir.name}.") as tmp:
        staging = pathlib.Path(tmp)
        generate_train_data(str(staging), num_images=num_images, seed=seed)
        query, box = render_example(query_label, seed=seed)
        (staging / query_image_name).write_bytes(query)
        write_coco_file(
            str(staging / QUERY_ANNOTATIONS_NAME),
            [dataclasses.replace(box, image=query_image_name)],
            {query_image_name: Image.open(io.BytesIO(query)).size},
            DEFAULT_LABELS,
        )
        generate_train_data(
            str(staging / HELD_OUT_DIR_NAME),
            num_images=num_held_out_images,
            seed=seed + HELD_OUT_SEED_OFFSET,
            label_format="coco",
        )
        return workspace.publish_generated(train_dir, staging)


def create_base_model_in(models_dir: pathlib.Path, model_id: str) -> List[pathlib.Path]:
    """``create_base_model`` as ``models_dir/model_id``, replacing only a generated model of
    that name (``workspace.NotGenerated`` otherwise, before any work). Returns what was replaced.
    """
    models_dir = pathlib.Path(models_dir).absolute()
    workspace.check_replaceable(models_dir, [model_id], "creating the base model")
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir.parent, prefix=f".{models_dir.name}.") as tmp:
        create_base_model(pathlib.Path(tmp) / model_id)
        return workspace.publish_generated(models_dir, pathlib.Path(tmp))


def train_data_paths(train_dir: pathlib.Path) -> Dict[str, pathlib.Path]:
    """Where a generated training set keeps its images and its label file."""
    return {
        "img_dir_path": pathlib.Path(train_dir) / IMAGES_DIR_NAME,
        "labels_file": pathlib.Path(train_dir) / LABELS_FILE_NAME,
    }


def missing_demo_assets(
    models_dir: pathlib.Path,
    base_model_id: str,
    train_dir: pathlib.Path,
    protos_dir: pathlib.Path,
) -> List[str]:
    """Describe each thing the demo expects on disk that is not there (empty list: all good)."""
    missing = []
    models_dir, train_dir = pathlib.Path(models_dir).absolute(), pathlib.Path(train_dir).absolute()
    if not (models_dir / base_model_id / "config.yml").is_file():
        missing.append(f"the base model {models_dir / base_model_id}")
    for role, path in train_data_paths(train_dir).items():
        if not path.exists():
            missing.append(f"the training data's {role.split('_')[0]} {path}")
    if not any(pathlib.Path(protos_dir).glob("*.proto")):
        missing.append(f"the dumped .proto files in {pathlib.Path(protos_dir).absolute()}")
    return missing
