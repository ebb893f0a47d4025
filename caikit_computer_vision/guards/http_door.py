"""The HTTP side of the front door: ASGI middleware in front of caikit's FastAPI app.

uvicorn has no body-size limit or timeout and caikit's routes read the whole body, so the door
checks the route against the allowlist, then reads the body first: up to ``max_http_body_bytes``
(413 beyond), within ``http_body_timeout_s`` (408 after), and at most
``max_concurrent_http_bodies`` large ones at once (over ``SMALL_BODY_BYTES`` or of unknown
length: such a request waits for its turn before any of its body is read, and keeps it until it
is answered, so that only that many large bodies are in memory; small bodies are bounded by
``max_concurrent_model_calls``).
Then (on a thread for bodies over 64 KiB, so that the event loop keeps answering health
checks) it checks the JSON against the route's request model in pydantic's strict mode (caikit
validates in lax mode, where ``"0.5"`` and ``true`` are numbers) and the model id against ``models/``, and hands the body it
read to caikit. Refusals have caikit's error shape: ``{"details", "code", "id"}``; one sent
before the whole body was read closes the connection, so that its client cannot keep sending.
The client's path is logged and quoted escaped (``printable``): it is percent-decoded, and may
hold control characters.
"""

# Standard
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
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
from ..batching import serving_client
from ..caikit_workarounds import carry_context_into_default_executor
from ..defaults import LIBRARY_CONFIG_KEY
from .front_door import FrontDoor, Kind, Refusal
from .log_lines import serving_a_client

log = alog.use_channel("CCVDOOR")

TRANSPORT = "HTTP"
BODY_KEY = f"{LIBRARY_CONFIG_KEY}.max_http_body_bytes"
BODY_TIMEOUT_KEY = f"{LIBRARY_CONFIG_KEY}.http_body_timeout_s"
# Where the door leaves the request model it validated, in the request's ASGI scope.
VALIDATED_REQUEST = f"{LIBRARY_CONFIG_KEY}.validated_request"
# Routes whose body is JSON that the door parses and checks.
JSON_KINDS = (Kind.PREDICT, Kind.TRAIN, Kind.DEPLOY)
# How much of a client's text (the path) a log line or an answer quotes.
_PRINTABLE_CHARS = 256
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


def printable(text: str) -> str:
    r"""``text`` as a log line or a message may quote it: with control and other non-printable
    characters escaped as Python escapes them (``\x1b``, ``\r``, ``\n``, ``\x00``, and a
    backslash as ``\\``), cut to a few hundred characters."""
    if not text.isprintable() or "\\" in text:
        text = text.encode("unicode_escape").decode("ascii")
    if len(text) <= _PRINTABLE_CHARS:
        return text
    return f"{text[:_PRINTABLE_CHARS]}... ({len(text)} chars)"


# Bodies up to this size (a photo of a few hundred kB, base64 in JSON) need no large-body slot.
SMALL_BODY_BYTES = 1024 * 1024
# JSON bodies up to this size are checked on the event loop (well under a millisecond); bigger
# ones on a thread, so that the loop keeps answering (health checks).
SMALL_JSON_BYTES = 64 * 1024


