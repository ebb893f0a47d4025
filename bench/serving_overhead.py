"""Serving overhead: gRPC and HTTP predict against in-process ``module.run``, and the gRPC floor.

For each model (the tiny demo model and one of yolos-tiny's size), every round makes four calls
on the same 64 x 64 JPEG, in rotating order: ``module.run`` in this process, gRPC predict and
HTTP predict to the example runtime, and gRPC predict to the floor (bench/grpc_floor.py: a plain
grpcio server in its own process that answers with that model's result, precomputed). Overhead
is the per-round difference to ``module.run``; caikit's overhead above the floor is that minus
the floor call of the same round.
"""

# Standard
from dataclasses import dataclass
from typing import Callable, Dict, List
import pathlib
import tempfile

# Local
from bench.figures import Figure, Spread, Target, difference, interleaved_rounds, paired, ratio
from bench.grpc_floor import floor_server
from bench.served_models import (
    ARCHITECTURE_OF,
    DEMO_MODEL_ID,
    YOLOS_TINY_MODEL_ID,
    HttpPredict,
    grpc_predict,
    save_models,
    serving,
)
from example_tools.synthetic_data import render_example
from example_tools.runtime_harness import free_port

GROUP = "serving_overhead"
MS = 1000.0

# Targets of the issue: overhead p50 on the tiny model, ratio on the yolos-tiny-size one.
TINY_OVERHEAD_TARGET_MS = Target(1.0)
YOLOS_TINY_RATIO_TARGET = Target(1.15)


@dataclass(frozen=True)
class Plan:
    """How many rounds to time one model for (each round: one call of each of four paths)."""

    rounds: int
    warm_up_rounds: int


# The quick run leaves out the yolos-tiny-size model: building, saving and warming it up alone
# takes longer than the rest of the quick serving figures.
PLANS = {
    False: {DEMO_MODEL_ID: Plan(600, 20), YOLOS_TINY_MODEL_ID: Plan(20, 2)},
    True: {DEMO_MODEL_ID: Plan(100, 10)},
}


def run(quick: bool) -> List[Figure]:
    """Serving overhead figures of each model of the plan (both, in the full run)."""
    plans = PLANS[quick]
    image, _ = render_example("cat")
    with tempfile.TemporaryDirectory(prefix="ccv-bench-serving-") as temporary:
        work = pathlib.Path(temporary)
        modules = save_models(
            work / "saved", {model_id: ARCHITECTURE_OF[model_id] for model_id in plans}
        )
        responses = {
            model_id: module.run(image).to_proto().SerializeToString()
            for model_id, module in modules.items()
        }
        floor_port = free_port()
        with serving(work / "runtime", work / "saved") as runtime, floor_server(
            floor_port, responses
        ), grpc_predict(runtime.ports["grpc"]) as caikit_grpc, grpc_predict(
            floor_port
        ) as floor_grpc:
            http = HttpPredict(runtime.ports["http"])
            try:
                figures = []
                for model_id, plan in plans.items():
                    paths = {
                        "in-process": lambda m=modules[model_id]: m.run(image),
                        "gRPC": lambda m=model_id: caikit_grpc(image, model_id=m),
                        "HTTP": lambda m=model_id: http(image, model_id=m),
                        "floor": lambda m=model_id: floor_grpc(image, model_id=m),
                    }
                    figures += overhead_figures(model_id, paths, plan)
            finally:
                http.close()
    return figures


def overhead_figures(
    model_id: str, paths: Dict[str, Callable[[], object]], plan: Plan
) -> List[Figure]:
    """Time the four paths interleaved and turn the rounds into figures."""
    seconds = interleaved_rounds(paths, plan.rounds, plan.warm_up_rounds)
    architecture = ARCHITECTURE_OF[model_id]
    in_process = seconds["in-process"]
    grpc_overhead = paired(in_process, seconds["gRPC"], difference)
    above_floor = paired(grpc_overhead, seconds["floor"], _above)
    grpc_latency = Spread.of(seconds["gRPC"]).scaled(MS)
    floor_ratio = Spread.of(grpc_overhead).p50 / Spread.of(seconds["floor"]).p50
    http_ratio = Spread.of(paired(in_process, seconds["HTTP"], ratio)).p50

    def figure(name: str, samples: List[float], unit: str, **kwargs) -> Figure:
        scale = MS if unit == "ms" else 1.0
        return Figure.of_samples(GROUP, f"{name} ({architecture})", samples, unit, scale, **kwargs)

    return [
        figure("in-process run", in_process, "ms", note=f"module.run, {plan.rounds} rounds"),
        figure(
            "gRPC overhead p50",
            grpc_overhead,
            "ms",
            target=TINY_OVERHEAD_TARGET_MS if model_id == DEMO_MODEL_ID else None,
            note=f"gRPC predict - module.run, paired per round; gRPC p50 {grpc_latency.p50:.2f} "
            f"ms, p99 {grpc_latency.p99:.2f} ms",
            details={"grpc_p50_ms": grpc_latency.p50, "grpc_p99_ms": grpc_latency.p99},
        ),
        figure(
            "gRPC / in-process",
            paired(in_process, seconds["gRPC"], ratio),
            "x",
            target=YOLOS_TINY_RATIO_TARGET if model_id == YOLOS_TINY_MODEL_ID else None,
            note="ratio of paired rounds",
        ),
        figure(
            "HTTP overhead p50",
            paired(in_process, seconds["HTTP"], difference),
            "ms",
            note=f"JSON + base64, kept-alive connection, - module.run; {http_ratio:.2f}x",
        ),
        figure("gRPC floor", seconds["floor"], "ms", note="plain grpcio server, fixed answer"),
        figure(
            "caikit overhead above floor",
            above_floor,
            "ms",
            note=f"(gRPC - module.run) - floor, paired; overhead {floor_ratio:.1f}x the floor",
        ),
    ]


def _above(overhead: float, floor: float) -> float:
    """What caikit adds to a call beyond what the floor server costs, in one round."""
    return overhead - floor
