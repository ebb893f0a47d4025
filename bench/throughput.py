"""Throughput: predictions per second with 1, 2, 4 and 8 concurrent gRPC clients.

The baseline is the best sequential loop of ``module.run`` in this process, with torch on one
thread and on two; every round measures it again beside each gRPC
window. The clients are example_tools/load_generator.py's ``PredictClients`` (a thread and a channel each),
on this machine like the server. The same clients against the gRPC floor (bench/grpc_floor.py)
show the most that any Python gRPC service reaches here.

Settings are caikit config overrides in the runtime's environment, measured in the same rounds:
dynamic batching off (``caikit_computer_vision.predict_batch_size`` 1), torch's intra-op threads
fixed at one (``caikit_computer_vision.torch_threads`` 1, where 0 follows the load) and the
server's thread pool (``runtime.server_thread_pool_size``; 100 is caikit's default).
"""

# Standard
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple
import pathlib
import tempfile
import time

# Third Party
import torch

# Local
from common import HOST
from bench.figures import Figure, Spread, Target, interleaved, paired, ratio
from bench.grpc_floor import floor_server
from example_tools.load_generator import PredictClients
from bench.served_models import (
    ARCHITECTURE_OF,
    DEMO_MODEL_ID,
    YOLOS_TINY_MODEL_ID,
    save_models,
    serving,
)
from caikit_computer_vision.modules.object_detection import TransformersObjectDetector
from example_tools.synthetic_data import render_example
from example_tools.runtime_harness import free_port

GROUP = "throughput"
TARGET = Target(0.9, at_least=True)
DEFAULT_SETTING = "runtime_config.yaml"
# Each: the runtime's environment (caikit config overrides) on top of runtime_config.yaml.
SETTINGS: Dict[str, Dict[str, str]] = {
    DEFAULT_SETTING: {},
    "predict_batch_size 1": {"CAIKIT_COMPUTER_VISION_PREDICT_BATCH_SIZE": "1"},
    "torch_threads 1": {"CAIKIT_COMPUTER_VISION_TORCH_THREADS": "1"},
    "server_thread_pool_size 100": {"RUNTIME_SERVER_THREAD_POOL_SIZE": "100"},
}
IN_PROCESS_THREADS = (1, 2)
FLOOR = "gRPC floor"


@dataclass(frozen=True)
class Plan:
    """What one model is measured with."""

    concurrency: Tuple[int, ...]
    settings: Tuple[str, ...]
    rounds: int
    window_s: float


PLANS = {
    False: {
        DEMO_MODEL_ID: Plan((1, 2, 4, 8), tuple(SETTINGS) + (FLOOR,), rounds=4, window_s=1.5),
        YOLOS_TINY_MODEL_ID: Plan((1, 2, 4, 8), (DEFAULT_SETTING,), rounds=3, window_s=3.0),
    },
    True: {DEMO_MODEL_ID: Plan((1, 8), (DEFAULT_SETTING, FLOOR), rounds=2, window_s=0.4)},
}


def run(quick: bool) -> List[Figure]:
    """Requests/s of each concurrency and setting, against in-process sequential best."""
    image, _ = render_example("cat")
    figures = []
    for model_id, plan in PLANS[quick].items():
        with tempfile.TemporaryDirectory(prefix="ccv-bench-throughput-") as temporary:
            work = pathlib.Path(temporary)
            # serving() needs my_model in any case; the model measured may be another.
            architectures = {DEMO_MODEL_ID: "tiny", model_id: ARCHITECTURE_OF[model_id]}
            module = save_models(work / "saved", architectures)[model_id]
            with ExitStack() as stack:
                variants = {
                    _in_process_name(threads): _in_process_rate(module, image, threads, plan)
                    for threads in IN_PROCESS_THREADS
                }
                for index, setting in enumerate(plan.settings):
                    if setting == FLOOR:
                        port = free_port()
                        answer = module.run(image).to_proto().SerializeToString()
                        stack.enter_context(floor_server(port, {model_id: answer}))
                    else:
                        runtime = stack.enter_context(
                            serving(work / f"runtime-{index}", work / "saved", SETTINGS[setting])
                        )
                        port = runtime.ports["grpc"]
                    for clients in plan.concurrency:
                        variants[_grpc_name(setting, clients)] = _grpc_rate(
                            f"{HOST}:{port}", image, model_id, clients, plan
                        )
                rates = interleaved(variants, plan.rounds)
        figures += _figures(ARCHITECTURE_OF[model_id], rates, plan)
    return figures


def _in_process_name(threads: int) -> str:
    return f"in-process, {threads} thread(s)"


def _grpc_name(setting: str, clients: int) -> str:
    return f"{clients} client(s), {setting}"


def _in_process_rate(
    module: TransformersObjectDetector, image: bytes, threads: int, plan: Plan
) -> Callable[[], float]:
    def measure() -> float:
        configured = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < plan.window_s:
                module.run(image)
                calls += 1
            return calls / (time.perf_counter() - started)
        finally:
            torch.set_num_threads(configured)

    return measure


def _grpc_rate(
    address: str, image: bytes, model_id: str, clients: int, plan: Plan
) -> Callable[[], float]:
    def measure() -> float:
        load = PredictClients(address, image, clients, model_id=model_id)
        load.start()
        started = time.monotonic()
        time.sleep(plan.window_s)
        ended = time.monotonic()
        calls = load.stop()
        failed = [call for call in calls if call.status != "OK"]
        if failed:
            raise RuntimeError(f"{len(failed)} predictions failed, e.g. {failed[0]}")
        return sum(started <= call.ended <= ended for call in calls) / (ended - started)

    return measure


def _figures(architecture: str, rates: Dict[str, List[float]], plan: Plan) -> List[Figure]:
    in_process = [rates[_in_process_name(threads)] for threads in IN_PROCESS_THREADS]
    best_in_process = [max(per_round) for per_round in zip(*in_process)]
    per_threads = " / ".join(f"{Spread.of(rates_).p50:.1f}" for rates_ in in_process)
    figures = [
        Figure.of_samples(
            GROUP,
            f"in-process sequential best ({architecture})",
            best_in_process,
            "req/s",
            note=f"best of torch {' / '.join(map(str, IN_PROCESS_THREADS))} thread(s) in each "
            f"round: {per_threads} req/s; {plan.window_s:g} s windows, {plan.rounds} rounds",
        )
    ]
    for setting in plan.settings:
        ratios = {
            clients: paired(best_in_process, rates[_grpc_name(setting, clients)], ratio)
            for clients in plan.concurrency
        }
        served = {
            clients: Spread.of(rates[_grpc_name(setting, clients)]).p50
            for clients in plan.concurrency
        }
        best = max(plan.concurrency, key=lambda clients: Spread.of(ratios[clients]).p50)
        label = "" if setting in (DEFAULT_SETTING, FLOOR) else f", {setting}"
        figures.append(
            Figure.of_samples(
                GROUP,
                f"{'floor' if setting == FLOOR else 'gRPC'} / in-process best "
                f"({architecture}{label})",
                ratios[best],
                "x",
                target=TARGET if setting == DEFAULT_SETTING else None,
                note=f"{served[best]:.1f} req/s at {best} client(s), the best; by clients "
                + ", ".join(
                    f"{clients}: {served[clients]:.1f} req/s {Spread.of(ratios[clients]).p50:.2f}x"
                    for clients in plan.concurrency
                ),
                details={
                    f"req_per_s_{clients}_clients": served[clients] for clients in plan.concurrency
                },
            )
        )
    return figures
