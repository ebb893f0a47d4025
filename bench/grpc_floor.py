"""The floor of serving overhead: a plain grpcio server that answers predict with fixed bytes.

It runs as its own process on loopback, like the runtime, with the runtime's gRPC options and
thread pool size, and serves ``/ccv.ComputerVisionService/ObjectDetectionTaskPredict``: the
request is taken as raw bytes and the answer is a fixed, already serialized
``ObjectDetectionResult`` chosen by the ``mm-model-id`` header. No model, no caikit: what is
left is what any gRPC service in Python pays for a call.

    python -m bench.grpc_floor --port 50051 --responses responses.json   # {id: hex bytes}
"""

# Standard
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from typing import Dict, Iterator, Tuple
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

# Third Party
import grpc
import yaml

# Local
from common import HOST

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SERVICE = "ccv.ComputerVisionService"
METHOD = "ObjectDetectionTaskPredict"
# caikit's default runtime.server_thread_pool_size, for a config that does not set it.
CAIKIT_THREAD_POOL_SIZE = 100
READY_TIMEOUT_S = 60.0


def runtime_settings() -> Tuple[Dict[str, int], int]:
    """The runtime's ``runtime.grpc.options`` and thread pool size, from runtime_config.yaml."""
    runtime = yaml.safe_load((REPO_ROOT / "runtime_config.yaml").read_text())["runtime"]
    pool_size = runtime.get("server_thread_pool_size", CAIKIT_THREAD_POOL_SIZE)
    return dict(runtime["grpc"].get("options") or {}), pool_size


def serve(port: int, responses: Dict[str, bytes]) -> None:
    """Serve the fixed ``responses`` on 127.0.0.1:``port`` until the process is stopped."""

    def predict(request: bytes, context: grpc.ServicerContext) -> bytes:
        del request  # The floor answers every request the same way.
        model_id = dict(context.invocation_metadata()).get("mm-model-id", "")
        if model_id not in responses:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no fixed response for {model_id!r}")
        return responses[model_id]

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(predict)}
    )
    options, pool_size = runtime_settings()
    server = grpc.server(ThreadPoolExecutor(max_workers=pool_size), options=list(options.items()))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{HOST}:{port}")
    server.start()
    server.wait_for_termination()


@contextmanager
def floor_server(port: int, responses: Dict[str, bytes]) -> Iterator[subprocess.Popen]:
    """Run the floor server as a child process on ``port`` until the block ends."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="ccv-floor-") as file:
        json.dump({model_id: answer.hex() for model_id, answer in responses.items()}, file)
        file.flush()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.grpc_floor",
                "--port",
                str(port),
                "--responses",
                file.name,
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
        )
        try:
            with closing(grpc.insecure_channel(f"{HOST}:{port}")) as channel:
                grpc.channel_ready_future(channel).result(timeout=READY_TIMEOUT_S)
            yield process
        finally:
            process.terminate()
            process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument(
        "--responses",
        type=pathlib.Path,
        required=True,
        help="JSON file mapping each mm-model-id to its response, serialized and hex-encoded",
    )
    args = parser.parse_args()
    responses = {
        model_id: bytes.fromhex(answer)
        for model_id, answer in json.loads(args.responses.read_text()).items()
    }
    serve(args.port, responses)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

