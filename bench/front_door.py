"""Front door: what careless and hostile requests cost a running runtime (docs/security.md).

One runtime serving the demo model, probed as in the front-door issue: a burst of unknown model
ids (RSS and /metrics growth), paths and odd spellings sent as ``mm-model-id`` (time to answer,
copies loaded), predictions while two idle reflection streams are open (grpcurl opens one per
call), oversized or mistyped requests, ``mmesh.ModelRuntime`` with a path outside models/, and
trainings started six at once then cancelled (RSS before, during and after).

    .venv/bin/python -m bench.front_door                # this checkout's runtime
    .venv/bin/python -m bench.front_door --launcher /tmp/old/launch_vision_runtime.py

``--launcher`` probes another checkout's runtime (a ``git worktree`` of an older commit) with the
same requests, for before/after figures. Figures, never pass/fail.
"""

# Standard
from typing import Dict, List, Optional, Sequence
import argparse
import base64
import json
import pathlib
import statistics
import tempfile
import threading
import time
import zipfile

# Third Party
import grpc

# Local
from common import HOST
from bench.figures import Figure
from bench.served_models import DEMO_MODEL_ID, HTTP_PREDICT_PATH, save_models, serving
from example_tools import runtime_harness
from example_tools.load_generator import read_rss_kib
from example_tools.runtime_harness import predict_callable
from example_tools.synthetic_data import render_example

GROUP = "front_door"
MIB = 1024.0
UNKNOWN_IDS = {False: 1500, True: 200}
PATH_SPELLINGS = {False: 20, True: 5}
STREAM_PREDICTIONS = {False: 40, True: 10}
PREDICT_TIMEOUT_S = 10.0
TRAIN_ROUTE = "/api/v1/ObjectDetectionTaskTransformersObjectDetectorTrain"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
TRAININGS_AT_ONCE = 6
SETTLE_S = 3.0


class _Probe:
    """One runtime and the readings every probe takes."""

    def __init__(self, runtime, channel):
        self.runtime = runtime
        self.channel = channel
        self.predict = predict_callable(channel)
        self.rows: List[Dict[str, str]] = []

    def rss_mib(self) -> float:
        return read_rss_kib(self.runtime.process.pid) / MIB

    def metrics_kib(self) -> float:
        _, text = self.runtime.http("GET", "/metrics", port="metrics")
        return len(text.encode()) / 1024.0

    def status(self, call, *args, **kwargs) -> str:
        try:
            call(*args, **kwargs)
        except grpc.RpcError as err:
            return err.code().name
        return "OK"

    def row(self, sent: str, status: str, rss: float = 0.0, metrics: float = 0.0,
            seconds: Optional[float] = None, note: str = "") -> None:
        self.rows.append({
            "sent": sent,
            "status": status,
            "RSS growth (MiB)": f"{rss:+.0f}",
            "/metrics growth (KiB)": f"{metrics:+.0f}",
            "time": "" if seconds is None else f"{seconds * 1000:.0f} ms",
            "note": note,
        })


def _unknown_ids(probe: _Probe, image: bytes, count: int) -> List[Figure]:
    rss, metrics = probe.rss_mib(), probe.metrics_kib()
    seconds, statuses = [], set()
    for n in range(count):
        started = time.monotonic()
        statuses.add(probe.status(probe.predict, image, model_id=f"unknown_{n:05d}", timeout=30))
        seconds.append(time.monotonic() - started)
    scrape_started = time.monotonic()
    metrics_after = probe.metrics_kib()
    scrape_s = time.monotonic() - scrape_started
    rss_growth, metrics_growth = probe.rss_mib() - rss, metrics_after - metrics
    probe.row(f"{count} unknown model ids (gRPC)", "/".join(sorted(statuses)), rss_growth,
              metrics_growth, statistics.median(seconds),
              f"/metrics {metrics_after:.0f} KiB after, scraped in {scrape_s * 1000:.0f} ms")
    return [
        Figure(GROUP, f"RSS growth after {count} unknown ids", rss_growth, "MiB"),
        Figure(GROUP, f"/metrics growth after {count} unknown ids", metrics_growth, "KiB"),
    ]


