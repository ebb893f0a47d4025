"""The HTTP side of the front door: ASGI middleware in front of caikit's FastAPI app.

uvicorn has no body-size limit and caikit's routes read the whole body, so the door reads it
first, up to ``max_http_body_bytes`` (413 beyond), then checks the route against the allowlist,
the JSON against the route's request model in pydantic's strict mode (caikit validates in lax
mode, where ``"0.5"`` and ``true`` are numbers), the model id against ``models/``, and hands the
body it read to caikit. Refusals have caikit's error shape: ``{"details", "code", "id"}``.
"""

# Standard
from dataclasses import dataclass
from typing import Awaitable, Callable, Dict, List, Optional, Tuple
import asyncio
import json
import urllib.parse
import uuid

# Third Party
import grpc
import pydantic

# First Party
from caikit.runtime import names
import alog

# Local
from .front_door import FrontDoor, Kind, Refusal

log = alog.use_channel("CCVDOOR")

TRANSPORT = "HTTP"
BODY_KEY = "caikit_computer_vision.max_http_body_bytes"
# The most of a too-big body the door reads (and drops) before it answers 413.
_DISCARD_BYTES = 256 * 1024 * 1024
_DISCARD_IDLE_S = 1.0
# Served as they are: FastAPI's documents of the API, health and runtime information.
PLAIN_ROUTES = (
    ("GET", names.HEALTH_ENDPOINT),
    ("GET", names.RUNTIME_INFO_ENDPOINT),
    ("GET", names.MODELS_INFO_ENDPOINT),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
)


@dataclass(frozen=True)
class Route:
    kind: Kind
    # The pydantic model caikit validates this route's JSON body with, when it has a body.
    request_model: Optional[type] = None


def http_allowlist(predict_models: Dict[str, type], train_models: Dict[str, type]) -> Dict[Tuple[str, str], Route]:
    """(method, path) -> Route of everything this runtime serves over HTTP; the rest is 404."""
    allowed = {route: Route(Kind.PLAIN) for route in PLAIN_ROUTES}
    allowed.update({("HEAD", path): Route(Kind.PLAIN) for _, path in PLAIN_ROUTES})
    allowed.update({("POST", path): Route(Kind.PREDICT, model) for path, model in predict_models.items()})
    allowed.update({("POST", path): Route(Kind.TRAIN, model) for path, model in train_models.items()})
    allowed[("GET", names.TRAINING_MANAGEMENT_ENDPOINT)] = Route(Kind.TRAINING)
    allowed[("DELETE", names.TRAINING_MANAGEMENT_ENDPOINT)] = Route(Kind.TRAINING)
    allowed[("POST", names.MODEL_MANAGEMENT_ENDPOINT)] = Route(Kind.DEPLOY)
    allowed[("DELETE", names.MODEL_MANAGEMENT_ENDPOINT)] = Route(Kind.UNDEPLOY)
    return allowed


class _Refused(Exception):
    def __init__(self, status: int, content: dict):
        super().__init__(content.get("details"))
        self.status = status
        self.content = content


