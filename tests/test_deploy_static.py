"""deploy/: the Dockerfile and the KServe manifests agree with each other and with the repository.

No image is built here (no container engine on CI), so the files are checked as text: the
ports, paths, pins and names that must match runtime_config.yaml, requirements.txt, the launcher
and the README's commands.
"""

# Standard
from typing import Dict, List, Tuple
import json
import pathlib
import re
import shlex

# Third Party
import pytest
import yaml

# Local
from common import HOST
from .readme_shell import REPO_ROOT, bash_commands, configured_ports, readme_section

DEPLOY_DIR = REPO_ROOT / "deploy"
DOCKERFILE = DEPLOY_DIR / "Dockerfile"
DOCKERIGNORE = DEPLOY_DIR / "Dockerfile.dockerignore"
SERVING_RUNTIME = DEPLOY_DIR / "kserve" / "servingruntime.yaml"
INFERENCE_SERVICE = DEPLOY_DIR / "kserve" / "inferenceservice.yaml"
CLUSTER_SECTION = "# Deployment"
# Where KServe puts the content of an InferenceService's storageUri in the model container.
KSERVE_MODEL_DIR = "/mnt/models"
CONTAINER_MODELS_DIR = "/app/models"


def _instructions() -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            logical.append(current)
            current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def _all(name: str) -> List[str]:
    return [arguments for instruction, arguments in _instructions() if instruction == name]


def _one(name: str) -> str:
    found = _all(name)
    assert len(found) == 1, f"expected one {name} in the Dockerfile, found {found}"
    return found[0]


def _copied() -> set:
    """The sources of every COPY, as paths relative to the build context (the repository)."""
    return {name.rstrip("/") for arguments in _all("COPY") for name in arguments.split()[:-1]}


def _yaml(path: pathlib.Path) -> Dict:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert len(documents) == 1, f"{path} should hold one document"
    return documents[0]


def _runtime_config() -> Dict:
    return yaml.safe_load((REPO_ROOT / "runtime_config.yaml").read_text())["runtime"]


def _requirement_pin(name: str) -> str:
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(rf"{re.escape(name)}==(\S+)$", line.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"requirements.txt pins no {name}")


@pytest.fixture(scope="module")
def container() -> Dict:
    (only,) = _yaml(SERVING_RUNTIME)["spec"]["containers"]
    return only


# -- Dockerfile ------------------------------------------------------------------------------------


def test_dockerfile_runs_as_a_numeric_non_root_user():
    instructions = _instructions()
    last_user = max(index for index, (name, _) in enumerate(instructions) if name == "USER")
    user = instructions[last_user][1].split(":")[0]
    # Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert user.isdigit() and int(user) != 0, user
    assert "RUN" not in [name for name, _ in instructions[last_user:]]


def test_dockerfile_exposes_the_configured_ports():
    exposed = {int(port) for arguments in _all("EXPOSE") for port in arguments.split()}
    assert exposed == set(configured_ports().values())


def test_dockerfile_installs_the_requirements_with_the_cpu_torch_of_the_same_pin():
    run = " && ".join(_all("RUN"))
    torch = _requirement_pin("torch")
    assert f"--index-url https://download.pytorch.org/whl/cpu torch=={torch}" in run
    assert "pip install -r requirements.txt" in run
    assert run.index(f"torch=={torch}") < run.index("-r requirements.txt")
    assert any(arguments.split()[0] == "requirements.txt" for arguments in _all("COPY"))


def test_dockerfile_copies_everything_the_launcher_imports():
    copied = _copied()
    local_modules = {path.stem for path in REPO_ROOT.glob("*.py")} | {
        path.parent.name for path in REPO_ROOT.glob("*/__init__.py")
    }
    needed = {"runtime_config.yaml", "launch_vision_runtime.py"}
    for script in ("launch_vision_runtime.py", "common.py"):
        source = (REPO_ROOT / script).read_text()
        for module in re.findall(r"^\s*(?:from|import) (\w+)", source, re.M):
            if module in local_modules:
                needed.add(f"{module}.py" if (REPO_ROOT / f"{module}.py").is_file() else module)
    assert "caikit_computer_vision" in needed and "common.py" in needed
    assert needed <= copied, needed - copied
    for name in copied - {"requirements.txt"}:
        assert (REPO_ROOT / name).exists(), name


