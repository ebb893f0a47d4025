"""The load process: clients of one server, driven by the bench over stdin / stdout.

    <venv>/bin/python -m bench.peers.load kserve-grpc-v2 127.0.0.1:PORT

Runs in its own interpreter (the venv of the server's protocol client), so that the clients never
share a GIL with the bench or the server. Reads one JSON command per line and writes one JSON
line back:

- ``{"op": "answers", "model": m, "images": [path, ...], "threshold": t}``: one request per
  image, in turn; answers ``{"answers": [rows, ...]}`` (bench/peers/protocol.py).
- ``{"op": "load", "model": m, "image": path, "threshold": t, "clients": n, "warm_up_s": w,
  "window_s": s}``: ``n`` threads, each with its own connection (channel), call back to back;
  the calls that end within ``s`` seconds after the first ``w`` are measured (``load`` says when
  the window stretches; ``completion_rate`` how the rate is timed). Answers ``{"requests",
  "window_s", "requests_per_s", "p50_ms", "failed", "first_error"}``.

Standard library only, but for each protocol's own client, imported when it is used.
"""

# Standard
from typing import Callable, Dict, List, Optional, Sequence, Tuple
import argparse
import base64
import http.client
import json
import pathlib
import sys
import threading
import time

# Local
from bench.peers.protocol import (
    FASTAPI_ROUTE,
    GRPC_METHOD,
    LITSERVE_ROUTE,
    TENSOR_DETECTIONS,
    TENSOR_IMAGE,
    TENSOR_THRESHOLD,
    Answer,
    decode_answer,
)

CALL_TIMEOUT_S = 120.0
# How far a window may stretch to see as many calls end as there are clients.
WINDOW_STRETCH = 3.0


class JsonHttpClient:
    """POST JSON over one kept-alive connection."""

    def __init__(self, address: str):
        host, port = address.rsplit(":", 1)
        self._connection = http.client.HTTPConnection(host, int(port), timeout=CALL_TIMEOUT_S)

    def post(self, path: str, body: dict) -> dict:
        self._connection.request(
            "POST", path, json.dumps(body), {"Content-Type": "application/json"}
        )
        response = self._connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status} from {path}: {payload[:300]!r}")
        return json.loads(payload)

    def close(self) -> None:
        self._connection.close()


def _b64(image: bytes) -> str:
    return base64.b64encode(image).decode()


def _rows_of_result(objects: List[dict]) -> Answer:
    return [
        [
            obj["label"],
            obj["score"],
            obj["box"]["xmin"],
            obj["box"]["ymin"],
            obj["box"]["xmax"],
            obj["box"]["ymax"],
        ]
        for obj in objects
    ]


class OursHttp(JsonHttpClient):
    """The runtime's HTTP predict route, as bench/served_models.py's ``HttpPredict`` calls it
    (with a threshold)."""

    def __init__(self, address: str):
        super().__init__(address)
        # Local
        from bench.served_models import HTTP_PREDICT_PATH  # imports caikit: .venv only

        self._path = HTTP_PREDICT_PATH

    def answer(self, model: str, image: bytes, threshold: float) -> Answer:
        result = self.post(
            self._path,
            {"model_id": model, "inputs": _b64(image), "parameters": {"threshold": threshold}},
        )
        return _rows_of_result(result["detected_objects"])


class FastApiPeer(JsonHttpClient):
    def answer(self, model: str, image: bytes, threshold: float) -> Answer:
        path = FASTAPI_ROUTE.format(model=model)
        return self.post(path, {"inputs": _b64(image), "threshold": threshold})["detections"]


class LitServePeer(JsonHttpClient):
    def answer(self, model: str, image: bytes, threshold: float) -> Answer:
        body = {"model": model, "inputs": _b64(image), "threshold": threshold}
        return self.post(LITSERVE_ROUTE, body)["detections"]


class KServeRestV1(JsonHttpClient):
    def answer(self, model: str, image: bytes, threshold: float) -> Answer:
        body = {"instances": [{"image": {"b64": _b64(image)}, "threshold": threshold}]}
        return self.post(f"/v1/models/{model}:predict", body)["predictions"][0]