def _path_ids(probe: _Probe, image: bytes, spellings: int, scratch: pathlib.Path) -> List[Figure]:
    archive = scratch / "model.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        models = probe.runtime.work_dir / "models"
        for path in (models / DEMO_MODEL_ID).rglob("*"):
            zipped.write(path, path.relative_to(models))
    figures = []
    for label, model_id in (("a .zip outside models/", str(archive)), ("/usr", "/usr")):
        rss = probe.rss_mib()
        started = time.monotonic()
        status = probe.status(probe.predict, image, model_id=model_id, timeout=120)
        seconds = time.monotonic() - started
        probe.row(f"mm-model-id: {label}", status, probe.rss_mib() - rss, seconds=seconds)
        figures.append(Figure(GROUP, f"time to answer mm-model-id {label}", seconds * 1000, "ms"))
    rss = probe.rss_mib()
    statuses, slowest = set(), 0.0
    for n in range(1, spellings + 1):
        started = time.monotonic()
        statuses.add(probe.status(probe.predict, image, model_id=DEMO_MODEL_ID + "/." * n, timeout=120))
        slowest = max(slowest, time.monotonic() - started)
    listed = probe.runtime.http_json("/info/models")["models"]
    copies = sum(1 for model in listed if model["loaded"] and model["name"].startswith(DEMO_MODEL_ID))
    probe.row(f"{spellings} spellings my_model/., my_model/./., ...", "/".join(sorted(statuses)),
              probe.rss_mib() - rss, seconds=slowest, note=f"{copies} copies of my_model loaded")
    return figures


class _IdleStream:
    """A reflection stream that sends one request and stays open, as grpcurl's does."""

    def __init__(self, channel):
        # Third Party
        from grpc_reflection.v1alpha import reflection_pb2

        self._done = threading.Event()

        def requests():
            yield reflection_pb2.ServerReflectionRequest(list_services="")
            self._done.wait(120)

        self._call = channel.stream_stream(
            REFLECTION,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )(requests(), timeout=120)
        next(self._call)

    def close(self) -> None:
        self._done.set()
        self._call.cancel()


def _predict_latencies(probe: _Probe, image: bytes, count: int):
    latencies, timeouts = [], 0
    for _ in range(count):
        started = time.monotonic()
        if probe.status(probe.predict, image, 0.0, timeout=PREDICT_TIMEOUT_S) == "OK":
            latencies.append(time.monotonic() - started)
        else:
            timeouts += 1
            if timeouts >= 2:  # the runtime is starved: further calls would only wait too
                break
    return latencies, timeouts


def _streams(probe: _Probe, image: bytes, count: int) -> List[Figure]:
    quiet, _ = _predict_latencies(probe, image, count)
    streams = [_IdleStream(probe.channel) for _ in range(2)]
    try:
        held, timeouts = _predict_latencies(probe, image, count)
    finally:
        for stream in streams:
            stream.close()
    quiet_ms = statistics.median(quiet) * 1000
    held_ms = statistics.median(held) * 1000 if held else PREDICT_TIMEOUT_S * 1000
    probe.row("predict while 2 reflection streams are open", f"{len(held)} OK, {timeouts} timed out",
              note=f"p50 {held_ms:.1f} ms (no streams: {quiet_ms:.1f} ms)")
    return [Figure(GROUP, "predict p50 with 2 idle reflection streams open", held_ms, "ms",
                   details={"without streams": round(quiet_ms, 2)})]


def _train_body(model_name: str, num_epochs: int) -> dict:
    return {
        "model_name": model_name,
        "parameters": {
            "model_path": f"models/{DEMO_MODEL_ID}",
            "train_data": {"img_dir_path": "train_data/images", "labels_file": "train_data/labels.txt"},
            "num_epochs": num_epochs,
            "learning_rate": 0.001,
        },
    }


def _trainings(probe: _Probe, image: bytes) -> List[Figure]:
    runtime = probe.runtime
    status, _ = runtime.http("POST", TRAIN_ROUTE, _train_body("forever", 2**63 - 1))
    probe.row("train num_epochs 2^63-1", str(status))
    rss = probe.rss_mib()
    quiet, _ = _predict_latencies(probe, image, 20)
    accepted, statuses = [], []
    for n in range(TRAININGS_AT_ONCE):
        status, job = runtime.http("POST", TRAIN_ROUTE, _train_body(f"busy_{n}", 100_000))
        statuses.append(str(status))
        if status == 200:
            accepted.append(job["training_id"])
    time.sleep(SETTLE_S)
    busy, _ = _predict_latencies(probe, image, 20)
    rss_training = probe.rss_mib()
    for training_id in accepted:
        runtime.http("DELETE", f"/management/trainings?training_id={training_id}")
    time.sleep(SETTLE_S)
    rss_after = probe.rss_mib()
    busy_ms = statistics.median(busy) * 1000 if busy else float("nan")
    probe.row(f"{TRAININGS_AT_ONCE} trainings at once, then cancelled", ",".join(statuses),
              rss_training - rss, seconds=None,
              note=f"{len(accepted)} accepted; predict p50 {busy_ms:.1f} ms "
              f"(idle {statistics.median(quiet) * 1000:.1f}); RSS after cancel "
              f"{rss_after - rss:+.0f} MiB")
    return [
        Figure(GROUP, "RSS held after cancelling the trainings", rss_after - rss, "MiB",
               details={"while training": round(rss_training - rss, 1)}),
    ]


