"""The HTTP door: README.md's curl commands against a live runtime, and protos/openapi.json.

One runtime serves the module, in a working directory laid out as the walkthrough leaves the
repository (walkthrough_runtime.py). The README's commands run through bash as a reader pastes
them; only their addresses change to the runtime's free ports. openapi.json must be valid
OpenAPI, be what the server serves, and describe exactly the request bodies the server takes.
"""

# Standard
from typing import Any, Dict, Iterator, List, Tuple
import base64
import json

# Third Party
from openapi_spec_validator import validate as validate_openapi
from prometheus_client.parser import text_string_to_metric_families
import jsonschema
import pytest

# Local
import common

from .proto_fixtures import dump_protos_once
from .readme_shell import (
    bash_commands,
    configured_ports,
    readme_command,
    readme_output,
    readme_section,
)
from .served_example import TRAIN_ROUTE, wait_for_training, wait_until

HTTP_SECTION = "### The same calls over HTTP"
HEALTH_SECTION = "## Health, models and metrics"
PREDICT_ROUTE = "/api/v1/task/object-detection"

# A valid value for every field of the request schemas, by its path in the JSON body. The
# tests check that the schemas have exactly these fields, so a field added to or dropped from
# the API shows up here.
PREDICT_FIELDS = {
    "model_id": common.BASE_MODEL_ID,
    "inputs": None,  # the query image, base64-encoded: see _fields
    "parameters.threshold": 0.0,
}
TRAIN_FIELDS = {
    "model_name": "schema_model",
    "parameters.model_path": "models/my_model",
    "parameters.train_data.img_dir_path": "train_data/images",
    "parameters.train_data.labels_file": "train_data/labels.txt",
    "parameters.num_epochs": 1,
    "parameters.learning_rate": 0.001,
}
# In the train schema but refused by the runtime, with a message: models are saved to models/.
TRAIN_FIELDS_REFUSED = ("output_path",)


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    return dump_protos_once(tmp_path_factory)


@pytest.fixture(scope="module")
def runtime(walkthrough):
    return walkthrough