class OursGrpc:
    """The runtime's gRPC predict through the stubs of its dumped protos (as the load generator)."""

    def __init__(self, address: str):
        # Third Party
        import grpc

        # Local
        from example_tools.runtime_harness import predict_callable

        self._channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(self._channel).result(timeout=30)
        self._predict = predict_callable(self._channel)

    def answer(self, model: str, image: bytes, threshold: float) -> Answer:
        result = self._predict(image, threshold, model_id=model, timeout=CALL_TIMEOUT_S)
        return [
            [obj.label, obj.score, obj.box.xmin, obj.box.ymin, obj.box.xmax, obj.box.ymax]
            for obj in result.detected_objects
        ]

    def close(self) -> None:
        self._channel.close()


class GrpcioPeer:
    def __init__(self, address: str):
        # Third Party
        import grpc

        self._channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(self._channel).result(timeout=30)
        self._detect = self._channel.unary_unary(GRPC_METHOD)

    def answer(self, model: str, image: bytes, threshold: float) -> Answer:
        metadata = (("model", model), ("threshold", repr(threshold)))
        return decode_answer(self._detect(image, metadata=metadata, timeout=CALL_TIMEOUT_S))

    def close(self) -> None:
        self._channel.close()


class KServeGrpcV2:
    """The open inference protocol through KServe's own generated gRPC stubs."""

    def __init__(self, address: str):
        # Third Party
        from kserve.protocol.grpc import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
        import grpc

        self._messages = grpc_predict_v2_pb2
        self._channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(self._channel).result(timeout=30)
        self._stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def answer(self, model: str, image: bytes, threshold: float) -> Answer:
        messages = self._messages
        tensor = messages.ModelInferRequest.InferInputTensor
        request = messages.ModelInferRequest(
            model_name=model,
            inputs=[
                tensor(
                    name=TENSOR_IMAGE,
                    datatype="BYTES",
                    shape=[1],
                    contents=messages.InferTensorContents(bytes_contents=[image]),
                ),
                tensor(
                    name=TENSOR_THRESHOLD,
                    datatype="FP64",
                    shape=[1],
                    contents=messages.InferTensorContents(fp64_contents=[threshold]),
                ),
            ],
        )
        response = self._stub.ModelInfer(request, timeout=CALL_TIMEOUT_S)
        output = next(out for out in response.outputs if out.name == TENSOR_DETECTIONS)
        if output.contents.bytes_contents:
            return decode_answer(output.contents.bytes_contents[0])
        # Raw contents: a BYTES element is its 4-byte little-endian length, then its bytes.
        raw = response.raw_output_contents[list(response.outputs).index(output)]
        return decode_answer(raw[4 : 4 + int.from_bytes(raw[:4], "little")])

    def close(self) -> None:
        self._channel.close()


class TritonGrpc:
    def __init__(self, address: str):
        # Third Party
        import numpy as np
        import tritonclient.grpc as triton

        self._np, self._triton = np, triton
        self._client = triton.InferenceServerClient(address)

    def answer(self, model: str, image: bytes, threshold: float) -> Answer:
        np, triton = self._np, self._triton
        image_input = triton.InferInput(TENSOR_IMAGE, [1, 1], "BYTES")
        image_input.set_data_from_numpy(np.array([[image]], dtype=np.object_))
        threshold_input = triton.InferInput(TENSOR_THRESHOLD, [1, 1], "FP64")
        threshold_input.set_data_from_numpy(np.array([[threshold]], dtype=np.float64))
        result = self._client.infer(
            model, [image_input, threshold_input], client_timeout=CALL_TIMEOUT_S
        )
        return decode_answer(result.as_numpy(TENSOR_DETECTIONS)[0, 0])

    def close(self) -> None:
        self._client.close()


CLIENTS: Dict[str, Callable] = {
    "ours-grpc": OursGrpc,
    "ours-http": OursHttp,
    "fastapi": FastApiPeer,
    "grpcio": GrpcioPeer,
    "kserve-rest-v1": KServeRestV1,
    "kserve-grpc-v2": KServeGrpcV2,
    "litserve": LitServePeer,
    "triton-grpc": TritonGrpc,
}


