"""Compile protos/*.proto into Python stubs when they are missing or stale, and import them."""

# Standard
from types import SimpleNamespace
from typing import Optional
import hashlib
import importlib
import pathlib
import shutil
import sys
import tempfile

# Third Party
from grpc_tools import protoc
import grpc_tools

# Records which protos the stubs in a directory were compiled from.
STAMP_FILE = "PROTOS_SHA256"
# The compiled modules the client imports (they import each other by top-level name).
STUB_MODULES = {
    "predict_service": "computervisionservice_pb2_grpc",
    "train_service": "computervisiontrainingservice_pb2_grpc",
    "training_management": "trainingmanagement_pb2_grpc",
    "predict_request": "ccv.objectdetectiontaskrequest_pb2",
    "train_request": "ccv.objectdetectiontasktransformersobjectdetectortrainrequest_pb2",
    "train_parameters": "ccv.objectdetectiontasktransformersobjectdetectortrainparameters_pb2",
    "train_set": "caikit_data_model.caikit_computer_vision.objectdetectiontrainset_pb2",
    "training_info": "caikit_data_model.runtime.traininginforequest_pb2",
    "job_status": "caikit_data_model.common.jobstatus_pb2",
}


def protos_digest(protos_dir: pathlib.Path) -> str:
    """One hash over the names and contents of every .proto file in ``protos_dir``."""
    digest = hashlib.sha256()
    for proto in sorted(pathlib.Path(protos_dir).glob("*.proto")):
        digest.update(proto.name.encode() + b"\0" + proto.read_bytes() + b"\0")
    return digest.hexdigest()


def why_stale(protos_dir: pathlib.Path, generated_dir: pathlib.Path) -> Optional[str]:
    """Say why the stubs must be (re)compiled, or None when they match the protos."""
    protos_dir = pathlib.Path(protos_dir).absolute()
    generated_dir = pathlib.Path(generated_dir).absolute()
    if not any(protos_dir.glob("*.proto")):
        raise FileNotFoundError(
            f"no .proto files in {protos_dir}: start the runtime with "
            "'python3 launch_vision_runtime.py --purge_dirs' or run 'python3 dump_protos.py'"
        )
    stamp = generated_dir / STAMP_FILE
    if not stamp.is_file():
        return f"no compiled stubs in {generated_dir}"
    if stamp.read_text().strip() != protos_digest(protos_dir):
        return f"{protos_dir} changed since the stubs were compiled"
    # The stamp survives a half-deleted directory: every file protoc writes must be there too.
    for proto in sorted(protos_dir.glob("*.proto")):
        module = proto.stem.replace(".", "/")
        for suffix in ("_pb2.py", "_pb2_grpc.py"):
            if not (generated_dir / (module + suffix)).is_file():
                return f"{generated_dir / (module + suffix)} is missing"
    return None


def compile_stubs(protos_dir: pathlib.Path, generated_dir: pathlib.Path) -> None:
    """Run protoc (from grpcio-tools) over every .proto and replace the stubs in ``generated_dir``.

    Compiled into a staging directory first: a protoc failure leaves the old stubs in place.
    ``generated_dir/__init__.py`` is kept.
    """
    protos_dir, generated_dir = pathlib.Path(protos_dir), pathlib.Path(generated_dir)
    generated_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(path) for path in protos_dir.glob("*.proto"))
    # grpc_tools ships google/protobuf/*.proto (timestamp.proto is imported by caikit's protos).
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(dir=generated_dir.parent) as staging:
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{protos_dir}",
                f"-I{well_known}",
                f"--python_out={staging}",
                f"--grpc_python_out={staging}",
                *protos,
            ]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed (exit {status}) compiling {protos_dir}/*.proto")
        for old in generated_dir.iterdir():
            if old.name != "__init__.py":
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        for new in pathlib.Path(staging).iterdir():
            shutil.move(str(new), generated_dir / new.name)
    (generated_dir / STAMP_FILE).write_text(protos_digest(protos_dir) + "\n")


def load_stubs(generated_dir: pathlib.Path) -> SimpleNamespace:
    """Import the compiled modules the client needs (they import each other by top-level name)."""
    path = str(pathlib.Path(generated_dir).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    return SimpleNamespace(
        **{key: importlib.import_module(name) for key, name in STUB_MODULES.items()}
    )