class HttpFrontDoor:
    """ASGI middleware: ``app.add_middleware(HttpFrontDoor, door=..., allowed=...)``."""

    def __init__(self, app, door: FrontDoor, allowed: Dict[Tuple[str, str], Route]):
        self.app = app
        self.door = door
        self.allowed = allowed
        slots = door.limits.http_bodies
        self._body_slots = asyncio.Semaphore(slots)
        # Parsing and validating bodies of many MiB on the event loop held it (health checks
        # waited 0.4 s behind four of 32 MiB): on threads instead, one per body slot.
        self._checkers = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="ccv-http-body")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        what = f"{scope['method']} {printable(scope['path'])}"
        route = self.allowed.get((scope["method"], scope["path"]))
        refusal = (
            Refusal(grpc.StatusCode.UNIMPLEMENTED, f"{what} is not served by this runtime")
            if route is None
            else self.door.gate_refusal(route.kind, what)
        )
        if refusal is not None:
            self.door.refused(TRANSPORT, what, refusal)
            status = refusal.http_status
            # Its body is not read: close, or the client could keep sending it.
            await _respond(send, status, _error(status, refusal.message), close=_has_body(scope))
            return
        async with self._body_slots if _has_large_body(scope) else nullcontext():
            await self._serve(what, route, scope, receive, send)

    async def _serve(self, what: str, route: Route, scope, receive, send) -> None:
        """Read and check the body, then hand the request to caikit."""
        try:
            body = await self._read_body(what, scope, receive)
            if route.kind in JSON_KINDS and len(body) > SMALL_JSON_BYTES:
                refusal = await asyncio.get_running_loop().run_in_executor(
                    self._checkers, self._request_refusal, what, route, scope, body
                )
            else:
                refusal = self._request_refusal(what, route, scope, body)
            self._check(what, refusal)
        except _Refused as refused:
            if refused.status == 413:
                await _discard_body(receive, self.door.limits.http_body_timeout_s)
            # A body not read to its end: close, or the client could keep sending it.
            await _respond(send, refused.status, refused.content, close=refused.status in (408, 413))
            return

        carry_context_into_default_executor()
        if route.kind not in (Kind.PREDICT, Kind.TRAIN):
            with serving_a_client():
                await self.app(scope, _replaying(body, receive), send)
            return
        await self.door.model_calls.acquire_async()
        watch = _DisconnectWatch(receive) if route.kind is Kind.PREDICT else None
        try:
            with serving_a_client(), serving_client(watch.client_waits if watch else _always):
                await self.app(scope, _replaying(body, watch.receive if watch else receive), send)
        finally:
            if watch:
                watch.close()
            self.door.model_calls.release()

    # -- checks -----------------------------------------------------------------------------

    def _request_refusal(self, what: str, route: Route, scope, body: bytes) -> Optional[Refusal]:
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if route.kind is Kind.TRAINING:
            return self.door.training_id_refusal(_single(query.get("training_id")))
        if route.kind is Kind.UNDEPLOY:
            return self.door.id_refusal(_single(query.get("model_id")))
        if route.kind not in JSON_KINDS:
            return None
        self._check_content_type(what, scope)
        if route.request_model is not None:
            # caikit's route takes this instead of parsing the body again on the event loop
            # (caikit_workarounds.py ``take_validated_http_requests``).
            request = scope[VALIDATED_REQUEST] = self._validate_strictly(
                what, route.request_model, body
            )
            if route.kind is Kind.PREDICT:
                return self.door.served_model_refusal(getattr(request, names.MODEL_ID, None))
            return None
        content = self._json(what, body)
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

    def _check_content_type(self, what: str, scope) -> None:
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise self._failed(what, 415, "send the body as JSON (Content-Type: application/json)")

    def _json(self, what: str, body: bytes) -> dict:
        try:
            content = json.loads(body)
        except ValueError as err:
            raise self._failed(what, 422, f"the body is not valid JSON: {err}")
        except RecursionError:
            raise self._failed(what, 422, "the body is not valid JSON: it is nested too deeply")
        if not isinstance(content, dict):
            raise self._failed(what, 422, "the body must be a JSON object")
        return content

    def _validate_strictly(self, what: str, request_model: type, body: bytes) -> pydantic.BaseModel:
        """caikit's own request model, strict: numbers are numbers, booleans are booleans. Not
        JSON, or nested deeper than pydantic parses, is "Invalid JSON: ..."."""
        try:
            return request_model.model_validate_json(body, strict=True)
        except pydantic.ValidationError as err:
            errors = err.errors(include_url=False, include_context=False, include_input=False)
            first = errors[0] if errors else {"loc": (), "msg": str(err)}
            where = ".".join(str(part) for part in first["loc"])
            refused = self._failed(what, 422, f"{where}: {first['msg']}" if where else first["msg"])
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
        timeout_s = self.door.limits.http_body_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        chunks: List[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise self._failed(
                    what,
                    408,
                    f"the request body did not arrive within {timeout_s} s ({BODY_TIMEOUT_KEY}): "
                    "send it at once, or a smaller one",
                )
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


async def _discard_body(receive, timeout_s: float) -> None:
    """Read and drop the rest of a refused body, so that the client, still sending, reads the
    413 instead of a reset connection: at most ``_DISCARD_BYTES`` within ``timeout_s``, and only
    while the client keeps sending (a client that waits for the answer first gets it after
    ``_DISCARD_IDLE_S``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    discarded = 0
    while discarded < _DISCARD_BYTES:
        wait_s = min(_DISCARD_IDLE_S, deadline - loop.time())
        try:
            message = await asyncio.wait_for(receive(), max(0.0, wait_s))
        except asyncio.TimeoutError:
            return
        discarded += len(message.get("body", b""))
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return


def _single(values: Optional[List[str]]) -> Optional[str]:
    return values[0] if values and len(values) == 1 else None


def _error(status: int, details: str) -> dict:
    return {"details": details, "code": status, "id": uuid.uuid4().hex}


def _has_body(scope) -> bool:
    headers = dict(scope["headers"])
    return b"transfer-encoding" in headers or headers.get(b"content-length", b"0") != b"0"


def _has_large_body(scope) -> bool:
    """A body over ``SMALL_BODY_BYTES``, or one whose length is not declared."""
    headers = dict(scope["headers"])
    if b"transfer-encoding" in headers:
        return True
    length = headers.get(b"content-length", b"0")
    return not length.isdigit() or int(length) > SMALL_BODY_BYTES


async def _respond(send, status: int, content: dict, close: bool = False) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _always() -> bool:
    return True


class _DisconnectWatch:
    """Whether a predict's client is still there, for the batcher (batching.py).

    With the body read, the client's next ASGI message is ``http.disconnect`` when it goes away;
    one task waits for it from the start, and the app's own later ``receive`` gets that message.
    """

    def __init__(self, receive):
        self._next = asyncio.ensure_future(receive())

    def client_waits(self) -> bool:
        """False once the client has gone; called from the thread running the prediction."""
        done = self._next.done() and not self._next.cancelled()
        return not (done and self._next.exception() is None and
                    self._next.result().get("type") == "http.disconnect")

    async def receive(self) -> dict:
        return await asyncio.shield(self._next)

    def close(self) -> None:
        if self._next.done() and not self._next.cancelled():
            self._next.exception()  # retrieved: no "never retrieved" line in the log
        self._next.cancel()


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
