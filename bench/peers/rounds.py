"""The runtime against the servers a user would pick instead, serving the same model directories.

    .venv/bin/python -m bench --only peers            # about 25 minutes on 2 cores
    .venv/bin/python -m bench --only peers --quick    # about 2.5 minutes: demo model, one round
    .venv/bin/python -m bench.peers.rounds --quick --servers ours fastapi   # some servers only
    .venv/bin/python -m bench.peers.rounds --server-env OMP_WAIT_POLICY=PASSIVE  # see below
    .venv/bin/python -m bench.peers.rounds --launcher /tmp/before/launch_vision_runtime.py

Servers, each on free ports of 127.0.0.1 (checked: every listening socket of its process tree),
each in a process group of its own and always stopped: our runtime (gRPC and HTTP, through
bench/served_models.py ``serving``); a plain FastAPI and a plain grpcio server (in .venv);
KServe's ModelServer (REST v1 and gRPC v2), LitServe (without and with ``max_batch_size 8``) and
PyTriton (the Triton server of its wheel, dynamic batching, CPU), each peer in a venv of its own
built from bench/peer_requirements/ (bench/peers/venvs.py; reused while its requirements are
unchanged). Every peer runs ``caikit_computer_vision.detection.Detector``, the runtime's model
call without caikit, on the ``hf_model/`` of the same saved models as the runtime, with torch's
default threads.

Correctness first: once started, every server answers 3 images (64x64, 640x480 and 300x200
JPEG) for every model, and every answer is compared with ``Detector.detect`` in this process
(labels and boxes exactly, scores to 1e-4); a server that differs is printed and its figures are
marked.

Load: for each protocol a load process of its own (bench/peers/load.py, in the venv of that
protocol's client) runs 1 or 8 client threads, each with its own connection or channel, sending
the same JPEG back to back; requests/s and p50 latency are of the calls that end within a window
after a warm-up (a window stretches until as many calls as clients have ended, for servers
slower than it). The rate is timed from each client's first to its last end in the window
(``load.completion_rate``), not counted over the window: a count steps by one call, 2.5 % of a
yolos-tiny-size row. Rounds: every server is measured once per round, alone: the others are paused
(SIGSTOP to their process trees; LitServe's loop takes 5 to 12 % of a core while idle), and the
order rotates from round to round. A resumed server first gets a few seconds of load that is
not counted. Figures are medians over the rounds. The issue's three comparisons are each the
median of per-round ratios (two figures of the same round share its phase of the machine):
ours gRPC / best peer in requests/s (>= 1) and in p50 latency (<= 1), the best peer being the
one with the highest median requests/s in that row, and ours HTTP / ours gRPC (>= 0.9; measured
one after the other, cell by cell, in our block of the round). Idle RSS is of each server's
whole process tree.

Torch's OpenMP threads spin for a while after each operation (libgomp's default wait policy).
On 2 cores, a peer running torch on 2 threads in another process than the one that answers the
client (LitServe), or beside an event loop that must run to answer (KServe), then has calls of
about 250 ms that ``OMP_WAIT_POLICY=PASSIVE`` in the servers' environment removes (KServe's
demo-model rate 12 to 66 req/s by default, 250 to 309 with it, in smoke runs of 2026-12-05 on
a shared VM). ``--server-env`` measures with such a setting, ours included.

The runtime prepares images by a pixel table (bit for bit the processor's values) and runs its
forward passes as a checked TorchScript graph (``trace_forward_pass``); the peers call
transformers' processor and run the model eagerly, as a user's handler would.
``--server-env BENCH_PEERS_SPEEDUPS=1`` gives every peer both of the runtime's speed-ups.

Full run: the servers' starts and checks (about 2 minutes), then 3 rounds of 9 server
protocols x 2 models (the demo model with 3 s windows, the yolos-tiny-size model with 7 s
windows) x 2 images x 1 and 8 clients (about 7.5 minutes a round): about 25 minutes on 2 cores,
plus the peers' venvs the first time (a few minutes; pip's logs in bench/.peer_venvs/).
"""

# Standard
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple
import argparse
import io
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

