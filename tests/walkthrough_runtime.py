"""A runtime whose working directory looks like the repository after the README's walkthrough.

README commands name ``models/``, ``train_data/query.jpg``, ``protos/``, ``clients/`` and the
model ``new_model`` (the one the walkthrough trains). Here ``new_model`` is a copy of the saved
base model, so no test pays for a training before it can run those commands.
"""

# Standard
from contextlib import contextmanager
from typing import Iterator
import pathlib
import shutil

# Local
from example_tools.synthetic_data import render_example
from example_tools.runtime_harness import prepare_work_dir, RuntimeProcess, start_runtime
import common

from .proto_fixtures import dump_protos_once
from .readme_shell import REPO_ROOT


def start_walkthrough_runtime(
    work_dir: pathlib.Path, saved_model_dir: pathlib.Path, protos_dir: pathlib.Path
) -> RuntimeProcess:
    """Lay out ``work_dir`` as the walkthrough leaves the repository, then serve it.

    ``protos_dir`` is a dump of the interfaces (dump_protos.py's protos/); it is copied.
    """
    prepare_work_dir(work_dir, saved_model_dir)
    shutil.copytree(saved_model_dir, work_dir / "models" / common.TRAINED_MODEL_ID)
    query, _ = render_example(common.QUERY_LABEL, seed=2024)
    (work_dir / "train_data" / common.QUERY_IMAGE.name).write_bytes(query)
    shutil.copytree(protos_dir, work_dir / "protos")
    (work_dir / "clients").symlink_to(REPO_ROOT / "clients", target_is_directory=True)
    return start_runtime(work_dir, [])


@contextmanager
def serve_walkthrough(tmp_path_factory, saved_model_dir: pathlib.Path) -> Iterator[RuntimeProcess]:
    """The walkthrough runtime in a new temporary directory, with the session's protos dump;
    stopped on exit."""
    dump = dump_protos_once(tmp_path_factory)
    runtime = start_walkthrough_runtime(
        tmp_path_factory.mktemp("walkthrough"), saved_model_dir, dump.protos_dir
    )
    try:
        yield runtime
    finally:
        runtime.stop()