def _odd_requests(probe: _Probe, image: bytes) -> None:
    runtime = probe.runtime
    inputs = base64.b64encode(image).decode()
    probe.row("mm-model-id of 300 characters",
              probe.status(probe.predict, image, model_id="m" * 300, timeout=30))
    status, _ = runtime.http("POST", HTTP_PREDICT_PATH, {"model_id": "m" * 100_000, "inputs": inputs})
    probe.row("HTTP model_id of 100000 characters", str(status))
    for threshold in ("0.5", True):
        status, _ = runtime.http("POST", HTTP_PREDICT_PATH, {
            "model_id": DEMO_MODEL_ID, "inputs": inputs, "parameters": {"threshold": threshold}})
        probe.row(f"HTTP threshold {json.dumps(threshold)}", str(status))
    rss = probe.rss_mib()
    started = time.monotonic()
    try:
        status, _ = runtime.http("POST", HTTP_PREDICT_PATH, {"model_id": DEMO_MODEL_ID, "inputs": "A" * (64 << 20)})
    except OSError as err:  # the server closed the connection while the body was on its way
        status = f"connection closed ({err})"
    probe.row("HTTP body of 64 MiB", str(status), probe.rss_mib() - rss, seconds=time.monotonic() - started)
    # First Party
    from caikit.runtime.protobufs import model_runtime_pb2

    call = probe.channel.unary_unary(
        "/mmesh.ModelRuntime/predictModelSize",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=model_runtime_pb2.PredictModelSizeResponse.FromString,
    )
    request = model_runtime_pb2.PredictModelSizeRequest(modelId="x", modelPath="/etc")
    try:
        answer = f"OK, size {call(request, timeout=60).sizeInBytes}"
    except grpc.RpcError as err:
        answer = err.code().name
    probe.row("ModelRuntime predictModelSize /etc", answer)


def _files_outside_models(root: pathlib.Path) -> Dict[str, float]:
    """Path -> mtime of every file under ``root`` but outside the runtime's models/."""
    found = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if relative.parts[:2] == ("work", "models") or path.name in ("runtime.log", "model.zip"):
            continue
        if path.is_file():
            found[str(relative)] = path.stat().st_mtime
    return found


def probe_runtime(quick: bool) -> tuple:
    """(figures, table rows) of every probe against one fresh runtime."""
    image, _ = render_example("cat")
    with tempfile.TemporaryDirectory(prefix="ccv-bench-front-door-") as temporary:
        root = pathlib.Path(temporary)
        save_models(root / "saved", {DEMO_MODEL_ID: "tiny"})
        with serving(root / "work", root / "saved") as runtime:
            with grpc.insecure_channel(f"{HOST}:{runtime.ports['grpc']}") as channel:
                probe = _Probe(runtime, channel)
                probe.predict(image, 0.0, timeout=60)  # loaded and warm
                before = _files_outside_models(root)
                figures = _unknown_ids(probe, image, UNKNOWN_IDS[quick])
                figures += _path_ids(probe, image, PATH_SPELLINGS[quick], root)
                figures += _streams(probe, image, STREAM_PREDICTIONS[quick])
                _odd_requests(probe, image)
                figures += _trainings(probe, image)
                alive = runtime.process.poll() is None
                changed = _files_outside_models(root).items() - before.items()
            probe.row("after every probe", "alive" if alive else f"exited {runtime.process.returncode}",
                      note=f"{len(changed)} files added or changed outside models/ "
                      "(the runtime's log and the probe's zip excluded)")
    return figures, probe.rows


def run(quick: bool) -> List[Figure]:
    """The figures of python -m bench (this checkout's runtime)."""
    figures, rows = probe_runtime(quick)
    print(render_rows(rows))
    return figures


def render_rows(rows: Sequence[Dict[str, str]]) -> str:
    """A markdown table of the probes."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[name] for name in header) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer ids and predictions")
    parser.add_argument("--launcher", type=pathlib.Path,
                        help="launch_vision_runtime.py of the checkout to probe (default: this one)")
    args = parser.parse_args(argv)
    if args.launcher:
        runtime_harness.LAUNCHER = args.launcher.resolve()
    figures, rows = probe_runtime(args.quick)
    print(render_rows(rows))
    for figure in figures:
        print(f"{figure.name}: {figure.value:.1f} {figure.unit} {figure.details or ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
