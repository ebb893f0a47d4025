"""deploy/modelmesh/: the ModelMesh ServingRuntime agrees with the runtime and the Dockerfile.

No cluster here, so the manifests are checked as text, as test_deploy_static.py does for KServe:
what ModelMesh relies on (multiModel, the gRPC endpoints, the puller's /models) must match
runtime_config.yaml, the launcher and the image. tests/test_runtime_guards.py drives the
runtime's mmesh.ModelRuntime the way ModelMesh does.
"""

# Standard
import pathlib

# Third Party
import pytest
import yaml

# Local
from common import HOST
from .readme_shell import REPO_ROOT, configured_ports

MODELMESH_DIR = REPO_ROOT / "deploy" / "modelmesh"
SERVING_RUNTIME = MODELMESH_DIR / "servingruntime.yaml"
INFERENCE_SERVICE = MODELMESH_DIR / "inferenceservice.yaml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
# Where ModelMesh's puller puts models, in every container of the pod.
PULLER_MODELS_DIR = "/models"


@pytest.fixture(scope="module")
def runtime_spec():
    document = yaml.safe_load(SERVING_RUNTIME.read_text())
    assert document["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert document["kind"] == "ServingRuntime"
    return document["spec"]


@pytest.fixture(scope="module")
def container(runtime_spec):
    (container,) = runtime_spec["containers"]
    return container


def _config() -> dict:
    return yaml.safe_load((REPO_ROOT / "runtime_config.yaml").read_text())


def test_it_is_a_multi_model_runtime_on_the_configured_grpc_port(runtime_spec):
    assert runtime_spec["multiModel"] is True
    port = configured_ports()["grpc"]
    assert runtime_spec["grpcEndpoint"] == f"port:{port}"
    assert runtime_spec["grpcDataEndpoint"] == f"port:{port}"
    assert {"name": "caikit", "autoSelect": True} in runtime_spec["supportedModelFormats"]


def test_the_container_serves_the_pullers_models_dir(container):
    models_dir = _config()["runtime"]["local_models_dir"]
    assert str(pathlib.PurePosixPath(container["workingDir"]) / models_dir) == PULLER_MODELS_DIR
    command = container["command"]
    assert command[:2] == ["python", "/app/launch_vision_runtime.py"]
    assert (REPO_ROOT / pathlib.PurePosixPath(command[1]).name).is_file()
    assert "launch_vision_runtime.py" in DOCKERFILE.read_text()
    assert "WORKDIR /app" in DOCKERFILE.read_text()
    assert command[command.index("--host") + 1] == HOST


def test_the_environment_names_real_config_keys(container):
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["CAIKIT_COMPUTER_VISION_ALLOW_MODEL_DEPLOYMENT"] == "true"
    config = _config()
    for name in env:
        section, _, key = name.lower().partition("_")
        if name.startswith("CAIKIT_COMPUTER_VISION_"):
            assert name[len("CAIKIT_COMPUTER_VISION_"):].lower() in config["caikit_computer_vision"]
        else:
            assert section == "runtime"
            node, parts = config["runtime"], key.split("_")
            # RUNTIME_LAZY_LOAD_LOCAL_MODELS -> runtime.lazy_load_local_models, etc.
            assert any(
                "_".join(parts[:i]) in node for i in range(1, len(parts) + 1)
            ), name


def test_the_inference_service_uses_this_runtime_through_modelmesh(runtime_spec):
    document = yaml.safe_load(INFERENCE_SERVICE.read_text())
    assert document["kind"] == "InferenceService"
    assert document["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "ModelMesh"
    model = document["spec"]["predictor"]["model"]
    assert model["runtime"] == yaml.safe_load(SERVING_RUNTIME.read_text())["metadata"]["name"]
    assert model["modelFormat"]["name"] in [f["name"] for f in runtime_spec["supportedModelFormats"]]