# Third Party
from PIL import Image

# Local
from bench.figures import Figure, Target, render_table
from bench.peers import venvs
from bench.peers.processes import (
    check_loopback_only,
    pause,
    resume,
    running_server,
    tree_rss_mib,
)
from bench.peers.protocol import Answer, answer_rows, answers_differ
from bench.served_models import (
    ARCHITECTURE_OF,
    DEMO_MODEL_ID,
    YOLOS_TINY_MODEL_ID,
    save_models,
    serving,
)
from caikit_computer_vision.detection import Detector
from example_tools import runtime_harness
from example_tools.runtime_harness import REPO_ROOT, free_port
from example_tools.synthetic_data import render_example

GROUP = "peers"
# The targets: ours gRPC at least the best peer's requests/s, our p50 latency at most
# its, ours HTTP within 10 % of ours gRPC.
TARGET = Target(1.0, at_least=True)
P50_TARGET = Target(1.0)
HTTP_TARGET = Target(0.9, at_least=True)
# The untrained demo models score below the runtime's default threshold (0.5): with this one,
# every answer carries a detection to compare and to encode.
THRESHOLD = 0.01
SCORE_TOLERANCE = 1e-4
CLIENTS = (1, 8)
IMAGES = ("64x64", "640x480")
READY_TIMEOUT_S = 240.0
OURS = "ours"


@dataclass(frozen=True)
class Variant:
    """A column: one protocol of one server."""

    name: str
    protocol: str  # a client of bench/peers/load.py
    port: str  # which of the server's ports it talks to


@dataclass(frozen=True)
class Server:
    """One server process: how to start it (a module of bench/peers/ in a venv) and its variants."""

    name: str
    venv: Optional[str]  # a peer of bench/peers/venvs.py; None: .venv (this interpreter)
    module: Optional[str]  # None: our runtime
    variants: Tuple[Variant, ...]
    ports: Tuple[str, ...] = ("http",)
    extra_args: Tuple[str, ...] = ()


SERVERS = (
    Server(
        OURS,
        None,
        None,
        (Variant("ours gRPC", "ours-grpc", "grpc"), Variant("ours HTTP", "ours-http", "http")),
    ),
    Server(
        "fastapi", None, "bench.peers.serve_fastapi", (Variant("plain FastAPI", "fastapi", "http"),)
    ),
    Server(
        "grpcio",
        None,
        "bench.peers.serve_grpcio",
        (Variant("plain grpcio", "grpcio", "grpc"),),
        ports=("grpc",),
    ),
    Server(
        "kserve",
        "kserve",
        "bench.peers.serve_kserve",
        (
            Variant("KServe REST v1", "kserve-rest-v1", "http"),
            Variant("KServe gRPC v2", "kserve-grpc-v2", "grpc"),
        ),
        ports=("http", "grpc"),
    ),
    Server(
        "litserve",
        "litserve",
        "bench.peers.serve_litserve",
        (Variant("LitServe", "litserve", "http"),),
    ),
    Server(
        "litserve-batch",
        "litserve",
        "bench.peers.serve_litserve",
        (Variant("LitServe batch 8", "litserve", "http"),),
        extra_args=("--max-batch-size", "8"),
    ),
    Server(
        "pytriton",
        "pytriton",
        "bench.peers.serve_pytriton",
        (Variant("Triton, dynamic batching", "triton-grpc", "grpc"),),
        ports=("http", "grpc"),
    ),
)
# Our runtime from another checkout (--launcher), measured beside the rest for before/after.
BEFORE = Server(
    "ours-before",
    None,
    None,
    (Variant("before gRPC", "ours-grpc", "grpc"), Variant("before HTTP", "ours-http", "http")),
)
OUR_VARIANTS = ("ours gRPC", "ours HTTP", "before gRPC", "before HTTP")
# The launcher of BEFORE, set by --launcher.
_before_launcher: Optional[pathlib.Path] = None


@dataclass(frozen=True)
class Window:
    warm_up_s: float
    window_s: float