def test_dockerfile_serves_models_from_the_configured_models_dir():
    workdir = _one("WORKDIR")
    models_dir = _runtime_config()["local_models_dir"]
    assert f"{workdir}/{models_dir}" == CONTAINER_MODELS_DIR
    assert any(CONTAINER_MODELS_DIR in arguments for arguments in _all("RUN")), "create it"
    assert f":{CONTAINER_MODELS_DIR}" in DOCKERFILE.read_text()  # the documented mount


def test_dockerfile_entrypoint_is_the_launcher_on_every_interface():
    entrypoint = json.loads(_one("ENTRYPOINT"))
    assert entrypoint == [
        "python",
        f"{_one('WORKDIR')}/launch_vision_runtime.py",
        "--host",
        "0.0.0.0",
    ]
    assert not _all("CMD")


def test_dockerfile_healthcheck_asks_the_http_health_endpoint():
    healthcheck = _one("HEALTHCHECK")
    assert f"http://{HOST}:{configured_ports()['http']}/health" in healthcheck


def test_dockerignore_sends_only_what_the_image_copies():
    lines = [line for line in DOCKERIGNORE.read_text().splitlines() if line and line[0] != "#"]
    assert lines[0] == "*"  # everything else (.venv, models/, train_data/) stays out
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert included == _copied()


# -- KServe ----------------------------------------------------------------------------------------


def test_serving_runtime_declares_the_caikit_model_format():
    runtime = _yaml(SERVING_RUNTIME)
    assert (runtime["apiVersion"], runtime["kind"]) == (
        "serving.kserve.io/v1alpha1",
        "ServingRuntime",
    )
    assert {"name": "caikit", "autoSelect": True} in runtime["spec"]["supportedModelFormats"]
    assert runtime["spec"]["multiModel"] is False


def test_serving_runtime_serves_grpc_on_the_configured_port(container):
    (port,) = container["ports"]
    assert port == {"containerPort": configured_ports()["grpc"], "name": "h2c", "protocol": "TCP"}


def test_serving_runtime_points_the_metrics_annotations_at_the_metrics_port():
    annotations = _yaml(SERVING_RUNTIME)["spec"]["annotations"]
    assert annotations["prometheus.io/port"] == str(configured_ports()["metrics"])


def test_serving_runtime_serves_the_models_kserve_downloads(container):
    # The image's entrypoint serves <working directory>/<local_models_dir>.
    assert "command" not in container and "args" not in container
    assert f"{container['workingDir']}/{_runtime_config()['local_models_dir']}" == KSERVE_MODEL_DIR


def test_serving_runtime_runs_the_image_as_non_root(container):
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_inference_service_uses_the_serving_runtime_and_a_models_directory():
    service = _yaml(INFERENCE_SERVICE)
    assert (service["apiVersion"], service["kind"]) == (
        "serving.kserve.io/v1beta1",
        "InferenceService",
    )
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "caikit"}
    assert model["runtime"] == _yaml(SERVING_RUNTIME)["metadata"]["name"]
    assert re.match(r"(pvc|s3|gs)://\S+", model["storageUri"]), model["storageUri"]


# -- the README and the files name the same image --------------------------------------------------


def test_readme_builds_and_runs_the_image_the_manifests_use(container):
    image = container["image"]
    commands = bash_commands(readme_section(CLUSTER_SECTION))
    build = [shlex.split(command) for command in commands if command.startswith("docker build")]
    assert build == [["docker", "build", "-f", "deploy/Dockerfile", "-t", image, "."]]
    (run,) = [command for command in commands if command.startswith("docker run")]
    assert run.rstrip().endswith(image)
    assert f":{CONTAINER_MODELS_DIR}" in run
    for port in configured_ports().values():
        assert f"-p {HOST}:{port}:{port}" in run
    assert f"-t {image} ." in DOCKERFILE.read_text()  # the Dockerfile's own header says the same
    for manifest in (SERVING_RUNTIME, INFERENCE_SERVICE):
        assert f"kubectl apply -f {manifest.relative_to(REPO_ROOT)}" in commands
