"""The gRPC side of the front door: a server interceptor in front of every caikit servicer.

The decision is made in ``intercept_service`` from the method name and the metadata (on gRPC's
own thread, before the call takes one of the server's threads for its work); checks that need
the request message (model deployment) run first thing in the call. A refused call ends with
its status without reaching caikit's servicers or the Prometheus interceptor behind us.
"""

# Standard
from typing import Callable, Dict, Optional

# Third Party
import grpc

# Local
from .front_door import FrontDoor, Kind, Refusal

MODEL_ID_METADATA = "mm-model-id"
TRANSPORT = "gRPC"


class GrpcFrontDoor(grpc.ServerInterceptor):
    """Allowlist, model ids, model deployment, the model-call limit and the stream limit."""

    def __init__(self, door: FrontDoor):
        self.door = door
        # Set by ``serve`` once caikit has built its services (before the server starts).
        self.allowed: Dict[str, Kind] = {}

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED itself
            return None
        kind = self.allowed.get(method)
        if kind is None:
            return _refusing(handler, self._refused(method, Refusal(
                grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served by this runtime"
            )))
        refusal = self.door.gate_refusal(kind, method.rsplit("/", 1)[-1])
        if refusal is None and kind is Kind.PREDICT:
            metadata = dict(handler_call_details.invocation_metadata or ())
            refusal = self.door.served_model_refusal(metadata.get(MODEL_ID_METADATA))
        if refusal is not None:
            return _refusing(handler, self._refused(method, refusal))

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

    def _under_model_call_limit(self, behavior):
        def behave(request, context):
            with self.door.model_calls.held():
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
        limit_key = "caikit_computer_vision.max_open_streams"

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


def _behavior_field(handler) -> str:
    if handler.request_streaming:
        return "stream_stream" if handler.response_streaming else "stream_unary"
    return "unary_stream" if handler.response_streaming else "unary_unary"


def _wrapped(handler, wrap):
    """``handler`` with its behavior passed through ``wrap``; the message types are kept."""
    field = _behavior_field(handler)
    return handler._replace(**{field: wrap(getattr(handler, field))})


def _refusing(handler, refusal: Refusal):
    """A handler of ``handler``'s shape that ends the call with ``refusal``, reading nothing."""

    def refuse(_request, context):
        context.abort(refusal.code, refusal.message)

    field = _behavior_field(handler)
    return handler._replace(
        request_deserializer=None, response_serializer=None, **{field: refuse}
    )
