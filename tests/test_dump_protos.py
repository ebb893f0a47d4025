"""dump_protos.py writes caikit 0.29's interfaces, replaces protos/ safely, shows the conflict."""

# Standard
import json
import os
import pathlib
import re
import subprocess
import sys

# Third Party
import pytest

# First Party
from caikit.config import get_config

# Local
from example_tools import proto_dump

from .proto_fixtures import (
    DUMP_TIMEOUT_S,
    REPO_ROOT,
    STALE_FILE_NAME,
    DumpRun,
    dump_protos_once,
    run_dump_script,
)

# Everything caikit 0.29.0 generates for the library with runtime_config.yaml (listed from a run).
EXPECTED_FILES = frozenset(
    {
        "caikit_data_model.caikit_computer_vision.boundingbox.proto",
        "caikit_data_model.caikit_computer_vision.detectedobject.proto",
        "caikit_data_model.caikit_computer_vision.objectdetectionresult.proto",
        "caikit_data_model.caikit_computer_vision.objectdetectiontrainset.proto",
        "caikit_data_model.common.boolsequence.proto",
        "caikit_data_model.common.connectioninfo.proto",
        "caikit_data_model.common.connectiontlsinfo.proto",
        "caikit_data_model.common.directory.proto",
        "caikit_data_model.common.file.proto",
        "caikit_data_model.common.filereference.proto",
        "caikit_data_model.common.floatsequence.proto",
        "caikit_data_model.common.intsequence.proto",
        "caikit_data_model.common.jobstatus.proto",
        "caikit_data_model.common.listoffilereferences.proto",
        "caikit_data_model.common.listofvector1d.proto",
        "caikit_data_model.common.npfloat32sequence.proto",
        "caikit_data_model.common.npfloat64sequence.proto",
        "caikit_data_model.common.producerid.proto",
        "caikit_data_model.common.producerpriority.proto",
        "caikit_data_model.common.pyfloatsequence.proto",
        "caikit_data_model.common.runtime.modelinfo.proto",
        "caikit_data_model.common.runtime.modelinforequest.proto",
        "caikit_data_model.common.runtime.modelinforesponse.proto",
        "caikit_data_model.common.runtime.runtimeinforequest.proto",
        "caikit_data_model.common.runtime.runtimeinforesponse.proto",
        "caikit_data_model.common.s3base.proto",
        "caikit_data_model.common.s3files.proto",
        "caikit_data_model.common.s3path.proto",
        "caikit_data_model.common.strsequence.proto",
        "caikit_data_model.common.vector1d.proto",
        "caikit_data_model.runtime.deploymodelrequest.proto",
        "caikit_data_model.runtime.modelpointer.proto",
        "caikit_data_model.runtime.predictionjob.proto",
        "caikit_data_model.runtime.predictionjobinforequest.proto",
        "caikit_data_model.runtime.predictionjobstatusresponse.proto",
        "caikit_data_model.runtime.traininginforequest.proto",
        "caikit_data_model.runtime.trainingjob.proto",
        "caikit_data_model.runtime.trainingstatusresponse.proto",
        "caikit_data_model.runtime.undeploymodelrequest.proto",
        "caikit_data_model.vision.image.proto",
        "ccv.objectdetectiontaskcancelpredictionjob.proto",
        "ccv.objectdetectiontaskgetpredictionjobresult.proto",
        "ccv.objectdetectiontaskgetpredictionjobstatus.proto",
        "ccv.objectdetectiontaskrequest.proto",
        "ccv.objectdetectiontasktransformersobjectdetectortrainparameters.proto",
        "ccv.objectdetectiontasktransformersobjectdetectortrainrequest.proto",
        "computervisionjobservice.proto",
        "computervisionservice.proto",
        "computervisiontrainingservice.proto",
        "infoservice.proto",
        "openapi.json",
        "trainingmanagement.proto",
    }
)
TASK_REQUEST_PROTO = "ccv.objectdetectiontaskrequest.proto"
PREDICT_HTTP_PATH = "/api/v1/task/object-detection"

# What caikit 0.29.0 logs for the conflict demo (the README quotes this line).
CONFLICT_WARNING = (
    "Cannot generate task rpc for <class 'caikit_computer_vision.data_model.tasks."
    "ObjectDetectionTask'>: Conflicting value types for arg threshold: "
    "<class 'str'> != <class 'float'>"
)


@pytest.fixture(scope="session")
def dump(tmp_path_factory) -> DumpRun:
    return dump_protos_once(tmp_path_factory)


def _message_fields(proto_file: pathlib.Path, message: str) -> list:
    """The field lines of ``message`` in ``proto_file``, without comments and blank lines."""
    text = proto_file.read_text(encoding="utf-8")
    body = re.search(rf"^message {message} {{\n(.*?)^}}", text, re.M | re.S)
    assert body, f"no message {message} in {proto_file.name}"
    lines = (line.strip() for line in body.group(1).splitlines())
    return [line for line in lines if line and not line.startswith("/*")]


