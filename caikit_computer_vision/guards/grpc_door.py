"""The gRPC side of the front door: a server interceptor in front of every caikit servicer.

The decision is made in ``intercept_service`` from the method name and the metadata (on gRPC's
own thread, before the call takes one of the server's threads for its work); checks that need
the request message (model deployment) run first thing in the call. A refused call ends with
its status without reaching caikit's servicers or the Prometheus interceptor behind us, and
without waiting for its request message.

grpc-python's sync server hands a unary call a pool thread *before* its request message has
arrived, and that thread waits for the message for as long as the client likes: 32 calls that
never send one held every thread of the pool, so that no predict or health check was answered.
So every call that takes a request message is served here as a request-streaming call, which
lets the door read the message itself: at most ``max_calls_awaiting_request`` calls wait for
their message at once (a new call makes room by cancelling the one that has waited longest), and
none waits longer than ``request_message_timeout_s`` (``AwaitingRequests``). A message that does not parse
is INVALID_ARGUMENT, not grpc's INTERNAL with a traceback in the log.
"""

# Standard
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple
import threading
import time

# Third Party
from google.protobuf.message import DecodeError
import grpc

# Local
from ..batching import serving_client
from ..defaults import LIBRARY_CONFIG_KEY
from .front_door import FrontDoor, Kind, Refusal, quote
from .log_lines import serving_a_client

MODEL_ID_METADATA = "mm-model-id"
TRANSPORT = "gRPC"
# Statuses that say the client must change its request (not that the server failed).
CLIENT_FAULTS = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})
# How often the reaper looks for calls past their request-message deadline.
REAP_PERIOD_S = 0.25
AWAITING_KEY = f"{LIBRARY_CONFIG_KEY}.max_calls_awaiting_request"
TIMEOUT_KEY = f"{LIBRARY_CONFIG_KEY}.request_message_timeout_s"


