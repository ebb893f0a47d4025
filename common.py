"""Every path, model id, port and default of the example's scripts, in one place.

Ports come from the caikit config (runtime_config.yaml plus its environment overrides such as
RUNTIME_GRPC_PORT), so a port is written down once, in runtime_config.yaml. Generated
directories are relative to the current working directory: run the scripts from the directory
where models/ and train_data/ should live (the repository root in the README).
"""

# Standard
from typing import Dict
import os
import pathlib

# Local
from example_tools.venv import require_venv

# Every script imports this module first: outside .venv, say so in one line, not a traceback.
require_venv()

# Local
from example_tools.workspace import manifest_path  # noqa: E402

# Third Party
import yaml  # noqa: E402

REPO_DIR = pathlib.Path(__file__).resolve().parent
RUNTIME_CONFIG = REPO_DIR / "runtime_config.yaml"

WORK_DIR = pathlib.Path.cwd()
MODELS_DIR = WORK_DIR / "models"
TRAIN_DATA_DIR = WORK_DIR / "train_data"
PROTOS_DIR = WORK_DIR / "protos"
GENERATED_DIR = WORK_DIR / "generated"

# A JPEG the client sends to predict: drawn like the training images but from a random stream
# they never use, so the demo predicts on an image the model has not seen.
QUERY_IMAGE = TRAIN_DATA_DIR / "query.jpg"
# The layout example_tools.synthetic_data writes (tests/test_common.py checks it).
TRAIN_IMAGES_DIR = TRAIN_DATA_DIR / "images"
TRAIN_LABELS_FILE = TRAIN_DATA_DIR / "labels.txt"
QUERY_LABEL = "cat"
# The query image's expected objects, and a held-out set (generated from another seed than the
# training set) the client scores both models on: COCO JSON, written by create_train_data.py.
QUERY_ANNOTATIONS = TRAIN_DATA_DIR / "query.json"
HELD_OUT_IMAGES_DIR = TRAIN_DATA_DIR / "held_out" / "images"
HELD_OUT_ANNOTATIONS = TRAIN_DATA_DIR / "held_out" / "annotations.json"
# The lists of what the scripts generated in models/ and train_data/ (hidden files beside them):
# the only entries a script of the example ever deletes.
MODELS_MANIFEST = manifest_path(MODELS_DIR)
TRAIN_DATA_MANIFEST = manifest_path(TRAIN_DATA_DIR)
# Everything create_train_data.py writes into train_data/: all that a script of the example may
# ever replace there (example_tools.workspace). Your own data set goes anywhere else in it,
# e.g. train_data/my_data/ (docs/training.md).
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

BASE_MODEL_ID = "my_model"
TRAINED_MODEL_ID = "new_model"

# Generated training set. 512 images, not fewer: with 256 the tiny model memorises its
# training images (loss falls, held-out mAP@0.5 stalls near 0.15); with 512 it generalises
# (bench/training_quality.py).
NUM_TRAIN_IMAGES = 512

# Defaults of the train request sent by run_train_and_inference.py: 120 epochs of 512 images
# at batch 64 (the library's default, runtime_config.yaml's train_batch_size), peak learning rate
# 4e-3 of a one-cycle schedule (caikit_computer_vision.training; figures and what did not work in
# docs/training.md: minimum held-out mAP@0.5 0.789 over 3 data seeds x threads {1, 2}, 26.5-33 s
# on one core of a 2-core VM, 2-4 s on a CUDA GPU; 100 epochs at batch 32 scored 0.772 in 35 s).
DEFAULT_NUM_EPOCHS = 120
# The quicker run the client's --help and the README offer: fewer epochs that still learn. Held-out
# mAP@0.5 of demo.py on a 2-core VM (README): 120 epochs 0.908 (25.4 s of training), 100 0.733,
# 80 0.690 (12.1 s), 60 0.066, 40 0.025, 30 0.018: at 60 and fewer the model has not learnt yet.
QUICK_NUM_EPOCHS = 80
DEFAULT_LEARNING_RATE = 4e-3
# How long the client waits for training to finish, and how often it asks.
TRAINING_TIMEOUT_S = 600.0
STATUS_POLL_INTERVAL_S = 0.5
# How long the client keeps retrying the first predict while the runtime loads the new model.
SERVABLE_TIMEOUT_S = 60.0

# Where the launcher listens and where the client connects: this machine only, by default.
BIND_HOST = "127.0.0.1"
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

    Read without caikit, because the client must not import it (see vision_client). The
    override rule is caikit's: a key's path in capitals, e.g. RUNTIME_GRPC_PORT.
    """
    runtime = yaml.safe_load(RUNTIME_CONFIG.read_text())["runtime"]
    return {
        server: int(os.environ.get(f"RUNTIME_{server.upper()}_PORT", runtime[server]["port"]))
        for server in ("grpc", "http", "metrics")
    }


def runtime_grpc_port() -> int:
    return runtime_ports()["grpc"]


def for_runtime(path: pathlib.Path) -> str:
    """``path`` as the runtime should read it: relative to the shared working directory."""
    return str(pathlib.Path(path).relative_to(WORK_DIR))


# -- dump_protos.py -------------------------------------------------------------------------------
# Its log level: warnings (such as caikit's "Cannot generate task rpc" of --show-conflict) and
# errors, without the start-up messages of the HTTP app built for openapi.json. LOG_LEVEL
# overrides it, like any caikit config key.
DUMP_LOG_LEVEL = "warning"
