"""Every path, model id, port and default of the example's scripts, in one place.

Importing it only defines names (standard library alone, nothing checked, nothing read), so any
script, example tool, test or bench may import it first; each script checks its environment
itself (``example_tools.venv.require_venv``). Ports come from the caikit config
(runtime_config.yaml plus its environment overrides such as RUNTIME_GRPC_PORT), so a port is
written down once, in runtime_config.yaml. Generated directories are relative paths: they name
the directories under the current working directory of the moment they are used. Run the
scripts from the directory where models/ and train_data/ should live (the repository root in
the README).
"""

# Standard
from typing import Dict
import pathlib

REPO_DIR = pathlib.Path(__file__).resolve().parent
RUNTIME_CONFIG = REPO_DIR / "runtime_config.yaml"

MODELS_DIR = pathlib.Path("models")
TRAIN_DATA_DIR = pathlib.Path("train_data")
PROTOS_DIR = pathlib.Path("protos")
GENERATED_DIR = pathlib.Path("generated")

# The layout example_tools.synthetic_data writes: a directory of images and a label file.
IMAGES_DIR_NAME = "images"
LABELS_FILE_NAME = "labels.txt"
# The same set's labels as a COCO detection JSON, where the generator is asked for COCO.
COCO_LABELS_FILE_NAME = "annotations.json"

# A JPEG the client sends to predict: drawn like the training images but from a random stream
# they never use, so the demo predicts on an image the model has not seen.
QUERY_IMAGE = TRAIN_DATA_DIR / "query.jpg"
TRAIN_IMAGES_DIR = TRAIN_DATA_DIR / IMAGES_DIR_NAME
TRAIN_LABELS_FILE = TRAIN_DATA_DIR / LABELS_FILE_NAME
QUERY_LABEL = "cat"
# The query image's expected objects, and a held-out set (generated from another seed than the
# training set) the client scores both models on: COCO JSON, written by create_train_data.py.
QUERY_ANNOTATIONS = TRAIN_DATA_DIR / "query.json"
HELD_OUT_IMAGES_DIR = TRAIN_DATA_DIR / "held_out" / IMAGES_DIR_NAME
HELD_OUT_ANNOTATIONS = TRAIN_DATA_DIR / "held_out" / COCO_LABELS_FILE_NAME
# Everything create_train_data.py writes into train_data/: all that a script of the example may
# ever replace there (example_tools.workspace, which also keeps the lists of what the scripts
# generated, hidden files beside models/ and train_data/). Your own data set goes anywhere else
# in it, e.g. train_data/my_data/ (docs/training.md).
GENERATED_TRAIN_DATA = tuple(
    sorted(
        {
            path.relative_to(TRAIN_DATA_DIR).parts[0]
            for path in (
                TRAIN_IMAGES_DIR, TRAIN_LABELS_FILE, QUERY_IMAGE, QUERY_ANNOTATIONS,
                HELD_OUT_IMAGES_DIR, HELD_OUT_ANNOTATIONS,
            )
        }
    )
)

# Labels of the tiny demo model and of the generated training data. The names are arbitrary;
# what matters is that every label has its own visual signature in the generated images.
DEFAULT_LABELS = ("cat", "dog")

# Side length, in pixels, of the generated training images.
DEFAULT_IMAGE_SIZE = 64

BASE_MODEL_ID = "my_model"
TRAINED_MODEL_ID = "new_model"

# Generated training set. 512 images, not fewer: with half as many the tiny model memorises its
# training images instead of generalising (bench/training_quality.py).
NUM_TRAIN_IMAGES = 512
# Training images of a working directory prepared by tests and bench (runtime_harness): enough
# for every check, quick to generate.
PREPARED_TRAIN_IMAGES = 32

# Defaults of the train request sent by run_train_and_inference.py: 120 epochs at the library's
# batch size (runtime_config.yaml's train_batch_size), peak learning rate 4e-3 of a one-cycle
# schedule (caikit_computer_vision.training). Why these, what they score and take, and what did
# not work: docs/training.md.
DEFAULT_NUM_EPOCHS = 120
# The quicker run the client's --help and the README offer: fewer epochs that still learn
# (held-out mAP@0.5 by epochs: the README's quick start; at 60 epochs and fewer the model has not
# learnt yet).
QUICK_NUM_EPOCHS = 80
DEFAULT_LEARNING_RATE = 4e-3
# How long the client waits for training to finish, and how often it asks.
TRAINING_TIMEOUT_S = 600.0
STATUS_POLL_INTERVAL_S = 0.5
# How long the client keeps retrying the first predict while the runtime loads the new model.
SERVABLE_TIMEOUT_S = 60.0

# Where the launcher listens and where the client connects, by default: this machine only (the
# loopback address). The tests and bench start their runtimes and send their requests here too.
HOST = "127.0.0.1"


# -- launch_vision_runtime.py ------------------------------------------------------------------
# Log channels of caikit's start-up chatter (about 90 lines: every RPC wrapped and re-routed,
# services constructed, the data model validated, S3Path "not found" warnings about caikit's own
# classes) and the level they are shown from, added to caikit's log.filters by the launcher so
# that its start-up ends with one readable block of what is served. The example's own channels
# (CCV...), model loading and every error still show. LOG_LEVEL or LOG_FILTERS in the
# environment turns this off (LOG_LEVEL=info shows everything).
QUIET_STARTUP_LOG = {
    **dict.fromkeys(
        ("SERVER-WRAPR", "GP-SERVICR-I", "GT-SERVICR-I", "SERVR-HTTP", "SERVR-GRPC", "SERVR-BASE",
         "TRACE", "MODEL-MANAGR", "MM-SIZER", "uvicorn.error"),
        "warning",
    ),
    "SERVICR-UTIL": "error",
}


def configure_caikit() -> None:
    """Load runtime_config.yaml (and environment overrides) into caikit's global config."""
    # First Party
    import caikit  # pylint: disable=import-outside-toplevel

    caikit.configure(str(RUNTIME_CONFIG))


def runtime_ports() -> Dict[str, int]:
    """The gRPC, HTTP and metrics ports of runtime_config.yaml, after environment overrides.

    Read by aconfig, the reader ``caikit.configure`` itself uses (a key's path in capitals
    overrides it, e.g. RUNTIME_GRPC_PORT), without importing caikit: the client must not (see
    vision_client).
    """
    # First Party
    import aconfig  # pylint: disable=import-outside-toplevel

    runtime = aconfig.Config.from_yaml(str(RUNTIME_CONFIG), override_env_vars=True).runtime
    return {server: int(runtime[server].port) for server in ("grpc", "http", "metrics")}


def runtime_grpc_port() -> int:
    return runtime_ports()["grpc"]


def for_runtime(path: pathlib.Path) -> str:
    """``path`` as the runtime should read it: relative to the shared working directory."""
    return str(pathlib.Path(path).absolute().relative_to(pathlib.Path.cwd()))


# -- dump_protos.py -------------------------------------------------------------------------------
# Its log level: warnings (such as caikit's "Cannot generate task rpc" of --show-conflict) and
# errors, without the start-up messages of the HTTP app built for openapi.json. LOG_LEVEL
# overrides it, like any caikit config key.
DUMP_LOG_LEVEL = "warning"
