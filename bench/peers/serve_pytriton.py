"""NVIDIA PyTriton doing the runtime's model call: the Triton server of its wheel, on the CPU,
with Triton's dynamic batching (up to ``MAX_BATCH_SIZE`` requests, its default queue delay).

    bench/.peer_venvs/pytriton/bin/python -m bench.peers.serve_pytriton \
        --model my_model=DIR/hf_model --port HTTP_PORT --grpc-port GRPC_PORT

Each model takes a BYTES input ``image`` and an FP64 input ``threshold`` (shape [1] per request)
and gives a BYTES output ``detections``, the JSON rows; the bench calls it over gRPC
(tritonclient). Metrics are off, and HTTP and gRPC listen on 127.0.0.1 only.

Two settings make PyTriton 0.7 start on this machine's CPU: the Triton Python backend's stub
links libpython, and without ``LD_LIBRARY_PATH`` naming this interpreter's ``lib/`` it loads
the system's (Debian's) instead and fails (``_recursion_count``); and the handshake with the
stub times out after 1 s, shorter than the stub's start on a busy 2-core machine.
"""

# Standard
import os
import sys

# Third Party
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
import numpy as np
import pytriton.proxy.communication

# Local
from bench.peers.protocol import (
    LOOPBACK,
    TENSOR_DETECTIONS,
    TENSOR_IMAGE,
    TENSOR_THRESHOLD,
    detect_grouped,
    encode_answer,
    load_detectors,
    parse_models,
    server_arguments,
)

MAX_BATCH_SIZE = 8
HANDSHAKE_TIMEOUT_S = 60.0


def infer_function(name: str, detectors: dict):
    """Triton's batched call of model ``name``: the requests of a batch as one
    ``Detector.detect`` call per threshold."""

    @batch
    def infer(**inputs):
        requests = [
            (name, bytes(image), float(threshold))
            for image, threshold in zip(inputs[TENSOR_IMAGE][:, 0], inputs[TENSOR_THRESHOLD][:, 0])
        ]
        answers = [[encode_answer(found)] for found in detect_grouped(detectors, requests)]
        return {TENSOR_DETECTIONS: np.array(answers, dtype=np.object_)}

    return infer


def main() -> None:
    parser = server_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--grpc-port", type=int, required=True, help=f"gRPC port on {LOOPBACK}")
    args = parser.parse_args()
    detectors = load_detectors(parse_models(args.model))
    base_lib = os.path.join(sys.base_prefix, "lib")
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
        filter(None, [base_lib, os.environ.get("LD_LIBRARY_PATH")])
    )
    pytriton.proxy.communication.get_config_from_handshake_server.__defaults__ = (
        HANDSHAKE_TIMEOUT_S,
    )
    config = TritonConfig(
        http_address=LOOPBACK,
        http_port=args.port,
        grpc_address=LOOPBACK,
        grpc_port=args.grpc_port,
        allow_metrics=False,
        allow_gpu_metrics=False,
        allow_cpu_metrics=False,
    )
    with Triton(config=config) as triton:
        for name in detectors:
            triton.bind(
                model_name=name,
                infer_func=infer_function(name, detectors),
                inputs=[
                    Tensor(name=TENSOR_IMAGE, dtype=np.bytes_, shape=(1,)),
                    Tensor(name=TENSOR_THRESHOLD, dtype=np.float64, shape=(1,)),
                ],
                outputs=[Tensor(name=TENSOR_DETECTIONS, dtype=np.bytes_, shape=(1,))],
                config=ModelConfig(max_batch_size=MAX_BATCH_SIZE, batcher=DynamicBatcher()),
            )
        triton.serve()


if __name__ == "__main__":
    main()