@pytest.fixture(scope="module")
def spec(dump) -> Dict[str, Any]:
    return json.loads((dump.protos_dir / "openapi.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def query_base64(runtime) -> str:
    return base64.b64encode((runtime.work_dir / "train_data" / "query.jpg").read_bytes()).decode()




def _fields(route: str, query_base64: str) -> Dict[str, Any]:
    """A valid value for every field of ``route``'s request body, by dotted path."""
    if route == PREDICT_ROUTE:
        return {**PREDICT_FIELDS, "inputs": query_base64}
    return dict(TRAIN_FIELDS)


def _with_components(spec, schema: Dict[str, Any]) -> Dict[str, Any]:
    """``schema`` as a JSON Schema document whose ``#/components/schemas/...`` refs resolve."""
    return {**schema, "components": spec["components"]}


def _request_schema(spec, route: str) -> Dict[str, Any]:
    return spec["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]


def _response_schema(spec, route: str) -> Dict[str, Any]:
    return spec["paths"][route]["post"]["responses"]["200"]["content"]["application/json"]["schema"]


def _resolve(spec, schema: Dict[str, Any]) -> Dict[str, Any]:
    """``schema`` with a top-level ``$ref`` into ``#/components/schemas`` followed."""
    while "$ref" in schema:
        prefix = "#/components/schemas/"
        assert schema["$ref"].startswith(prefix), schema["$ref"]
        schema = spec["components"]["schemas"][schema["$ref"][len(prefix) :]]
    return schema


def _leaf_fields(spec, schema, prefix: str = "") -> Iterator[Tuple[str, Dict[str, Any]]]:
    """(dotted path, schema) of every non-object field under ``schema``."""
    for name, field in _resolve(spec, schema)["properties"].items():
        resolved = _resolve(spec, field)
        if resolved.get("type") == "object" and "properties" in resolved:
            yield from _leaf_fields(spec, resolved, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", resolved


def _object_paths(spec, schema, prefix: str = "") -> Iterator[str]:
    """The dotted path of every object in ``schema`` ("" for the body itself)."""
    yield prefix.rstrip(".")
    for name, field in _resolve(spec, schema)["properties"].items():
        resolved = _resolve(spec, field)
        if resolved.get("type") == "object" and "properties" in resolved:
            yield from _object_paths(spec, resolved, f"{prefix}{name}.")


def _body(fields: Dict[str, Any]) -> Dict[str, Any]:
    """The nested JSON body for dotted ``fields``."""
    body: Dict[str, Any] = {}
    for path, value in fields.items():
        *parents, name = path.split(".")
        node = body
        for parent in parents:
            node = node.setdefault(parent, {})
        node[name] = value
    return body


def _at(body: Dict[str, Any], path: str) -> Dict[str, Any]:
    node = body
    for name in filter(None, path.split(".")):
        node = node[name]
    return node


def _predict_when_served(runtime, model_id: str, inputs: str) -> Dict[str, Any]:
    """The first successful HTTP predict of ``model_id``: a new model answers 404 until the
    runtime's poller has found it in models/."""
    answers = []

    def answered() -> bool:
        answers.append(runtime.http("POST", PREDICT_ROUTE, {"model_id": model_id, "inputs": inputs}))
        return answers[-1][0] != 404

    wait_until(answered, common.SERVABLE_TIMEOUT_S, f"{model_id} served", interval=0.25)
    status, result = answers[-1]
    assert status == 200, result
    return result


# -- the README's commands -------------------------------------------------------------------------


def test_readme_addresses_are_the_configured_ports():
    ports = configured_ports()
    http = bash_commands(readme_section(HTTP_SECTION))
    assert http and all(f"http://{common.HOST}:{ports['http']}/" in command for command in http)
    assert f"http://{common.HOST}:{ports['metrics']}/metrics" in readme_section(HEALTH_SECTION)


def test_readme_predict_curl_returns_detections_of_new_model(runtime, spec):
    command = readme_command(HTTP_SECTION, PREDICT_ROUTE)
    assert "new_model" in command and "base64 -w0 train_data/query.jpg" in command
    result = json.loads(readme_output(runtime, HTTP_SECTION, PREDICT_ROUTE))
    jsonschema.validate(result, _with_components(spec, _response_schema(spec, PREDICT_ROUTE)))
    assert result["producer_id"]["name"] == "Transformers Object Detector"
    for detected in result["detected_objects"]:
        assert detected["label"] in ("cat", "dog")
        assert detected["score"] >= 0.3
        box = detected["box"]
        assert 0 <= box["xmin"] < box["xmax"] <= 64 and 0 <= box["ymin"] < box["ymax"] <= 64


def test_readme_train_curl_trains_a_model_the_runtime_then_serves(runtime, query_base64):
    job = json.loads(readme_output(runtime, HTTP_SECTION, TRAIN_ROUTE))
    assert job["model_name"] == "http_model" and job["training_id"]
    wait_for_training(runtime, job["training_id"], "COMPLETED")
    assert "detected_objects" in _predict_when_served(runtime, "http_model", query_base64)
    _, info = runtime.http("GET", "/info/models")
    served = {model["name"]: model for model in info["models"]}["http_model"]
    assert served["loaded"] is True and served["model_path"] == "models/http_model"


def test_readme_info_models_lists_the_loaded_models(runtime):
    info = json.loads(readme_output(runtime, HTTP_SECTION, "/info/models"))
    models = {model["name"]: model for model in info["models"]}
    assert {"my_model", "new_model"} <= set(models)
    for name in ("my_model", "new_model"):
        assert models[name]["loaded"] is True
        assert models[name]["module_metadata"]["name"] == "Transformers Object Detector"
        assert models[name]["size"] > 0


def test_readme_health_curl_says_ok(runtime):
    assert readme_output(runtime, HTTP_SECTION, "/health").strip() == "OK"


def test_readme_metrics_curl_shows_predictions_counted_per_model(runtime, query_base64):
    def count(model_id: str) -> float:
        _, text = runtime.http("GET", "/metrics", port="metrics")
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "predict_rpc_count_total"
            and sample.labels
            == {"code": "OK", "grpc_request": "ObjectDetectionTaskRequest", "model_id": model_id}
        )

    before = count("new_model")
    for _ in range(2):
        status, _ = runtime.http(
            "POST", PREDICT_ROUTE, {"model_id": "new_model", "inputs": query_base64}
        )
        assert status == 200
    assert count("new_model") == before + 2
    lines = readme_output(runtime, HEALTH_SECTION, "/metrics").splitlines()
    assert any(
        line.startswith("predict_rpc_count_total{") and 'model_id="new_model"' in line
        for line in lines
    ), lines


# -- protos/openapi.json ---------------------------------------------------------------------------


def test_openapi_json_is_a_valid_openapi_document(spec):
    validate_openapi(spec)
    assert spec["openapi"].startswith("3.1")
    assert {PREDICT_ROUTE, TRAIN_ROUTE, "/health", "/info/models"} <= set(spec["paths"])


def test_the_server_serves_the_dumped_document(runtime, spec):
    status, served = runtime.http("GET", "/openapi.json")
    assert status == 200
    assert served == spec


@pytest.mark.parametrize(
    "route, fields", [(PREDICT_ROUTE, PREDICT_FIELDS), (TRAIN_ROUTE, TRAIN_FIELDS)]
)
def test_request_schema_has_exactly_the_known_fields(spec, route, fields):
    refused = TRAIN_FIELDS_REFUSED if route == TRAIN_ROUTE else ()
    documented = {path for path, _ in _leaf_fields(spec, _request_schema(spec, route))}
    assert {path for path in documented if path.split(".")[0] not in refused} == set(fields)
    assert all(any(path.startswith(name) for path in documented) for name in refused)


@pytest.mark.parametrize("route", [PREDICT_ROUTE, TRAIN_ROUTE])
def test_a_body_with_every_documented_field_is_accepted(runtime, spec, query_base64, route):
    body = _body(_fields(route, query_base64))
    jsonschema.validate(body, _with_components(spec, _request_schema(spec, route)))
    status, answer = runtime.http("POST", route, body)
    assert status == 200, answer
    jsonschema.validate(answer, _with_components(spec, _response_schema(spec, route)))
    if route == TRAIN_ROUTE:
        wait_for_training(runtime, answer["training_id"], "COMPLETED")


def test_output_path_is_documented_but_refused_with_its_reason(runtime):
    body = _body({**TRAIN_FIELDS, "model_name": "elsewhere", "output_path.path": "/tmp/x"})
    status, answer = runtime.http("POST", TRAIN_ROUTE, body)
    assert status == 400, answer
    assert "output_path is not supported" in answer["details"]


@pytest.mark.parametrize("route", [PREDICT_ROUTE, TRAIN_ROUTE])
def test_a_field_the_schema_does_not_list_is_refused_with_422(runtime, spec, query_base64, route):
    fields = {**_fields(route, query_base64)}
    if route == TRAIN_ROUTE:
        fields["model_name"] = "never_trained"
    schema = _request_schema(spec, route)
    objects: List[str] = list(_object_paths(spec, schema))
    objects = [path for path in objects if path.split(".")[0] not in TRAIN_FIELDS_REFUSED]
    assert objects, schema
    for path in objects:
        assert (
            _resolve(spec, schema if not path else _field(spec, schema, path))[
                "additionalProperties"
            ]
            is False
        )
        body = _body(fields)
        _at(body, path)["not_in_the_schema"] = 1
        status, answer = runtime.http("POST", route, body)
        assert status == 422, (path, answer)
        assert answer["additional_info"][0]["loc"] == [
            *filter(None, path.split(".")),
            "not_in_the_schema",
        ]
    assert not (runtime.work_dir / "models" / "never_trained").exists()


@pytest.mark.parametrize("route", [PREDICT_ROUTE, TRAIN_ROUTE])
def test_a_value_of_another_type_than_documented_is_refused_with_422(
    runtime, spec, query_base64, route
):
    fields = _fields(route, query_base64)
    if route == TRAIN_ROUTE:
        fields["model_name"] = "never_trained"
    wrong_values = {"number": "high", "integer": "ten", "string": [1]}
    for path, field in _leaf_fields(spec, _request_schema(spec, route)):
        if path not in fields:
            continue
        body = _body({**fields, path: wrong_values[field["type"]]})
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, _with_components(spec, _request_schema(spec, route)))
        status, answer = runtime.http("POST", route, body)
        assert status == 422, (path, answer)
    assert not (runtime.work_dir / "models" / "never_trained").exists()


def _field(spec, schema, path: str) -> Dict[str, Any]:
    for name in path.split("."):
        schema = _resolve(spec, schema)["properties"][name]
    return schema
