"""A runtime of the example for tests that need one but not the launcher's --purge_dirs work.

The working directory gets a copy of a saved ``my_model`` and a small generated training set;
then launch_vision_runtime.py serves it on free loopback ports. Extra environment variables
(caikit config overrides such as RUNTIME_GRPC_OPTIONS...) can be passed in.
"""

# Standard
from typing import Dict, List, Optional
import pathlib
import shutil

# Local
from example_tools.synthetic_data import generate_train_data
from vision_client.local_runtime import RuntimeProcess, start_runtime

NUM_TRAIN_IMAGES = 32


def prepare_work_dir(work_dir: pathlib.Path, saved_model_dir: pathlib.Path) -> None:
    """models/my_model (a copy of ``saved_model_dir``) and train_data/ in ``work_dir``."""
    shutil.copytree(saved_model_dir, work_dir / "models" / "my_model")
    generate_train_data(str(work_dir / "train_data"), num_images=NUM_TRAIN_IMAGES)


def start_example_runtime(
    work_dir: pathlib.Path,
    saved_model_dir: pathlib.Path,
    extra_env: Optional[Dict[str, str]] = None,
    args: Optional[List[str]] = None,
) -> RuntimeProcess:
    prepare_work_dir(work_dir, saved_model_dir)
    return start_runtime(work_dir, args or [], extra_env=extra_env)