@dataclass(frozen=True)
class Plan:
    models: Tuple[str, ...]
    rounds: int
    windows: Dict[str, Window]
    # Load not counted when a server resumes: the first seconds after a start or a pause have
    # calls of 100 to 250 ms here that later ones do not (LitServe most).
    block_warm_up_s: float


PLANS = {
    False: Plan(
        (DEMO_MODEL_ID, YOLOS_TINY_MODEL_ID),
        rounds=3,
        windows={DEMO_MODEL_ID: Window(0.5, 3.0), YOLOS_TINY_MODEL_ID: Window(0.5, 7.0)},
        block_warm_up_s=2.0,
    ),
    True: Plan(
        (DEMO_MODEL_ID,),
        rounds=1,
        windows={DEMO_MODEL_ID: Window(0.3, 1.0)},
        block_warm_up_s=1.0,
    ),
}

# (model, image, clients)
Cell = Tuple[str, str, int]


@dataclass
class Results:
    """Everything measured, by variant."""

    # [variant][cell] -> requests/s (p50 latency) in each round; None where a round failed
    rates: Dict[str, Dict[Cell, List[Optional[float]]]] = field(default_factory=dict)
    p50_ms: Dict[str, Dict[Cell, List[Optional[float]]]] = field(default_factory=dict)
    # [server] -> RSS of its process tree once started and checked; after each round's load
    idle_rss_mib: Dict[str, float] = field(default_factory=dict)
    rss_after_load_mib: Dict[str, List[float]] = field(default_factory=dict)
    start_s: Dict[str, float] = field(default_factory=dict)
    mismatches: Dict[str, List[str]] = field(default_factory=dict)
    failures: Dict[str, List[str]] = field(default_factory=dict)


# -- the inputs ----------------------------------------------------------------------------------


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_images(directory: pathlib.Path) -> Dict[str, pathlib.Path]:
    """The load's two JPEGs (64x64, 640x480) and a third for the check (300x200)."""
    small, _ = render_example("cat")
    large = Image.open(io.BytesIO(render_example("cat", image_size=640)[0])).crop((0, 80, 640, 560))
    other = Image.open(io.BytesIO(render_example("dog", image_size=300)[0])).crop((0, 50, 300, 250))
    images = {"64x64": small, "640x480": _jpeg(large), "300x200": _jpeg(other)}
    paths = {}
    for name, data in images.items():
        paths[name] = directory / f"{name}.jpg"
        paths[name].write_bytes(data)
    return paths


def expected_answers(
    saved: pathlib.Path, models: Sequence[str], images: Dict[str, pathlib.Path]
) -> Dict[str, List[Answer]]:
    """``Detector.detect`` of each check image, one at a time, in this process."""
    expected = {}
    for model in models:
        detector = Detector.from_hf_dir(str(saved / model / "hf_model"))
        expected[model] = [
            answer_rows(detector.detect([path.read_bytes()], THRESHOLD)[0])
            for path in images.values()
        ]
    return expected


# -- the load processes --------------------------------------------------------------------------


class LoadProcess:
    """bench/peers/load.py in ``python``, for one protocol and address."""

    def __init__(self, python: str, protocol: str, address: str, env: Dict[str, str]):
        self.protocol = protocol
        self.process = subprocess.Popen(
            [python, "-m", "bench.peers.load", protocol, address],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.protocol} load process exited ({self.process.poll()})")
        return json.loads(line)

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.process.poll() is None:
                self.process.kill()  # by its own process id
            self.process.wait()


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _python(server: Server, pythons: Dict[str, pathlib.Path]) -> str:
    return sys.executable if server.venv is None else str(pythons[server.venv])


# -- one server's block in a round ---------------------------------------------------------------