class GrpcFrontDoor(grpc.ServerInterceptor):
    """Allowlist, model ids, model deployment, the model-call limit, the stream limit, and the
    bound on calls waiting for their request message."""

    def __init__(self, door: FrontDoor):
        self.door = door
        # Set by ``serve`` once caikit has built its services (before the server starts).
        self.allowed: Dict[str, Kind] = {}
        self.awaiting = AwaitingRequests(
            door.limits.max_calls_awaiting_request, door.limits.request_message_timeout_s
        )

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED itself
            return None
        refusal = self._call_refusal(method, handler_call_details)
        if refusal is not None:
            return _refusing(handler, self._refused(method, refusal))
        if handler.request_streaming:  # reflection: bounded by the stream limit
            return self._guarded(method, handler)
        if not self.awaiting.try_reserve():
            return _refusing(handler, self._refused(method, Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.awaiting.limit} calls are waiting for their request message already "
                f"({AWAITING_KEY}); send the request message with the call and retry",
            )))
        return self._reading_request(method, self._guarded(method, handler))

    def _call_refusal(self, method: str, handler_call_details) -> Optional[Refusal]:
        """What the method name and the metadata alone are enough to refuse."""
        kind = self.allowed.get(method)
        if kind is None:
            return Refusal(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served by this runtime")
        refusal = self.door.gate_refusal(kind, method.rsplit("/", 1)[-1])
        if refusal is None and kind is Kind.PREDICT:
            metadata = dict(handler_call_details.invocation_metadata or ())
            refusal = self.door.served_model_refusal(metadata.get(MODEL_ID_METADATA))
        return refusal

    def _guarded(self, method: str, handler):
        """``handler`` with the checks and limits of its kind around its behavior."""
        kind = self.allowed[method]
        if kind in (Kind.PREDICT, Kind.TRAIN, Kind.TRAINING):
            handler = _wrapped(handler, self._reporting_client_faults(method))
        if kind in (Kind.PREDICT, Kind.TRAIN):
            return _wrapped(handler, self._under_model_call_limit)
        if kind is Kind.TRAINING:
            return _wrapped(handler, self._checking(method, lambda r: self.door.training_id_refusal(r.training_id)))
        if kind is Kind.DEPLOY:
            return _wrapped(handler, self._checking(method, lambda r: self.door.deploy_refusal(
                r.model_id, [f.filename for f in r.model_files]
            )))
        if kind is Kind.UNDEPLOY:
            return _wrapped(handler, self._checking(method, lambda r: self.door.id_refusal(r.model_id)))
        if kind is Kind.MODEL_RUNTIME:
            name = method.rsplit("/", 1)[-1]
            return _wrapped(handler, self._checking(method, lambda r: self.door.model_runtime_refusal(name, r)))
        if handler.request_streaming or handler.response_streaming:
            return _wrapped(handler, self._under_stream_limit(method))
        return handler

    def _refused(self, method: str, refusal: Refusal) -> Refusal:
        return self.door.refused(TRANSPORT, method, refusal)

    def _reading_request(self, method: str, handler):
        """``handler`` (unary request) served as request-streaming: the door reads the message.

        The message wait is the only part of a call that a client controls before any check
        has seen the request; reading it here bounds it (``AwaitingRequests``) and turns a
        message that does not parse into INVALID_ARGUMENT. The wrapped behavior then gets the
        message exactly as grpc would have passed it.
        """
        behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary

        def request_of(request_iterator, context):
            request, problem = self.awaiting.first_message(request_iterator, context)
            if problem is not None:
                self._refused(method, problem)
                context.abort(problem.code, problem.message)
            if isinstance(request, _Malformed):
                refusal = self._refused(method, Refusal(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the request is not a valid {request.message_name} message ({request.error})",
                ))
                context.abort(refusal.code, refusal.message)
            return request

        deserializer = _tolerant(handler.request_deserializer)
        if handler.response_streaming:

            def stream_behave(request_iterator, context):
                yield from behavior(request_of(request_iterator, context), context)

            return handler._replace(
                request_streaming=True, unary_stream=None, stream_stream=stream_behave,
                request_deserializer=deserializer,
            )

        def behave(request_iterator, context):
            return behavior(request_of(request_iterator, context), context)

        return handler._replace(
            request_streaming=True, unary_unary=None, stream_unary=behave,
            request_deserializer=deserializer,
        )

    def _reporting_client_faults(self, method: str):
        """One WARN line when caikit ends a call with a status that blames the client.

        caikit's servicers log each such error three times at WARN and the module's input check
        once more at ERROR; ``log_lines`` drops those lines while the call is served, and this
        is the one line left, as the door's own refusals have.
        """

        def wrap(behavior):
            def behave(request, context):
                try:
                    with serving_a_client():
                        return behavior(request, context)
                except Exception:
                    code = context.code()
                    if code in CLIENT_FAULTS:
                        details = context.details() or b""
                        if isinstance(details, bytes):
                            details = details.decode("utf-8", "replace")
                        self._refused(method, Refusal(code, details))
                    raise

            return behave

        return wrap

    def _under_model_call_limit(self, behavior):
        def behave(request, context):
            # The batcher drops a request whose client went away (batching.py).
            with self.door.model_calls.held(), serving_client(context.is_active):
                return behavior(request, context)

        return behave

    def _checking(self, method: str, check: Callable[[object], Optional[Refusal]]):
        def wrap(behavior):
            def behave(request, context):
                refusal = check(request)
                if refusal is not None:
                    self._refused(method, refusal)
                    context.abort(refusal.code, refusal.message)
                return behavior(request, context)

            return behave

        return wrap

    def _under_stream_limit(self, method: str):
        limit_key = f"{LIBRARY_CONFIG_KEY}.max_open_streams"

        def wrap(behavior):
            def behave(request_or_iterator, context):
                if not self.door.streams.try_open():
                    refusal = self._refused(method, Refusal(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{self.door.streams.limit} streams are open already ({limit_key}); "
                        "close one and retry",
                    ))
                    context.abort(refusal.code, refusal.message)
                try:
                    yield from behavior(request_or_iterator, context)
                finally:
                    self.door.streams.close()

            return behave

        return wrap


@dataclass(eq=False)
class _Wait:
    """One call waiting for its request message."""

    context: grpc.ServicerContext
    deadline: float
    ended_by: Optional[str] = None  # "timeout" or "eviction" when the door cancelled the call


class AwaitingRequests:
    """Calls that hold a server thread while they wait for their request message.

    grpc-python gives a call its pool thread before the message arrives. A client's message
    arrives within milliseconds of its call, a hostile client's never, so the door keeps at most
    ``limit`` calls waiting: when a new call comes and ``limit`` already wait, the one that has
    waited longest is cancelled (``ServicerContext.cancel`` wakes the thread that waits for it)
    and the new one goes in; nothing waits longer than ``timeout_s`` (one reaper thread cancels
    it). So idle calls, on one connection or many, never take the threads that predictions and
    health checks need, and a good call is never refused because of them. ``try_reserve`` runs
    on gRPC's own thread, before the call takes a pool thread; a message that arrives in time
    costs two dictionary operations.
    """

    def __init__(self, limit: int, timeout_s: float):
        self.limit = limit
        self.timeout_s = timeout_s
        self._reserved = 0
        self._lock = threading.Lock()
        # Insertion order is deadline order (one timeout for all): the first waited longest.
        self._waits: "OrderedDict[_Wait, None]" = OrderedDict()
        self._reaper: Optional[threading.Thread] = None

    def try_reserve(self) -> bool:
        """Count a new call as waiting for its message, cancelling the longest wait if needed.

        False only when ``limit`` calls are reserved and none of them has started waiting yet
        (so none can be cancelled): the new call is refused.
        """
        victim = None
        with self._lock:
            if self._reserved >= self.limit:
                # Every wait still listed is uncancelled: a cancelled one leaves the list.
                victim = next(iter(self._waits), None)
                if victim is None:
                    return False
                victim.ended_by = "eviction"
                del self._waits[victim]
            self._reserved += 1
        if victim is not None:
            victim.context.cancel()
        return True

    def first_message(self, request_iterator, context) -> Tuple[object, Optional[Refusal]]:
        """(the call's request message, None), or (None, why the call ends without one).

        Releases the reservation ``try_reserve`` made for this call, whatever happens.
        """
        wait = _Wait(context, time.monotonic() + self.timeout_s)
        with self._lock:
            self._waits[wait] = None
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="ccv-request-reaper", daemon=True)
                self._reaper.start()
        try:
            request = next(request_iterator, None)
        except grpc.RpcError:  # the client cancelled or went away
            request = None
        finally:
            with self._lock:
                self._waits.pop(wait, None)
                self._reserved -= 1
        if request is not None and wait.ended_by is None:
            return request, None
        if wait.ended_by == "timeout":
            return None, Refusal(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no request message within {self.timeout_s:g} s ({TIMEOUT_KEY}); "
                "the call was cancelled",
            )
        if wait.ended_by == "eviction":
            return None, Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"no request message while {self.limit} newer calls waited for theirs "
                f"({AWAITING_KEY}); the call was cancelled",
            )
        return None, Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            "the call ended without its request message: a unary call takes exactly one",
        )

    def _reap(self) -> None:
        """Every ``REAP_PERIOD_S``, cancel the calls whose deadline has passed.

        A period, not a wake-up per call: waking this thread for each call's deadline cost the
        GIL hand-offs of a thread switch per predict (8 clients on 2 cores: 15 % fewer answers).
        """
        while True:
            time.sleep(min(REAP_PERIOD_S, self.timeout_s))
            now, expired = time.monotonic(), []
            with self._lock:
                for wait in self._waits:
                    if wait.deadline > now:
                        break
                    expired.append(wait)
                for wait in expired:
                    wait.ended_by = "timeout"
                    del self._waits[wait]
            for wait in expired:
                wait.context.cancel()


