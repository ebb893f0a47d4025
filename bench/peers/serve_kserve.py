"""KServe's Python ModelServer doing the runtime's model call: REST v1 and gRPC v2 in one process.

    bench/.peer_venvs/kserve/bin/python -m bench.peers.serve_kserve \
        --model my_model=DIR/hf_model --port HTTP_PORT --grpc-port GRPC_PORT

REST v1: POST ``/v1/models/<model>:predict`` with ``{"instances": [{"image": {"b64": ...},
"threshold": t}]}``, answered ``{"predictions": [rows]}``. gRPC v2 (the open inference
protocol): ``ModelInfer`` with a BYTES input ``image`` and an FP64 input ``threshold`` of shape
[1]; the answer is a BYTES output ``detections`` holding the JSON rows.

KServe 0.20 has no option for the address it listens on: its REST server's uvicorn config says
``host="0.0.0.0"`` and its gRPC server binds ``[::]``. The two subclasses below are the same
servers bound to 127.0.0.1; the bench checks every listening socket of the process anyway.
"""

# Standard
from concurrent import futures
from typing import Dict, Optional
import base64

# Third Party
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer, InferenceServicer
from kserve.protocol.rest.server import RESTServer
import kserve
import kserve.model_server

# Local
from bench.peers.protocol import (
    LOOPBACK,
    TENSOR_DETECTIONS,
    TENSOR_IMAGE,
    TENSOR_THRESHOLD,
    answer_rows,
    encode_answer,
    load_detectors,
    parse_models,
    server_arguments,
)


class DetectorModel(kserve.Model):
    """One saved model, answering v1 (a dict) and v2 (an ``InferRequest``) payloads."""

    def __init__(self, name: str, detector):
        super().__init__(name)
        self.detector = detector
        self.ready = True

    def predict(self, payload, headers: Optional[Dict[str, str]] = None):
        if isinstance(payload, dict):
            instances = payload["instances"]
            images = [base64.b64decode(instance["image"]["b64"]) for instance in instances]
            threshold = float(instances[0]["threshold"])
            return {
                "predictions": [
                    answer_rows(found) for found in self.detector.detect(images, threshold)
                ]
            }
        inputs = {tensor.name: tensor.data for tensor in payload.inputs}
        detected = self.detector.detect(
            list(inputs[TENSOR_IMAGE]), float(inputs[TENSOR_THRESHOLD][0])
        )
        return kserve.InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=[
                kserve.InferOutput(
                    name=TENSOR_DETECTIONS,
                    shape=[len(detected)],
                    datatype="BYTES",
                    data=[encode_answer(found) for found in detected],
                )
            ],
        )


class LoopbackRESTServer(RESTServer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.host = LOOPBACK


class LoopbackGRPCServer(GRPCServer):
    async def start(self, max_workers):
        # GRPCServer.start of kserve 0.20, with its listen address "[::]:port" made loopback.
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                (
                    "grpc.max_receive_message_length",
                    self._kwargs.get("grpc_max_receive_message_length"),
                ),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self._data_plane, self._model_repository_extension), self._server
        )
        self._server.add_insecure_port(f"{LOOPBACK}:{self._port}")
        await self._server.start()
        await self._server.wait_for_termination()


def main() -> None:
    parser = server_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--grpc-port", type=int, required=True, help=f"gRPC port on {LOOPBACK}")
    args = parser.parse_args()
    detectors = load_detectors(parse_models(args.model))
    kserve.model_server.RESTServer = LoopbackRESTServer
    kserve.model_server.GRPCServer = LoopbackGRPCServer
    server = kserve.ModelServer(
        http_port=args.port, grpc_port=args.grpc_port, enable_latency_logging=False
    )
    server.start([DetectorModel(name, detector) for name, detector in detectors.items()])


if __name__ == "__main__":
    main()