@contextmanager
def started(
    server: Server,
    server_env: Dict[str, str],
    pythons: Dict[str, pathlib.Path],
    saved: pathlib.Path,
    models: Sequence[str],
    work: pathlib.Path,
) -> Iterator[Tuple[int, Dict[str, int]]]:
    """(pid, ports) of ``server``, serving every saved model; stopped on exit."""
    if server.module is None:
        default_launcher = runtime_harness.LAUNCHER
        if server is BEFORE:
            runtime_harness.LAUNCHER = _before_launcher
        try:
            with serving(work / server.name, saved, server_env) as runtime:
                runtime_harness.LAUNCHER = default_launcher
                check_loopback_only(server.name, runtime.process.pid)
                yield runtime.process.pid, dict(runtime.ports)
        finally:
            runtime_harness.LAUNCHER = default_launcher
        return
    ports = {name: free_port() for name in server.ports}
    # The first port is --port; a server with HTTP and gRPC takes the gRPC one as --grpc-port.
    argv = [_python(server, pythons), "-m", server.module, "--port", str(ports[server.ports[0]])]
    if len(server.ports) > 1:
        argv += ["--grpc-port", str(ports["grpc"])]
    argv += [f"--model={model}={saved / model / 'hf_model'}" for model in models]
    argv += list(server.extra_args)
    with running_server(
        server.name,
        argv,
        {**_env(), **server_env},
        work / f"{server.name}.log",
        REPO_ROOT,
        list(ports.values()),
        READY_TIMEOUT_S,
    ) as process:
        yield process.pid, ports


@dataclass
class Running:
    """A started server: its process, ports and one load process per variant."""

    server: Server
    pid: int
    loads: Dict[str, LoadProcess]


def start_and_check(
    server: Server,
    pythons: Dict[str, pathlib.Path],
    saved: pathlib.Path,
    images: Dict[str, pathlib.Path],
    expected: Dict[str, List[Answer]],
    plan: Plan,
    results: Results,
    work: pathlib.Path,
    stack: ExitStack,
    server_env: Dict[str, str],
) -> Running:
    """Start ``server`` (stopped when ``stack`` closes), check every variant's answers and
    record the start's time and the idle RSS."""
    began = time.monotonic()
    pid, ports = stack.enter_context(started(server, server_env, pythons, saved, plan.models, work))
    # Closed before the server stops (an ExitStack unwinds last in, first out).
    stack.callback(resume, pid)
    loads = {}
    for variant in server.variants:
        load = LoadProcess(
            _python(server, pythons), variant.protocol, f"127.0.0.1:{ports[variant.port]}", _env()
        )
        stack.callback(load.close)
        loads[variant.name] = load
        for model in plan.models:
            _check(variant.name, load, model, images, expected[model], results)
    results.start_s[server.name] = time.monotonic() - began
    # Models loaded, a first call answered (more sockets may have opened since the start).
    check_loopback_only(server.name, pid)
    results.idle_rss_mib[server.name] = tree_rss_mib(pid)
    return Running(server, pid, loads)


def run_block(
    running: Running, images: Dict[str, pathlib.Path], plan: Plan, results: Results
) -> None:
    """Every cell of every variant of one server, the variants alternating, after a warm-up."""
    for load in running.loads.values():
        load.ask(
            {
                "op": "load",
                "model": DEMO_MODEL_ID,
                "image": str(images[IMAGES[0]]),
                "threshold": THRESHOLD,
                "clients": max(CLIENTS),
                "warm_up_s": 0.0,
                "window_s": plan.block_warm_up_s,
            }
        )
    for index, cell in enumerate(_cells(plan)):
        names = list(running.loads)
        names = names[index % len(names) :] + names[: index % len(names)]
        for name in names:
            _measure(name, running.loads[name], cell, images, plan, results)


