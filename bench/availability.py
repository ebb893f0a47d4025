"""Availability under hostile clients: what each attack of the availability issue costs a runtime.

One runtime serving the demo model. First the throughput of 8 gRPC clients (quiet); then, for
each attack, what was sent and what it got back, a good request's worst latency while the attack
runs (a gRPC predict and an HTTP /health, several times), and the runtime's RSS, threads and open
files before -> after; last, the 8 clients again and whether my_model still answers.

    .venv/bin/python -m bench.availability
    .venv/bin/python -m bench.availability --launcher /tmp/before/launch_vision_runtime.py

``--launcher`` probes another checkout's runtime (a ``git worktree`` of an older commit) with the
same requests, for before/after figures. Every attack is bounded in count and time and is
undone before the next. Figures, never pass/fail.
"""

# Standard
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence
import argparse
import json
import os
import pathlib
import shutil
import socket
import tempfile
import threading
import time

# Third Party
import grpc

# Local
from common import HOST
from bench.front_door import render_rows
from bench.served_models import DEMO_MODEL_ID, HTTP_PREDICT_PATH, save_models, serving
from example_tools import hostile_images, runtime_harness
from example_tools.load_generator import PredictClients, RssSampler, read_rss_kib
from example_tools.runtime_harness import PREDICT_METHOD, predict_callable
from example_tools.synthetic_data import render_example

MIB = 1024.0
GOOD_TIMEOUT_S = 5.0
GOOD_ROUNDS = 3
THROUGHPUT_S = 8.0
CLIENTS = 8
TRAIN_ROUTE = "/api/v1/ObjectDetectionTaskTransformersObjectDetectorTrain"


