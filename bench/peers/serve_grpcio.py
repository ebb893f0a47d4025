"""A plain grpcio server doing the runtime's model call: the least a Python gRPC service costs.

    python -m bench.peers.serve_grpcio --model my_model=DIR/hf_model --port PORT

One unary method (protocol.GRPC_METHOD) without protos: the request is the JPEG's bytes, the
model and threshold ride in metadata (``model``, ``threshold``), the answer is the JSON rows.
Eight worker threads, as many as the most clients the bench runs.
"""

# Standard
from concurrent import futures

# Third Party
import grpc

# Local
from bench.peers.protocol import (
    GRPC_METHOD,
    LOOPBACK,
    encode_answer,
    load_detectors,
    parse_models,
    server_arguments,
)

WORKERS = 8


def handler(detectors: dict) -> grpc.GenericRpcHandler:
    def detect(image: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata())
        detector = detectors.get(metadata.get("model"))
        if detector is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {metadata.get('model')!r}")
        return encode_answer(detector.detect([image], float(metadata["threshold"]))[0])

    service, method = GRPC_METHOD.strip("/").split("/")
    return grpc.method_handlers_generic_handler(
        service, {method: grpc.unary_unary_rpc_method_handler(detect)}
    )


def main() -> None:
    args = server_arguments(__doc__.split("\n\n")[0]).parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS))
    server.add_generic_rpc_handlers((handler(load_detectors(parse_models(args.model))),))
    if server.add_insecure_port(f"{LOOPBACK}:{args.port}") != args.port:
        raise SystemExit(f"could not listen on {LOOPBACK}:{args.port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