def _check(
    variant: str,
    load: LoadProcess,
    model: str,
    images: Dict[str, pathlib.Path],
    expected: List[Answer],
    results: Results,
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    command = {
        "op": "answers",
        "model": model,
        "images": [str(p) for p in images.values()],
        "threshold": THRESHOLD,
    }
    while "error" in (reply := load.ask(command)) and time.monotonic() < deadline:
        time.sleep(1.0)  # a server may listen before its model worker is ready
    if "error" in reply:
        raise RuntimeError(f"{variant} did not answer {model}: {reply['error']}")
    mismatches = results.mismatches.setdefault(variant, [])
    for image, want, got in zip(images, expected, reply["answers"]):
        why = answers_differ(want, got, SCORE_TOLERANCE)
        if why:
            mismatches.append(f"{model} {image}: {why}")
            print(f"ANSWERS DIFFER: {variant}: {mismatches[-1]}", file=sys.stderr, flush=True)


def _cells(plan: Plan) -> List[Cell]:
    return [
        (model, image, clients) for model in plan.models for image in IMAGES for clients in CLIENTS
    ]


def _measure(
    variant: str,
    load: LoadProcess,
    cell: Cell,
    images: Dict[str, pathlib.Path],
    plan: Plan,
    results: Results,
) -> None:
    model, image, clients = cell
    window = plan.windows[model]
    reply = load.ask(
        {
            "op": "load",
            "model": model,
            "image": str(images[image]),
            "threshold": THRESHOLD,
            "clients": clients,
            "warm_up_s": window.warm_up_s,
            "window_s": window.window_s,
        }
    )
    if "error" in reply or reply["failed"] or not reply["requests"]:
        why = reply.get("error") or reply.get("first_error") or "no call ended in the window"
        message = f"{cell}: {reply.get('failed', 0)} failed calls; {why}"
        print(f"LOAD FAILED: {variant}: {message}", file=sys.stderr, flush=True)
        results.failures.setdefault(variant, []).append(message)
    # A round without a figure keeps its place (None), so that rounds stay paired.
    counted = "error" not in reply and reply["requests"]
    results.rates.setdefault(variant, {}).setdefault(cell, []).append(
        reply["requests_per_s"] if counted else None
    )
    results.p50_ms.setdefault(variant, {}).setdefault(cell, []).append(
        reply["p50_ms"] if counted else None
    )


# -- the run ------------------------------------------------------------------------------------


def measure(
    quick: bool, servers: Sequence[Server] = SERVERS, server_env: Optional[Dict[str, str]] = None
) -> Tuple[Plan, Results]:
    """Start every server (``server_env`` added to each one's environment), check its answers,
    then measure them in rounds, each server alone."""
    plan = PLANS[quick]
    pythons = venvs.ensure_all(sorted({s.venv for s in servers if s.venv}))
    results = Results()
    with tempfile.TemporaryDirectory(prefix="ccv-bench-peers-") as temporary, ExitStack() as stack:
        work = pathlib.Path(temporary)
        # serving() needs my_model whatever is measured.
        models = {DEMO_MODEL_ID: "tiny", **{m: ARCHITECTURE_OF[m] for m in plan.models}}
        save_models(work / "saved", models)
        images = make_images(work)
        expected = expected_answers(work / "saved", plan.models, images)
        running = []
        for server in servers:
            server_dir = work / server.name
            server_dir.mkdir()
            running.append(
                start_and_check(
                    server,
                    pythons,
                    work / "saved",
                    images,
                    expected,
                    plan,
                    results,
                    server_dir,
                    stack,
                    dict(server_env or {}),
                )
            )
            pause(running[-1].pid)
            print(
                f"  started {server.name} ({results.start_s[server.name]:.0f} s, "
                f"{results.idle_rss_mib[server.name]:.0f} MiB idle)",
                file=sys.stderr,
                flush=True,
            )
        for round_index in range(plan.rounds):
            shift = round_index % len(running)
            for server in running[shift:] + running[:shift]:
                began = time.monotonic()
                resume(server.pid)
                try:
                    run_block(server, images, plan, results)
                    results.rss_after_load_mib.setdefault(server.server.name, []).append(
                        tree_rss_mib(server.pid)
                    )
                finally:
                    pause(server.pid)
                print(
                    f"  round {round_index + 1}/{plan.rounds}: {server.server.name} "
                    f"({time.monotonic() - began:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    return plan, results


def run(
    quick: bool, servers: Sequence[Server] = SERVERS, server_env: Optional[Dict[str, str]] = None
) -> List[Figure]:
    """Requests/s and p50 latency of every server, by model, image and clients; ours against
    the best peer."""
    plan, results = measure(quick, servers, server_env)
    print(markdown_table(plan, results))
    return figures(plan, results)


# -- the figures --------------------------------------------------------------------------------


def _median(values: Sequence[Optional[float]]) -> float:
    """The median of the rounds that have a figure."""
    return statistics.median(value for value in values if value is not None)


def _measured(values: Optional[Sequence[Optional[float]]]) -> bool:
    return any(value is not None for value in values or ())


def _marked(variant: str, results: Results) -> str:
    marks = []
    if results.mismatches.get(variant):
        marks.append("ANSWERS DIFFER")
    if results.failures.get(variant):
        marks.append("CALLS FAILED")
    return f"{variant} ({', '.join(marks)})" if marks else variant


def best_peer(results: Results, cell: Cell) -> Optional[str]:
    peers = [
        name
        for name, by_cell in results.rates.items()
        if name not in OUR_VARIANTS and _measured(by_cell.get(cell))
    ]
    return max(peers, key=lambda name: _median(results.rates[name][cell]), default=None)


def _model_name(model: str) -> str:
    return {DEMO_MODEL_ID: "demo"}.get(model, ARCHITECTURE_OF.get(model, model))


def markdown_table(plan: Plan, results: Results) -> str:
    """The issue's table: requests/s by row, ours against the best peer."""
    lines = [
        "| model | image | clients | ours gRPC | ours HTTP | best peer | ratio "
        "| p50 ours / best peer | HTTP / gRPC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if "before gRPC" in results.rates:
        lines[0] += " before gRPC | p50 before | before / best peer |"
        lines[1] += "---|---|---|"
    for cell in _cells(plan):
        model, image, clients = cell
        ours = _rates(results, "ours gRPC", cell)
        http = _rates(results, "ours HTTP", cell)
        best = best_peer(results, cell)
        ratios = _paired(results.rates, cell, "ours gRPC", best) if _measured(ours) and best else []
        http_ratios = _paired(results.rates, cell, "ours HTTP", "ours gRPC")
        peer = f"{_marked(best, results)} {_rate(_rates(results, best, cell))}" if best else "-"
        line = (
            f"| {_model_name(model)} | {image} | {clients} | {_rate(ours)} | {_rate(http)} "
            f"| {peer} | {f'{statistics.median(ratios):.2f}' if ratios else '-'} "
            f"| {_p50(results, 'ours gRPC', cell)} / {_p50(results, best, cell)} "
            f"| {f'{statistics.median(http_ratios):.2f}' if http_ratios else '-'} |"
        )
        before = _rates(results, "before gRPC", cell)
        if _measured(before):
            before_ratios = _paired(results.rates, cell, "before gRPC", best) if best else []
            line += (
                f" {_rate(before)} | {_p50(results, 'before gRPC', cell)} "
                f"| {f'{statistics.median(before_ratios):.2f}' if before_ratios else '-'} |"
            )
        lines.append(line)
    rss = ", ".join(f"{name} {mib:.0f} MiB" for name, mib in results.idle_rss_mib.items())
    return "\n".join(lines) + f"\n\nIdle RSS (whole process tree, once started): {rss}\n"


def _rates(results: Results, variant: Optional[str], cell: Cell) -> List[Optional[float]]:
    return results.rates.get(variant or "", {}).get(cell, [])


def _rate(values: List[Optional[float]]) -> str:
    if not _measured(values):
        return "-"
    value = _median(values)
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _p50(results: Results, variant: Optional[str], cell: Cell) -> str:
    values = results.p50_ms.get(variant or "", {}).get(cell, [])
    return f"{_median(values):.4g} ms" if _measured(values) else "-"


def _paired(
    series: Dict[str, Dict[Cell, List[Optional[float]]]], cell: Cell, numerator: str,
    denominator: Optional[str],
) -> List[float]:
    """``numerator`` / ``denominator`` (requests/s or p50 of two variants) in each round where
    both have a figure: the two were measured in the same round, so a phase of the machine
    that slows one round moves both, where a ratio of medians would pair figures of different
    rounds."""
    above = series.get(numerator, {}).get(cell, [])
    below = series.get(denominator or "", {}).get(cell, [])
    return [a / b for a, b in zip(above, below) if a is not None and b]


def figures(plan: Plan, results: Results) -> List[Figure]:
    """One figure per row (ours gRPC / best peer, every variant's req/s and p50 in its
    details), the idle RSS of each server, and the answers that differed."""
    found = []
    for cell in _cells(plan):
        model, image, clients = cell
        best = best_peer(results, cell)
        ratios = _paired(results.rates, cell, "ours gRPC", best)
        if not ratios:
            continue
        row = f"{_model_name(model)}, {image}, {clients} client(s)"
        measured = [v for v in results.rates if _measured(_rates(results, v, cell))]
        details = {}
        for variant in measured:
            details[f"req_per_s {variant}"] = _median(_rates(results, variant, cell))
            details[f"p50_ms {variant}"] = _median(results.p50_ms[variant][cell])
        found.append(
            Figure.of_samples(
                GROUP,
                f"ours gRPC / best peer ({row})",
                ratios,
                "x",
                target=TARGET,
                note=f"best peer {_marked(best, results)}; p50 ours "
                f"{_p50(results, 'ours gRPC', cell)} vs {_p50(results, best, cell)}; req/s: "
                + ", ".join(
                    f"{_marked(v, results)} {_rate(_rates(results, v, cell))}" for v in measured
                ),
                details=details,
            )
        )
        p50_ratios = _paired(results.p50_ms, cell, "ours gRPC", best)
        if p50_ratios:
            found.append(
                Figure.of_samples(
                    GROUP,
                    f"p50 ours gRPC / best peer's ({row})",
                    p50_ratios,
                    "x",
                    target=P50_TARGET,
                    note=f"best peer {_marked(best, results)}; medians "
                    f"{_p50(results, 'ours gRPC', cell)} vs {_p50(results, best, cell)}",
                )
            )
        http_ratios = _paired(results.rates, cell, "ours HTTP", "ours gRPC")
        if http_ratios:
            found.append(
                Figure.of_samples(
                    GROUP,
                    f"ours HTTP / ours gRPC ({row})",
                    http_ratios,
                    "x",
                    target=HTTP_TARGET,
                    note=f"req/s medians {_rate(_rates(results, 'ours HTTP', cell))} vs "
                    f"{_rate(_rates(results, 'ours gRPC', cell))}",
                )
            )
    for server, idle_mib in results.idle_rss_mib.items():
        after = results.rss_after_load_mib.get(server, [])
        found.append(
            Figure(
                GROUP,
                f"idle RSS, process tree ({server})",
                idle_mib,
                "MiB",
                note=f"started and checked in {results.start_s[server]:.1f} s"
                + (f"; {max(after):.0f} MiB after its loads" if after else ""),
            )
        )
    for variant, mismatches in results.mismatches.items():
        found.append(
            Figure(
                GROUP,
                f"answers differing from Detector.detect ({variant})",
                len(mismatches),
                "",
                note="; ".join(mismatches[:3]),
            )
        )
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="demo model, one round, short windows")
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=[s.name for s in SERVERS],
        help="measure only these servers (ours is needed for the ratios)",
    )
    parser.add_argument(
        "--server-env",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="set in every server's environment, ours included, e.g. OMP_WAIT_POLICY=PASSIVE "
        "(libgomp's idle threads then sleep at once instead of spinning: on 2 cores, a server "
        "whose model runs in another process than its HTTP front, LitServe, otherwise has calls "
        "of about 250 ms)",
    )
    parser.add_argument(
        "--launcher",
        type=pathlib.Path,
        help="also measure our runtime as another checkout's launch_vision_runtime.py serves it "
        "(a git worktree of an older commit): 'before' columns beside ours",
    )
    args = parser.parse_args(argv)
    servers = [s for s in SERVERS if not args.servers or s.name in args.servers]
    if args.launcher:
        global _before_launcher  # pylint: disable=global-statement
        _before_launcher = args.launcher.resolve()
        servers.insert(1, BEFORE)
    server_env = dict(value.split("=", 1) for value in args.server_env)
    print(render_table(run(args.quick, servers, server_env)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