def _proc(pid: int) -> Dict[str, float]:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    threads = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Threads:"))
    return {
        "rss": read_rss_kib(pid) / MIB,
        "threads": threads,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


class Bench:
    """The runtime under test, a good client, and the table's rows."""

    def __init__(self, runtime, image: bytes):
        self.runtime = runtime
        self.image = image
        self.grpc_address = f"{HOST}:{runtime.ports['grpc']}"
        self.rows: List[Dict[str, str]] = []

    def good_latency(self) -> str:
        """The worst of ``GOOD_ROUNDS`` good gRPC predicts and HTTP /health checks (each on a
        fresh connection), or how many failed and how."""
        worst = {"predict": 0.0, "/health": 0.0}
        failed: Counter = Counter()
        for _ in range(GOOD_ROUNDS):
            with _own_channel(self.grpc_address) as channel:
                started = time.monotonic()
                try:
                    predict_callable(channel)(self.image, timeout=GOOD_TIMEOUT_S)
                    worst["predict"] = max(worst["predict"], time.monotonic() - started)
                except grpc.RpcError as err:
                    failed[("predict", err.code().name)] += 1
            started = time.monotonic()
            status = _http_status(self.runtime.ports["http"], "GET", "/health", timeout=GOOD_TIMEOUT_S)
            if status == 200:
                worst["/health"] = max(worst["/health"], time.monotonic() - started)
            else:
                failed[("/health", str(status))] += 1
        parts = []
        for what, seconds in worst.items():
            failures = [f"{n} x {status}" for (call, status), n in failed.items() if call == what]
            parts.append(f"{what} " + (", ".join(failures) if failures else f"{seconds * 1000:.0f} ms"))
        return "; ".join(parts)

    def attack(self, sent: str, start: Callable[[], Callable[[], str]]) -> None:
        """Run one attack: ``start()`` begins it and returns a function that ends it and says
        what the attack's own requests got. RSS is sampled throughout (its peak is shown)."""
        before = _proc(self.runtime.process.pid)
        sampler = RssSampler(self.runtime.process.pid, 0.05)
        sampler.start()
        stop = start()
        during = self.good_latency()
        peak_fds = _proc(self.runtime.process.pid)["fds"]
        statuses = stop()
        peak = max(kib for _, kib in sampler.stop()) / MIB
        time.sleep(1.0)  # what the runtime gives back once the attack is over
        after = _proc(self.runtime.process.pid)
        self.rows.append({
            "sent": sent,
            "its status": statuses,
            "good request during": during,
            "RSS MiB before / peak / after": f"{before['rss']:.0f} / {peak:.0f} / {after['rss']:.0f}",
            "threads before / after": f"{before['threads']:.0f} / {after['threads']:.0f}",
            "open files before / during / after": f"{before['fds']:.0f} / {peak_fds:.0f} / {after['fds']:.0f}",
        })
        print(f"  {sent}: {statuses}; good request {during}", flush=True)

    def throughput(self, label: str) -> None:
        clients = PredictClients(self.grpc_address, self.image, count=CLIENTS, model_id=DEMO_MODEL_ID)
        clients.start()
        started = time.monotonic()
        time.sleep(THROUGHPUT_S)
        calls = clients.stop()
        elapsed = time.monotonic() - started
        ok = sum(1 for call in calls if call.status == "OK")
        self.rows.append({
            "sent": f"{CLIENTS} gRPC clients, predict back to back ({label})",
            "its status": f"{ok / elapsed:.1f} predictions/s",
            "good request during": "",
            "RSS MiB before / peak / after": "",
            "threads before / after": "",
            "open files before / during / after": "",
        })
        print(f"  throughput {label}: {ok / elapsed:.1f}/s", flush=True)


def _own_channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def _http_status(port: int, method: str, path: str, body: Optional[bytes] = None,
                 timeout: float = 30.0, headers: Optional[Dict[str, str]] = None) -> int:
    # Standard
    import http.client

    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request(method, path, body, {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError as err:
        return f"connection error ({type(err).__name__})"
    finally:
        connection.close()


def _in_threads(calls: Sequence[Callable[[], str]]) -> Callable[[], str]:
    """Start ``calls`` in threads; the returned function joins them and counts their results."""
    results: List[str] = []
    threads = [threading.Thread(target=lambda call=call: results.append(str(call())), daemon=True)
               for call in calls]
    for thread in threads:
        thread.start()

    def stop() -> str:
        for thread in threads:
            thread.join(120)
        return ", ".join(f"{count} x {status}" for status, count in Counter(results).items())

    return stop


# -- the attacks ----------------------------------------------------------------------------------


def half_open_grpc(bench: Bench, connections: int, per_connection: int) -> Callable[[], str]:
    release = threading.Event()

    def nothing():
        release.wait(60)
        return
        yield b""  # pylint: disable=unreachable

    channels = [_own_channel(bench.grpc_address) for _ in range(connections)]
    calls = []
    for channel in channels:
        call = channel.stream_unary(PREDICT_METHOD, request_serializer=lambda m: m,
                                    response_deserializer=lambda b: b)
        calls += [call.future(nothing(), metadata=[("mm-model-id", DEMO_MODEL_ID)])
                  for _ in range(per_connection)]
    time.sleep(0.5)

    def stop() -> str:
        ended = Counter(call.code().name for call in calls if call.done())
        release.set()
        for call in calls:
            call.cancel()
        for channel in channels:
            channel.close()
        pending = len(calls) - sum(ended.values())
        return ", ".join([f"{n} x {code}" for code, n in ended.items()] + ([f"{pending} still waiting"] if pending else []))

    return stop


def grpc_predicts(bench: Bench, images: Sequence[bytes], timeout: float = GOOD_TIMEOUT_S):
    """Start: one predict of each of ``images``, all at once, each on its own connection."""

    def one(image: bytes) -> str:
        with _own_channel(bench.grpc_address) as channel:
            started = time.monotonic()
            try:
                predict_callable(channel)(image, timeout=timeout)
                return f"OK in {time.monotonic() - started:.1f} s"
            except grpc.RpcError as err:
                return f"{err.code().name} in {time.monotonic() - started:.1f} s"

    return lambda: _in_threads([lambda image=image: one(image) for image in images])


def half_open_http(bench: Bench, port_name: str, count: int, head: bytes) -> Callable[[], str]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((HOST, bench.runtime.ports[port_name]), timeout=5)
        sock.sendall(head)
        sockets.append(sock)
    time.sleep(0.5)

    def stop() -> str:
        closed = 0
        for sock in sockets:
            sock.setblocking(False)
            try:
                closed += sock.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
            sock.close()
        return f"{closed} of {count} closed by the server"

    return stop


def http_bodies(bench: Bench, count: int, size: int) -> Callable[[], str]:
    body = json.dumps({"model_id": DEMO_MODEL_ID, "inputs": "A" * (size - 64)}).encode()
    port = bench.runtime.ports["http"]
    return _in_threads([lambda: _http_status(port, "POST", HTTP_PREDICT_PATH, body)] * count)


def broken_model(bench: Bench, name: str, damage: Callable[[pathlib.Path], None], predicts: int = 3):
    models = bench.runtime.work_dir / "models"
    shutil.copytree(models / DEMO_MODEL_ID, models / name)
    damage(models / name)

    def one() -> str:
        with _own_channel(bench.grpc_address) as channel:
            try:
                predict_callable(channel)(bench.image, model_id=name, timeout=60)
                return "OK"
            except grpc.RpcError as err:
                return err.code().name

    def start():
        results = [one() for _ in range(predicts)]
        return lambda: ", ".join(f"{n} x {s}" for s, n in Counter(results).items())

    return start


def _weights(model_dir: pathlib.Path) -> pathlib.Path:
    return next((model_dir / "hf_model").glob("*.safetensors"))


def _truncate(model_dir: pathlib.Path) -> None:
    weights = _weights(model_dir)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _other_shapes(model_dir: pathlib.Path) -> None:
    config_path = model_dir / "hf_model" / "config.json"
    config = json.loads(config_path.read_text())
    config["hidden_size"] = config["hidden_size"] * 2
    config_path.write_text(json.dumps(config))


def _linked_outside(model_dir: pathlib.Path) -> None:
    outside = model_dir.parent.parent / "outside_hf_model"
    shutil.move(str(model_dir / "hf_model"), outside)
    (model_dir / "hf_model").symlink_to(outside)


def trainings(bench: Bench, body: dict, count: int) -> Callable[[], str]:
    port = bench.runtime.ports["http"]
    data = json.dumps(body).encode()
    return _in_threads([lambda: _http_status(port, "POST", TRAIN_ROUTE, data)] * count)


def crowded_training(bench: Bench, boxes: int) -> Callable[[], str]:
    folder = bench.runtime.work_dir / "train_data" / "crowded"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    image, _ = render_example("cat")
    (folder / "images" / "a.jpg").write_bytes(image)
    (folder / "labels.txt").write_text("a.jpg\tcat\t(1, 5, 1, 5)\n" * boxes)
    return trainings(bench, _train_body("crowded", "train_data/crowded/images", "train_data/crowded/labels.txt", 1), 1)


def _train_body(name: str, images: str = "train_data/images", labels: str = "train_data/labels.txt",
                epochs: int = 1) -> dict:
    return {"model_name": name, "parameters": {
        "model_path": f"models/{DEMO_MODEL_ID}",
        "train_data": {"img_dir_path": images, "labels_file": labels},
        "num_epochs": epochs, "learning_rate": 0.001}}


def odd_messages(bench: Bench) -> Callable[[], str]:
    port = bench.runtime.ports["http"]
    deep = b'{"model_id": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    answers = [f"deep JSON: HTTP {_http_status(port, 'POST', HTTP_PREDICT_PATH, deep)}"]
    with _own_channel(bench.grpc_address) as channel:
        raw = channel.unary_unary(PREDICT_METHOD, request_serializer=lambda m: m,
                                  response_deserializer=lambda b: b)
        try:
            raw(b"\x0a\x64abc", metadata=[("mm-model-id", DEMO_MODEL_ID)], timeout=10)
            answers.append("malformed protobuf: OK")
        except grpc.RpcError as err:
            answers.append(f"malformed protobuf: {err.code().name}")
    log_before = len(bench.runtime.log())
    _http_status(port, "GET", "/api/v1/%1b%5b31mred%0d%0aforged%00line")
    logged = bench.runtime.log()[log_before:]
    answers.append("ESC/CR/LF/NUL in the log: " + ("raw" if "\x1b[31m" in logged or "\nforged" in logged else "escaped"))
    return lambda: "; ".join(answers)


# -- the run --------------------------------------------------------------------------------------


def probe(bench: Bench) -> None:
    bench.throughput("quiet, before the attacks")
    bench.attack("32 gRPC predicts that never send their message, one connection",
                 lambda: half_open_grpc(bench, 1, 32))
    bench.attack("48 such calls, one per connection", lambda: half_open_grpc(bench, 48, 1))
    bomb = hostile_images.progressive_jpeg_scan_bomb()
    bench.attack("2 progressive JPEGs of 6000x6000 with 1000 scans, at once (gRPC)",
                 grpc_predicts(bench, [bomb, bomb], timeout=60))
    bench.attack("PNG with 2M ancillary chunks (gRPC)",
                 grpc_predicts(bench, [hostile_images.png_with_many_chunks()], timeout=90))
    bench.attack("BMP RLE8 4000x4000 (gRPC)", grpc_predicts(bench, [hostile_images.bmp_rle8()], timeout=90))
    large = {"16-bit PNG 6324x6324": hostile_images.png_16_bit(),
             "float TIFF 6324x6324": hostile_images.float_tiff(),
             "PNG 1x40000000": hostile_images.elongated_png()}
    for name, data in large.items():
        bench.attack(f"{name} (gRPC)", grpc_predicts(bench, [data], timeout=120))
    bench.attack("the three above at once (gRPC)", grpc_predicts(bench, list(large.values()), timeout=120))
    bench.attack("500 HTTP requests whose head never ends",
                 lambda: half_open_http(bench, "http", 500, b"POST /health HTTP/1.1\r\nHost: x\r\n"))
    bench.attack("500 idle connections to the metrics port",
                 lambda: half_open_http(bench, "metrics", 500, b"GET /metrics HTTP/1.1\r\n"))
    bench.attack("4 HTTP predict bodies of 32 MiB at once", lambda: http_bodies(bench, 4, 32 << 20))
    bench.attack("3 predicts of a model without hf_model/config.json",
                 broken_model(bench, "no_config", lambda d: (d / "hf_model" / "config.json").unlink()))
    bench.attack("3 predicts of a model whose weights do not fit its config",
                 broken_model(bench, "other_shapes", _other_shapes))
    bench.attack("3 predicts of a model with half its weights", broken_model(bench, "truncated", _truncate))
    bench.attack("predict of a model whose hf_model links outside models/",
                 broken_model(bench, "linked", _linked_outside, predicts=1))
    bench.attack("8 Train calls naming an existing model, at once",
                 lambda: trainings(bench, _train_body(DEMO_MODEL_ID), 8))
    bench.attack("Train on one image with 200000 boxes", lambda: crowded_training(bench, 200_000))
    bench.attack("deep JSON, malformed protobuf, escape codes in a path", lambda: odd_messages(bench))
    bench.throughput("after the attacks")
    with _own_channel(bench.grpc_address) as channel:
        try:
            predict_callable(channel)(bench.image, timeout=30)
            alive = "my_model answers"
        except grpc.RpcError as err:
            alive = f"my_model: {err.code().name}"
    kept = sorted(p.name for p in (bench.runtime.work_dir / "models").iterdir())
    bench.rows.append({"sent": "after every attack", "its status": alive,
                       "good request during": f"models/: {', '.join(kept)}",
                       "RSS MiB before / peak / after": "", "threads before / after": "",
                       "open files before / during / after": ""})


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launcher", type=pathlib.Path,
                        help="launch_vision_runtime.py of the checkout to probe (default: this one)")
    args = parser.parse_args(argv)
    if args.launcher:
        runtime_harness.LAUNCHER = args.launcher.resolve()
    image, _ = render_example("cat")
    with tempfile.TemporaryDirectory(prefix="ccv-bench-availability-") as temporary:
        root = pathlib.Path(temporary)
        save_models(root / "saved", {DEMO_MODEL_ID: "tiny"})
        with serving(root / "work", root / "saved") as runtime:
            bench = Bench(runtime, image)
            bench.good_latency()  # the model is loaded and warm
            probe(bench)
    print(render_rows(bench.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
