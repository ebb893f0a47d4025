"""No client reaches outside models/ and train_data/, and deployment is off by default.

One runtime with the example's config (deployment disabled) and one with deployment enabled,
both on free loopback ports in temporary directories; every refusal is checked on the status
code and on the file system afterwards.
"""

# Standard
import base64
import os
import pathlib
import shutil

# Third Party
import grpc
import pytest

# First Party
from caikit.interfaces.common.data_model import File
from caikit.interfaces.runtime.data_model import DeployModelRequest, UndeployModelRequest

# Local
from common import HOST
from example_tools.runtime_harness import predict_callable, start_example_runtime
from example_tools.synthetic_data import render_example

from .served_example import (
    ENDLESS_EPOCHS,
    TRAIN_ROUTE,
    cancel_training,
    train_body,
    wait_for_training,
)

IMAGE, _ = render_example("cat")
MODEL_MANAGEMENT = "/caikit.runtime.models.ModelManagement"


def _tree(path: pathlib.Path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))



@pytest.fixture(scope="module")
def outside(tmp_path_factory, saved_model_dir):
    """A valid model and a copy of the training data outside the runtime's directories."""
    root = tmp_path_factory.mktemp("outside")
    shutil.copytree(saved_model_dir, root / "stolen_model")
    return root


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, saved_model_dir, outside):
    work_dir = tmp_path_factory.mktemp("guarded")
    models = work_dir / "models"
    models.mkdir()
    # A corrupt model and a leftover of a save interrupted by SIGKILL: both must be skipped.
    (models / "broken").mkdir()
    (models / "broken" / "config.yml").write_text("module_id: [not, a, module")
    (models / ".new_model.staging-abc123").mkdir()
    (models / ".new_model.staging-abc123" / "config.yml").write_text("half")
    # A symlink inside models/ to a model outside it.
    os.symlink(outside / "stolen_model", models / "linked_model")
    runtime = start_example_runtime(work_dir, saved_model_dir)
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def predict(runtime):
    with grpc.insecure_channel(f"{HOST}:{runtime.ports['grpc']}") as channel:
        yield predict_callable(channel)


def test_corrupt_model_and_leftovers_do_not_stop_the_runtime(runtime, predict):
    assert predict(IMAGE, 0.0).detected_objects
    assert not (runtime.work_dir / "models" / ".new_model.staging-abc123").exists()
    assert "Removed" in runtime.log() and ".new_model.staging-abc123" in runtime.log()
    with pytest.raises(grpc.RpcError) as raised:
        predict(IMAGE, model_id="broken")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "model_id",
    ["ABSOLUTE", "../outside/stolen_model", "../../etc", "linked_model", "nope", "my_model/..", ".."],
)
def test_model_ids_never_load_anything_outside_models(runtime, predict, outside, model_id):
    if model_id == "ABSOLUTE":
        model_id = str(outside / "stolen_model")
    elif model_id.startswith("../outside"):
        model_id = os.path.relpath(outside / "stolen_model", runtime.work_dir / "models")
    with pytest.raises(grpc.RpcError) as raised:
        predict(IMAGE, model_id=model_id)
    # Not a plain name of a model directory directly inside models/ (front_door.py).
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND, raised.value.details()
    listed = runtime.http_json("/info/models")["models"]
    # caikit lists a model directory that failed to load (linked_model) with loaded: false.
    assert model_id not in [model["name"] for model in listed if model["loaded"]]
    assert all(not m["name"].startswith(("/", ".")) and "/" not in m["name"] for m in listed)


@pytest.mark.parametrize(
    "body, field",
    [
        (train_body(model_name="a/b"), "model_name"),
        (train_body(model_name="../escaped"), "model_name"),
        (train_body(model_name=""), "model_name"),
        (train_body(model_name="my_model"), "already exists"),
        (train_body(model_path="ABSOLUTE"), "model_path"),
        (train_body(model_path="models/../models/../../x"), "model_path"),
        (train_body(model_path="train_data"), "model_path"),
        (train_body(img_dir="ABSOLUTE"), "train_data.img_dir_path"),
        (train_body(labels="/etc/passwd"), "train_data.labels_file"),
        (train_body(labels="train_data/../../labels.txt"), "train_data.labels_file"),
        (train_body(num_epochs=0), "num_epochs"),
    ],
    ids=[
        "slash", "dotdot-name", "empty-name", "existing-name", "abs-model", "dotdot-model",
        "not-a-model-dir", "abs-images", "abs-labels", "dotdot-labels", "zero-epochs",
    ],
)
def test_bad_train_requests_are_refused_before_any_work(runtime, outside, body, field):
    params = body["parameters"]
    if params["model_path"] == "ABSOLUTE":
        params["model_path"] = str(outside / "stolen_model")
    if params["train_data"]["img_dir_path"] == "ABSOLUTE":
        params["train_data"]["img_dir_path"] = str(outside)
    before = _tree(runtime.work_dir / "models"), _tree(outside)
    status, answer = runtime.http("POST", TRAIN_ROUTE, body)
    assert status == 400, answer
    assert field in answer["details"]
    assert (_tree(runtime.work_dir / "models"), _tree(outside)) == before


