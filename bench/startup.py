"""Time to servable and cold start, and where start-up time goes.

* **Servable**: a training through the runtime (HTTP train call, 2 epochs on 32 images), its
  status polled every 10 ms; from the first COMPLETED seen to the first OK gRPC predict on the
  new model, retried every 10 ms. Baseline of the same round: loading that saved model in this
  process and predicting once.
* **Cold start**: launch_vision_runtime.py (models present, no --purge_dirs) until a gRPC predict
  on my_model answers OK. Baseline of the same round: a bare ``python -c "import torch"``.
* **Phases**: bench/startup_phases.py does the launcher's work phase by phase in a fresh process.
"""

# Standard
from contextlib import closing
from dataclasses import dataclass
from typing import Dict, List
import json
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.parse

# Third Party
import grpc

# Local
from common import HOST
from bench.figures import Figure, Spread, Target, interleaved, paired, ratio
from example_tools.load_generator import (
    DEFAULT_TRAIN_PARAMETERS,
    FINISHED_STATES,
    TRAIN_PATH,
    TRAININGS_PATH,
    http_json,
)
from bench.served_models import DEMO_MODEL_ID, save_models, serving
from caikit_computer_vision.modules.object_detection import TransformersObjectDetector
from example_tools.synthetic_data import render_example
from example_tools.runtime_harness import (
    PREDICT_METHOD,
    REPO_ROOT,
    encode_predict_request,
    free_port,
    prepare_work_dir,
    runtime_env,
    start_runtime,
)

GROUP = "startup"
SERVABLE_TARGET_S = Target(2.0)
COLD_START_TARGET_S = Target(8.0)
POLL_INTERVAL_S = 0.01
TRAIN_EPOCHS = 2
TIMEOUT_S = 180.0
# A channel that retries a refused connection within milliseconds (gRPC's default backoff
# starts at 1 s), so "ready" is seen when it happens. (Not grpc.min_reconnect_backoff_ms: that
# is also the connect timeout, and 10 ms is too short for a handshake on a busy machine.)
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 10),
    ("grpc.max_reconnect_backoff_ms", 50),
]


@dataclass(frozen=True)
class Plan:
    servable_rounds: int
    cold_start_rounds: int


PLANS = {False: Plan(servable_rounds=5, cold_start_rounds=3), True: Plan(1, 1)}


def run(quick: bool) -> List[Figure]:
    """Time to servable, cold start, and the start-up phases."""
    plan = PLANS[quick]
    image, _ = render_example("cat")
    with tempfile.TemporaryDirectory(prefix="ccv-bench-startup-") as temporary:
        work = pathlib.Path(temporary)
        save_models(work / "saved", {DEMO_MODEL_ID: "tiny"})
        figures = _servable_figures(work, image, plan)
        figures += _cold_start_figures(work, image, plan)
    return figures


# -- time to servable --------------------------------------------------------------------------


def _servable_figures(work: pathlib.Path, image: bytes, plan: Plan) -> List[Figure]:
    request = encode_predict_request(image)
    with serving(work / "runtime", work / "saved") as runtime:
        http_url = f"http://{HOST}:{runtime.ports['http']}"
        with grpc.insecure_channel(f"{HOST}:{runtime.ports['grpc']}") as channel:
            predict = _predict_call(channel)
            trained: List[str] = []

            def servable() -> float:
                model_id = f"servable_{len(trained)}"
                trained.append(model_id)
                completed_at = _train(http_url, model_id)
                while True:
                    try:
                        predict(request, metadata=[("mm-model-id", model_id)])
                        return time.monotonic() - completed_at
                    except grpc.RpcError as err:
                        if err.code() != grpc.StatusCode.NOT_FOUND:
                            raise
                    if time.monotonic() - completed_at > TIMEOUT_S:
                        raise RuntimeError(
                            f"{model_id} not servable {TIMEOUT_S:.0f} s after training"
                        )
                    time.sleep(POLL_INTERVAL_S)

            def load_in_process() -> float:
                model_dir = runtime.work_dir / "models" / trained[-1]
                started = time.monotonic()
                TransformersObjectDetector.load(str(model_dir)).run(image)
                return time.monotonic() - started

            # The baseline loads the newest trained model: the first round trains before it.
            seconds = interleaved(
                {"servable": servable, "in-process": load_in_process},
                plan.servable_rounds,
                warm_up_rounds=0,
            )
    load_ratio = Spread.of(paired(seconds["in-process"], seconds["servable"], ratio)).p50
    in_process_s = Spread.of(seconds["in-process"]).p50
    return [
        Figure.of_samples(
            GROUP,
            "training COMPLETED -> first predict OK",
            seconds["servable"],
            "s",
            target=SERVABLE_TARGET_S,
            note=f"polled every {POLL_INTERVAL_S * 1000:.0f} ms; {load_ratio:.1f}x an in-process "
            f"load + predict ({in_process_s * 1000:.0f} ms); {plan.servable_rounds} trainings",
            details={"in_process_load_predict_s": in_process_s},
        )
    ]