class HttpFrontDoor:
    """ASGI middleware: ``app.add_middleware(HttpFrontDoor, door=..., allowed=...)``."""

    def __init__(self, app, door: FrontDoor, allowed: Dict[Tuple[str, str], Route]):
        self.app = app
        self.door = door
        self.allowed = allowed

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        what = f"{scope['method']} {scope['path']}"
        try:
            route = self.allowed.get((scope["method"], scope["path"]))
            if route is None:
                raise self._refusal(what, Refusal(
                    grpc.StatusCode.UNIMPLEMENTED, f"{what} is not served by this runtime"
                ))
            self._check(what, self.door.gate_refusal(route.kind, what))
            body = await self._read_body(what, scope, receive)
            self._check(what, self._request_refusal(what, route, scope, body))
        except _Refused as refused:
            if refused.status == 413:
                await _discard_body(receive)
            await _respond(send, refused.status, refused.content)
            return

        replay = _replaying(body, receive)
        if route.kind not in (Kind.PREDICT, Kind.TRAIN):
            await self.app(scope, replay, send)
            return
        await self.door.model_calls.acquire_async()
        try:
            await self.app(scope, replay, send)
        finally:
            self.door.model_calls.release()

    # -- checks -----------------------------------------------------------------------------

    def _request_refusal(self, what: str, route: Route, scope, body: bytes) -> Optional[Refusal]:
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if route.kind is Kind.TRAINING:
            return self.door.training_id_refusal(_single(query.get("training_id")))
        if route.kind is Kind.UNDEPLOY:
            return self.door.id_refusal(_single(query.get("model_id")))
        if route.kind not in (Kind.PREDICT, Kind.TRAIN, Kind.DEPLOY):
            return None
        content = self._json(what, scope, body)
        if route.request_model is not None:
            self._validate_strictly(what, route.request_model, body)
        if route.kind is Kind.PREDICT:
            return self.door.served_model_refusal(content.get(names.MODEL_ID))
        if route.kind is Kind.DEPLOY:
            files = content.get("model_files") or []
            if not isinstance(files, list) or not all(
                isinstance(f, dict) and isinstance(f.get("filename"), str) for f in files
            ):
                return Refusal(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "model_files must be a list of {\"filename\": ..., \"data\": <base64>}",
                )
            return self.door.deploy_refusal(content.get(names.MODEL_ID), [f["filename"] for f in files])
        return None

    def _json(self, what: str, scope, body: bytes) -> dict:
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise self._failed(what, 415, "send the body as JSON (Content-Type: application/json)")
        try:
            content = json.loads(body)
        except ValueError as err:
            raise self._failed(what, 422, f"the body is not valid JSON: {err}")
        if not isinstance(content, dict):
            raise self._failed(what, 422, "the body must be a JSON object")
        return content

    def _validate_strictly(self, what: str, request_model: type, body: bytes) -> None:
        """caikit's own request model, strict: numbers are numbers, booleans are booleans."""
        try:
            request_model.model_validate_json(body, strict=True)
        except pydantic.ValidationError as err:
            errors = err.errors(include_url=False, include_context=False, include_input=False)
            first = errors[0] if errors else {"loc": (), "msg": str(err)}
            where = ".".join(str(part) for part in first["loc"])
            refused = self._failed(what, 422, f"{where}: {first['msg']}")
            refused.content["additional_info"] = errors
            raise refused

    def _failed(self, what: str, status: int, message: str) -> _Refused:
        log.warning("<CCV30941101W>", "refused %s %s: %s", TRANSPORT, what, message)
        return _Refused(status, _error(status, message))

    async def _read_body(self, what: str, scope, receive) -> bytes:
        limit = self.door.limits.max_http_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise self._too_big(what, int(declared))
        chunks: List[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_big(what, size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _too_big(self, what: str, size: int) -> _Refused:
        limit = self.door.limits.max_http_body_bytes
        refusal = Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"request body of {size}+ bytes is over the limit of {limit} ({BODY_KEY})",
        )
        self.door.refused(TRANSPORT, what, refusal)
        return _Refused(413, _error(413, refusal.message))

    def _check(self, what: str, refusal: Optional[Refusal]) -> None:
        if refusal is not None:
            raise self._refusal(what, refusal)

    def _refusal(self, what: str, refusal: Refusal) -> _Refused:
        self.door.refused(TRANSPORT, what, refusal)
        return _Refused(refusal.http_status, _error(refusal.http_status, refusal.message))


async def _discard_body(receive) -> None:
    """Read and drop the rest of a refused body, so that the client, still sending, reads the
    413 instead of a reset connection: at most ``_DISCARD_BYTES``, and only while the client
    keeps sending (a client that waits for the answer first gets it after ``_DISCARD_IDLE_S``)."""
    discarded = 0
    while discarded < _DISCARD_BYTES:
        try:
            message = await asyncio.wait_for(receive(), _DISCARD_IDLE_S)
        except asyncio.TimeoutError:
            return
        discarded += len(message.get("body", b""))
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return


def _single(values: Optional[List[str]]) -> Optional[str]:
    return values[0] if values and len(values) == 1 else None


def _error(status: int, details: str) -> dict:
    return {"details": details, "code": status, "id": uuid.uuid4().hex}


async def _respond(send, status: int, content: dict) -> None:
    body = json.dumps(content).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


def _replaying(body: bytes, receive) -> Callable[[], Awaitable[dict]]:
    """A ``receive`` that hands the app ``body`` once, then waits for the client as before."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