def test_a_model_name_inside_the_output_dir_name_still_gets_its_own_directory(runtime, predict):
    """caikit appends model_name only when it is not a substring of the output dir ("models")."""
    status, job = runtime.http("POST", TRAIN_ROUTE, train_body(model_name="model"))
    assert status == 200, job
    wait_for_training(runtime, job["training_id"], "COMPLETED")
    assert (runtime.work_dir / "models" / "model" / "config.yml").is_file()
    assert predict(IMAGE, 0.0).detected_objects  # my_model is intact


def _grpc_management(runtime, method: str, request):
    with grpc.insecure_channel(f"{HOST}:{runtime.ports['grpc']}") as channel:
        call = channel.unary_unary(
            f"{MODEL_MANAGEMENT}/{method}",
            request_serializer=lambda message: message.to_proto().SerializeToString(),
            response_deserializer=lambda raw: raw,
        )
        return call(request, timeout=30)


def _model_files(saved_model_dir: pathlib.Path, prefix: str = ""):
    return [
        File(filename=prefix + str(path.relative_to(saved_model_dir)), data=path.read_bytes())
        for path in sorted(saved_model_dir.rglob("*"))
        if path.is_file()
    ]


def test_deploy_and_undeploy_are_refused_by_default(runtime, saved_model_dir):
    before = _tree(runtime.work_dir)
    with pytest.raises(grpc.RpcError) as raised:
        _grpc_management(
            runtime, "DeployModel",
            DeployModelRequest(model_id="uploaded", model_files=_model_files(saved_model_dir)),
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "allow_model_deployment" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        _grpc_management(runtime, "UndeployModel", UndeployModelRequest(model_id="my_model"))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED

    files = [{"filename": "config.yml", "data": base64.b64encode(b"x").decode()}]
    status, _ = runtime.http("POST", "/management/models", {"model_id": "../x", "model_files": files})
    assert status == 403
    status, _ = runtime.http("DELETE", "/management/models?model_id=my_model")
    assert status == 403
    assert _tree(runtime.work_dir) == before


@pytest.fixture(scope="module")
def deploying_runtime(tmp_path_factory, saved_model_dir):
    work_dir = tmp_path_factory.mktemp("deploying")
    runtime = start_example_runtime(
        work_dir, saved_model_dir,
        extra_env={
            "CAIKIT_COMPUTER_VISION_ALLOW_MODEL_DEPLOYMENT": "true",
            # As deploy/modelmesh/servingruntime.yaml: the model-management calls decide what is
            # loaded. With the poller on, it races them: it may unload a model that loadModel
            # just loaded from models/<id>/<name>, which is not itself a model directory.
            "RUNTIME_LAZY_LOAD_LOCAL_MODELS": "false",
        },
    )
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.mark.parametrize(
    "model_id, prefix",
    [("../escaped", ""), ("/tmp/escaped", ""), ("a/b", ""), ("fine", "../../"), ("fine", "/tmp/")],
)
def test_enabled_deployment_stays_inside_models(deploying_runtime, saved_model_dir, model_id, prefix):
    root = deploying_runtime.work_dir
    before = _tree(root), _tree(root.parent)
    files = _model_files(saved_model_dir, prefix)
    with pytest.raises(grpc.RpcError) as raised:
        _grpc_management(
            deploying_runtime, "DeployModel", DeployModelRequest(model_id=model_id, model_files=files)
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    http_files = [
        {"filename": f.filename, "data": base64.b64encode(f.data).decode()} for f in files
    ]
    status, _ = deploying_runtime.http("POST", "/management/models",
        {"model_id": model_id, "model_files": http_files},
    )
    assert status == 400
    assert (_tree(root), _tree(root.parent)) == before


def test_enabled_deployment_deploys_and_undeploys_inside_models(deploying_runtime, saved_model_dir):
    root = deploying_runtime.work_dir
    _grpc_management(
        deploying_runtime, "DeployModel",
        DeployModelRequest(model_id="uploaded", model_files=_model_files(saved_model_dir)),
    )
    assert (root / "models" / "uploaded" / "config.yml").is_file()
    with grpc.insecure_channel(f"{HOST}:{deploying_runtime.ports['grpc']}") as channel:
        assert predict_callable(channel)(IMAGE, 0.0, model_id="uploaded").detected_objects
    status, _ = deploying_runtime.http("DELETE", "/management/models?model_id=../models/uploaded")
    assert status == 400
    assert (root / "models" / "uploaded").is_dir()
    status, _ = deploying_runtime.http("DELETE", "/management/models?model_id=uploaded")
    assert status == 200
    assert not (root / "models" / "uploaded").exists()


# -- mmesh.ModelRuntime, driven as ModelMesh drives it (deployment enabled) -----------------------

MODEL_RUNTIME = "/mmesh.ModelRuntime"
# A ModelMesh model id: the InferenceService's name and a suffix.
MESH_MODEL_ID = "mesh-model__isvc-5f2a"


def _model_runtime(runtime, method: str, request):
    # First Party
    from caikit.runtime.protobufs import model_runtime_pb2

    response_class = getattr(model_runtime_pb2, f"{method[0].upper()}{method[1:]}Response")
    with grpc.insecure_channel(f"{HOST}:{runtime.ports['grpc']}") as channel:
        call = channel.unary_unary(
            f"{MODEL_RUNTIME}/{method}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        return call(request, timeout=60)


def _model_runtime_status(runtime, method: str, request) -> grpc.StatusCode:
    try:
        _model_runtime(runtime, method, request)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_modelmesh_loads_sizes_serves_and_unloads_a_pulled_model(deploying_runtime, saved_model_dir):
    """As ModelMesh's puller lays it out: models/<model id>/<last part of the storage path>."""
    # First Party
    from caikit.runtime.protobufs import model_runtime_pb2 as mr

    pulled = deploying_runtime.work_dir / "models" / MESH_MODEL_ID / "new_model"
    shutil.copytree(saved_model_dir, pulled)
    status = _model_runtime(deploying_runtime, "runtimeStatus", mr.RuntimeStatusRequest())
    assert status.status == mr.RuntimeStatusResponse.READY
    predicted = _model_runtime(deploying_runtime, "predictModelSize", mr.PredictModelSizeRequest(
        modelId=MESH_MODEL_ID, modelPath=str(pulled), modelType="caikit"
    ))
    assert predicted.sizeInBytes > 0
    loaded = _model_runtime(deploying_runtime, "loadModel", mr.LoadModelRequest(
        modelId=MESH_MODEL_ID, modelPath=str(pulled), modelType="caikit",
        modelKey='{"model_type": {"name": "caikit"}}',
    ))
    assert loaded.sizeInBytes > 0
    sized = _model_runtime(deploying_runtime, "modelSize", mr.ModelSizeRequest(modelId=MESH_MODEL_ID))
    assert sized.sizeInBytes == loaded.sizeInBytes
    with grpc.insecure_channel(f"{HOST}:{deploying_runtime.ports['grpc']}") as channel:
        assert predict_callable(channel)(IMAGE, 0.0, model_id=MESH_MODEL_ID).detected_objects
    _model_runtime(deploying_runtime, "unloadModel", mr.UnloadModelRequest(modelId=MESH_MODEL_ID))
    listed = deploying_runtime.http_json("/info/models")["models"]
    assert MESH_MODEL_ID not in [model["name"] for model in listed if model["loaded"]]


@pytest.mark.parametrize(
    "method, fields, code",
    [
        ("predictModelSize", {"modelId": "x", "modelPath": "/etc"}, "INVALID_ARGUMENT"),
        ("predictModelSize", {"modelId": "x", "modelPath": "/root"}, "INVALID_ARGUMENT"),
        ("loadModel", {"modelId": "other", "modelPath": "models/my_model"}, "INVALID_ARGUMENT"),
        ("loadModel", {"modelId": "my_model", "modelPath": "models/my_model/../../.."}, "INVALID_ARGUMENT"),
        ("loadModel", {"modelId": "../x", "modelPath": "models/../x"}, "INVALID_ARGUMENT"),
        ("loadModel", {"modelId": "absent", "modelPath": "models/absent"}, "NOT_FOUND"),
        ("unloadModel", {"modelId": "/etc/passwd"}, "INVALID_ARGUMENT"),
        ("modelSize", {"modelId": "m" * 300}, "INVALID_ARGUMENT"),
    ],
)
def test_modelmesh_calls_stay_inside_models(deploying_runtime, method, fields, code):
    # First Party
    from caikit.runtime.protobufs import model_runtime_pb2 as mr

    request = getattr(mr, f"{method[0].upper()}{method[1:]}Request")(**fields)
    before = _tree(deploying_runtime.work_dir)
    assert _model_runtime_status(deploying_runtime, method, request) == getattr(grpc.StatusCode, code)
    assert _tree(deploying_runtime.work_dir) == before
    with grpc.insecure_channel(f"{HOST}:{deploying_runtime.ports['grpc']}") as channel:
        assert predict_callable(channel)(IMAGE, 0.0).detected_objects  # my_model still served


def test_a_name_being_trained_cannot_be_loaded_or_deployed(deploying_runtime, saved_model_dir):
    # First Party
    from caikit.runtime.protobufs import model_runtime_pb2 as mr

    status, job = deploying_runtime.http(
        "POST", TRAIN_ROUTE, train_body(model_name="squatted", num_epochs=ENDLESS_EPOCHS)
    )
    assert status == 200, job
    try:
        request = mr.LoadModelRequest(modelId="squatted", modelPath="models/squatted")
        assert _model_runtime_status(deploying_runtime, "loadModel", request) == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(grpc.RpcError) as raised:
            _grpc_management(
                deploying_runtime, "DeployModel",
                DeployModelRequest(model_id="squatted", model_files=_model_files(saved_model_dir)),
            )
        assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert not (deploying_runtime.work_dir / "models" / "squatted").exists()
    finally:
        cancel_training(deploying_runtime, job["training_id"])