def test_dump_writes_exactly_the_files_caikit_generates(dump):
    assert {path.name for path in dump.protos_dir.iterdir()} == EXPECTED_FILES


def test_script_prints_how_many_protos_and_where(dump):
    proto_count = sum(name.endswith(".proto") for name in EXPECTED_FILES)
    assert (
        f"Wrote {proto_count} .proto files and openapi.json to {dump.protos_dir}"
        in dump.stdout
    )


def test_task_request_is_image_bytes_and_optional_double_threshold(dump):
    fields = _message_fields(dump.protos_dir / TASK_REQUEST_PROTO, "ObjectDetectionTaskRequest")
    assert fields == ["bytes inputs = 1;", "optional double threshold = 2;"]


def test_openapi_json_has_the_object_detection_predict_path(dump):
    spec = json.loads((dump.protos_dir / "openapi.json").read_text(encoding="utf-8"))
    assert "openapi" in spec
    assert "post" in spec["paths"][PREDICT_HTTP_PATH]


def test_dump_replaces_existing_protos_and_leaves_no_temp_dirs(dump):
    # The shared run found protos/ holding a stale file (see proto_fixtures).
    assert not (dump.protos_dir / STALE_FILE_NAME).exists()
    assert sorted(os.listdir(dump.work_dir)) == ["protos"]


def test_show_conflict_warns_and_drops_the_task_request(tmp_path, dump):
    conflict = run_dump_script(tmp_path, "--show-conflict")

    assert "Conflicting value types for arg threshold" in conflict.stderr
    assert CONFLICT_WARNING in conflict.stderr
    assert TASK_REQUEST_PROTO in conflict.stdout  # the script's explanation names the file
    assert not (conflict.protos_dir / TASK_REQUEST_PROTO).exists()
    # The demo module is registered only on demand: the real library's dump still has it.
    assert (dump.protos_dir / TASK_REQUEST_PROTO).exists()


def test_failed_dump_leaves_previous_directory_intact(tmp_path, monkeypatch):
    target = tmp_path / "protos"
    target.mkdir()
    (target / "old.proto").write_text("// old\n", encoding="utf-8")
    config_before = _dump_overridden_config()

    def dump_half_then_fail(output_dir: str, write_modules_file: bool) -> None:
        (pathlib.Path(output_dir) / "half.proto").write_text("// half\n", encoding="utf-8")
        raise RuntimeError("dump failed half way")

    monkeypatch.setattr(proto_dump, "dump_grpc_services", dump_half_then_fail)
    # Other tests may have generated HTTP wrappers in this process; this test is about the swap.
    monkeypatch.setattr(proto_dump, "get_generated_proto_classes", lambda: [])

    with pytest.raises(RuntimeError, match="half way"):
        proto_dump.dump_interfaces(target)

    assert sorted(os.listdir(tmp_path)) == ["protos"]
    assert sorted(os.listdir(target)) == ["old.proto"]
    assert (target / "old.proto").read_text(encoding="utf-8") == "// old\n"
    assert _dump_overridden_config() == config_before


def _dump_overridden_config() -> tuple:
    runtime = get_config().runtime
    return (runtime.local_models_dir, runtime.lazy_load_local_models, runtime.metrics.enabled)


# What a launcher does: configure caikit, dump in-process, go on. In a fresh interpreter, because
# a dump registers message classes for good (and pytest's process has other tests' classes).
_IN_PROCESS_DUMP = """
import json, pathlib, signal, sys
sys.path.insert(0, sys.argv[1])
import common
from caikit.config import get_config
from caikit_computer_vision.caikit_workarounds import current_model_manager
from example_tools.proto_dump import dump_interfaces

def state():
    runtime = get_config().runtime
    return [runtime.local_models_dir, runtime.lazy_load_local_models, runtime.metrics.enabled,
            repr(signal.getsignal(signal.SIGINT)), repr(signal.getsignal(signal.SIGTERM)),
            current_model_manager() is None]

common.configure_caikit()
before = state()
written = dump_interfaces(pathlib.Path("protos"))
after = state()
try:
    dump_interfaces(pathlib.Path("again"))
    second = "no error"
except RuntimeError as err:
    second = str(err)
print(json.dumps({"before": before, "after": after, "second": second,
                  "written": [str(path) for path in written]}))
"""


def test_in_process_dump_leaves_config_signals_and_model_manager_as_found(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _IN_PROCESS_DUMP, str(REPO_ROOT)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=DUMP_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["after"] == report["before"]
    assert report["before"][:3] == ["models", True, True]  # runtime_config.yaml's values
    written = [pathlib.Path(path) for path in report["written"]]
    assert [path.name for path in written] == sorted(EXPECTED_FILES)
    assert all(path.parent.name == "protos" and path.is_file() for path in written)
    assert "before starting a runtime" in report["second"]
    assert not (tmp_path / "again").exists()