@dataclass(frozen=True)
class _Malformed:
    """What the door's deserializer returns for bytes that are not the request message."""

    message_name: str
    error: str


def _tolerant(deserializer):
    """``deserializer`` that returns ``_Malformed`` instead of raising.

    grpc answers a deserializer's exception with INTERNAL and logs a traceback; the client sent
    the bytes, so the door answers INVALID_ARGUMENT in one log line instead.
    """
    if deserializer is None:
        return None
    message_name = getattr(getattr(deserializer, "__self__", None), "__name__", "request")

    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except (DecodeError, RecursionError, ValueError, UnicodeDecodeError) as err:
            return _Malformed(message_name, quote(str(err).splitlines()[0] if str(err) else type(err).__name__))

    return deserialize


def _behavior_field(handler) -> str:
    if handler.request_streaming:
        return "stream_stream" if handler.response_streaming else "stream_unary"
    return "unary_stream" if handler.response_streaming else "unary_unary"


def _wrapped(handler, wrap):
    """``handler`` with its behavior passed through ``wrap``; the message types are kept."""
    field = _behavior_field(handler)
    return handler._replace(**{field: wrap(getattr(handler, field))})


def _refusing(handler, refusal: Refusal):
    """A handler of ``handler``'s response shape that ends the call with ``refusal`` at once.

    Request-streaming whatever the method's shape: grpc then runs it without waiting for a
    request message, so a refused call never holds a server thread for a client that sends
    nothing.
    """

    def refuse(_request_iterator, context):
        context.abort(refusal.code, refusal.message)

    behaviors = dict.fromkeys(("unary_unary", "unary_stream", "stream_unary", "stream_stream"))
    behaviors["stream_stream" if handler.response_streaming else "stream_unary"] = refuse
    return handler._replace(
        request_streaming=True, request_deserializer=None, response_serializer=None, **behaviors
    )