def answers(protocol: str, address: str, command: dict) -> dict:
    client = CLIENTS[protocol](address)
    try:
        return {
            "answers": [
                client.answer(
                    command["model"], pathlib.Path(path).read_bytes(), command["threshold"]
                )
                for path in command["images"]
            ]
        }
    finally:
        client.close()


def completion_rate(
    calls: Sequence[Sequence[Tuple[float, float]]], window_start: float, window_end: float
) -> float:
    """Requests per second of clients that each call back to back: for each client, the calls
    between its first and its last end in the window, over the time between those two ends.

    Counting the calls that end in a window instead is off by up to one call per client at
    each edge: 2.5 % for a client that ends 40 calls in it (a yolos-tiny-size model, 7 s).
    Timing whole intervals between ends has no such step. A client with fewer than two calls
    in the window gives no interval; then the count over the window is the figure.
    """
    ends = [
        sorted(ended for _started, ended in per_client if window_start <= ended <= window_end)
        for per_client in calls
    ]
    if ends and all(len(per_client) >= 2 and per_client[-1] > per_client[0] for per_client in ends):
        return sum((len(e) - 1) / (e[-1] - e[0]) for e in ends)
    return sum(map(len, ends)) / (window_end - window_start)


def load(protocol: str, address: str, command: dict) -> dict:
    """Requests/s and p50 latency of ``clients`` connections calling back to back.

    The window ends ``window_s`` after the warm-up, or later, once as many calls as there are
    clients have ended in it (at most ``WINDOW_STRETCH`` times ``window_s``): a server slower
    than the window still gets a rate from whole calls, over the window it really took.
    """
    image = pathlib.Path(command["image"]).read_bytes()
    model, threshold, count = command["model"], command["threshold"], command["clients"]
    measure_from: List[float] = []
    done = threading.Event()

    def start_window() -> None:  # run once, when every client is connected
        measure_from.append(time.monotonic() + command["warm_up_s"])

    connected = threading.Barrier(count + 1, action=start_window)
    calls: List[List[Tuple[float, float]]] = [[] for _ in range(count)]
    errors: List[str] = []

    def client_body(index: int) -> None:
        client = CLIENTS[protocol](address)
        try:
            connected.wait()
            while not done.is_set():
                started = time.monotonic()
                try:
                    client.answer(model, image, threshold)
                except Exception as err:  # noqa: BLE001 (a failed call is counted and shown)
                    errors.append(f"{type(err).__name__}: {err}"[:300])
                    done.wait(0.05)
                    continue
                calls[index].append((started, time.monotonic()))
        finally:
            client.close()

    def ended_in_window(until: float) -> List[float]:
        return sorted(
            ended - started
            for per_client in calls
            for started, ended in list(per_client)
            if measure_from[0] <= ended <= until
        )

    threads = [threading.Thread(target=client_body, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        connected.wait(timeout=60)
        window_end = measure_from[0] + command["window_s"]
        latest_end = measure_from[0] + WINDOW_STRETCH * command["window_s"]
        time.sleep(max(0.0, window_end - time.monotonic()))
        while len(ended_in_window(time.monotonic())) < count and time.monotonic() < latest_end:
            time.sleep(0.01)
        stop = time.monotonic()
    finally:
        done.set()
        for thread in threads:
            thread.join()
    counted = ended_in_window(stop)
    return {
        "requests": len(counted),
        "window_s": stop - measure_from[0],
        "requests_per_s": completion_rate(calls, measure_from[0], stop),
        "p50_ms": 1000.0 * counted[(len(counted) - 1) // 2] if counted else None,
        "failed": len(errors),
        "first_error": errors[0] if errors else "",
    }


def serve_commands(protocol: str, address: str) -> None:
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            return
        try:
            reply = {"answers": answers, "load": load}[command["op"]](protocol, address, command)
        except Exception as err:  # noqa: BLE001 (the bench prints it and marks the server)
            reply = {"error": f"{type(err).__name__}: {err}"[:2000]}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Positional: importing kserve parses the command line's options (its own --protocol).
    parser.add_argument("protocol", choices=sorted(CLIENTS))
    parser.add_argument("address", help="HOST:PORT of the server")
    args = parser.parse_args(argv)
    serve_commands(args.protocol, args.address)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