def _train(http_url: str, model_id: str) -> float:
    """Train ``model_id`` through the runtime; return when COMPLETED was first seen (monotonic)."""
    parameters = {**DEFAULT_TRAIN_PARAMETERS, "num_epochs": TRAIN_EPOCHS}
    answer = http_json(http_url, TRAIN_PATH, {"model_name": model_id, "parameters": parameters})
    query = urllib.parse.urlencode({"training_id": answer["training_id"]})
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        status = http_json(http_url, f"{TRAININGS_PATH}?{query}")
        if status["state"] in FINISHED_STATES:
            if status["state"] != "COMPLETED":
                raise RuntimeError(f"training {model_id} ended {status['state']}: {status}")
            return time.monotonic()
        time.sleep(POLL_INTERVAL_S)
    raise RuntimeError(f"training {model_id} not finished after {TIMEOUT_S:.0f} s")


def _predict_call(channel: grpc.Channel):
    return channel.unary_unary(
        PREDICT_METHOD,
        request_serializer=lambda message: message,
        response_deserializer=lambda message: message,
    )


# -- cold start and its phases -----------------------------------------------------------------


def _cold_start_figures(work: pathlib.Path, image: bytes, plan: Plan) -> List[Figure]:
    work_dir = work / "cold"
    prepare_work_dir(work_dir, work / "saved" / DEMO_MODEL_ID)
    # Encoded before any clock starts (the first encoding dumps and compiles the protos).
    request = encode_predict_request(image)
    phases: List[Dict[str, float]] = []

    def cold_start() -> float:
        ports = {name: free_port() for name in ("grpc", "http", "metrics")}
        with closing(
            grpc.insecure_channel(f"{HOST}:{ports['grpc']}", options=FAST_RECONNECT)
        ) as channel:
            predict = _predict_call(channel)

            def ready(_ports: Dict[str, int]) -> bool:
                try:
                    predict(
                        request,
                        metadata=[("mm-model-id", DEMO_MODEL_ID)],
                        wait_for_ready=True,
                        timeout=1.0,
                    )
                    return True
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise
                    return False

            started = time.monotonic()
            runtime = start_runtime(work_dir, [], ports=ports, ready_check=ready)
            elapsed = time.monotonic() - started
            runtime.stop()
        return elapsed

    def bare_torch() -> float:
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import torch"], check=True, cwd=REPO_ROOT)
        return time.monotonic() - started

    def phased() -> float:
        ports = {name: free_port() for name in ("grpc", "http", "metrics")}
        started = time.monotonic()
        output = subprocess.run(
            [sys.executable, "-m", "bench.startup_phases", str(work_dir)],
            check=True,
            cwd=REPO_ROOT,
            env=runtime_env(ports),
            stdout=subprocess.PIPE,
        ).stdout
        marks = json.loads(output.splitlines()[-1])["marks"]
        phases.append(
            {
                phase: at - previous_at
                for (phase, at), previous_at in zip(marks, [started] + [at for _, at in marks])
            }
        )
        return marks[-1][1] - started

    seconds = interleaved(
        {"cold start": cold_start, "bare import torch": bare_torch, "phases": phased},
        plan.cold_start_rounds,
        warm_up_rounds=0,
    )
    bare_s = Spread.of(seconds["bare import torch"]).p50
    cold_ratio = Spread.of(paired(seconds["bare import torch"], seconds["cold start"], ratio)).p50
    phases_s = Spread.of(seconds["phases"]).p50
    figures = [
        Figure.of_samples(
            GROUP,
            "cold start -> gRPC predict OK",
            seconds["cold start"],
            "s",
            target=COLD_START_TARGET_S,
            note=f"launcher with my_model present; {cold_ratio:.1f}x a bare python -c "
            f"'import torch' ({bare_s:.2f} s); {plan.cold_start_rounds} rounds",
            details={"bare_import_torch_s": bare_s},
        )
    ]
    for phase in phases[0]:
        spent = [round_phases[phase] for round_phases in phases]
        figures.append(
            Figure.of_samples(
                GROUP,
                f"phase: {phase}",
                spent,
                "s",
                note=f"{100 * Spread.of(spent).p50 / phases_s:.0f}% of {phases_s:.2f} s to built "
                "servers",
            )
        )
    return figures
