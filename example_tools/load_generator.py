"""Load: concurrent gRPC predict clients against the example runtime while it trains.

    .venv/bin/python -m example_tools.load_generator           # own runtime, 8 clients x 60 s
    .venv/bin/python -m example_tools.load_generator --clients 4 --duration 20 --json load.json
    .venv/bin/python -m example_tools.load_generator --grpc 127.0.0.1:8085 \
        --http 127.0.0.1:8080 --pid PID

Run from the repository root. N client threads, each with its own channel, call
ObjectDetectionTaskPredict back to back for D seconds while a training keeps running in the
runtime (when one ends early, another starts under a new model name). Reported: requests,
failed predictions (any status but OK), latency percentiles, requests/s, the runtime's resident
memory (VmRSS, sampled every second) and its growth over the run, and the training states seen.
Figures only: nothing here passes or fails on time. bench/ reads its figures, and
tests/test_load.py asserts what must hold under load.
"""

# Standard
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple
import argparse
import ipaddress
import json
import math
import operator
import pathlib
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid

# Third Party
import grpc

# Local
from caikit_computer_vision.atomic_dirs import write_file_atomically
from common import BASE_MODEL_ID, HOST
from example_tools.synthetic_data import render_example
from example_tools.runtime_harness import predict_callable

DEFAULT_CLIENTS = 8
DEFAULT_DURATION_S = 60.0
# Load before the measured period: the training's first epoch and the first calls of each
# client allocate what they keep (about 30 MiB), which is start-up, not growth.
DEFAULT_WARM_UP_S = 5.0
# The growth of the server's memory compares the mean of the first and of the last window.
RSS_WINDOW_S = 10.0
# Runs shorter than this compare the first and last RSS_SHORT_RUN_FRACTION of the samples
# instead, so that the two windows never overlap or cover most of the run.
RSS_WINDOW_MIN_RUN_S = 50.0
RSS_SHORT_RUN_FRACTION = 0.2
RSS_SAMPLE_INTERVAL_S = 1.0
# A client pauses this long after a failed call, as real clients back off, rather than flood a
# server that refuses calls (e.g. while it shuts down) with thousands a second.
FAILURE_BACKOFF_S = 0.05

TRAIN_PATH = "/api/v1/ObjectDetectionTaskTransformersObjectDetectorTrain"
TRAININGS_PATH = "/management/trainings"
# caikit_data_model.common.TrainingStatus values that end a training.
FINISHED_STATES = ("COMPLETED", "CANCELED", "ERRORED")
# Paths of the train request, relative to the runtime's working directory (the example's
# layout). Enough epochs that one training outlasts a 60 s run on two CPU cores; the load test
# cancels it when the load ends.
DEFAULT_TRAIN_PARAMETERS = {
    "model_path": f"models/{BASE_MODEL_ID}",
    "train_data": {"img_dir_path": "train_data/images", "labels_file": "train_data/labels.txt"},
    "num_epochs": 1000,
    "learning_rate": 0.001,
}
TRAINING_POLL_INTERVAL_S = 0.5
TRAINING_WAIT_S = 60.0


@dataclass(frozen=True)
class RuntimeTarget:
    """Where the runtime listens (loopback) and its process id, for reading its memory."""

    grpc_address: str
    http_url: str
    pid: int

    @classmethod
    def local(cls, ports: Dict[str, int], pid: int) -> "RuntimeTarget":
        """The runtime on ``common.HOST`` with the ``grpc`` and ``http`` ports of ``ports``."""
        return cls(f"{HOST}:{ports['grpc']}", f"http://{HOST}:{ports['http']}", pid)


@dataclass(frozen=True)
class CallRecord:
    """One predict call: when it started and ended (time.monotonic()), its status and details."""

    started: float
    ended: float
    status: str
    details: str = ""


@dataclass
class TrainingSeen:
    """One training started by the load test and the states it was seen in, in order."""

    model_name: str
    training_id: str
    states: List[str] = field(default_factory=list)

    def saw(self, state: str) -> None:
        if not self.states or self.states[-1] != state:
            self.states.append(state)


@dataclass
class LoadReport:
    """The figures of one load run (times in seconds and milliseconds, memory in KiB)."""

    clients: int
    warm_up_s: float
    duration_s: float
    requests: int
    failed: int
    failures_by_status: Dict[str, int]
    latency_ms: Dict[str, float]
    requests_per_s: float
    rss_first_kib: float
    rss_last_kib: float
    rss_growth_percent: float
    rss_window: str
    # (seconds since the load started, VmRSS in KiB)
    rss_samples: List[Tuple[float, int]]
    trainings: List[TrainingSeen]


# -- the pieces --------------------------------------------------------------------------------


def http_json(
    base_url: str, path: str, body: Optional[dict] = None, method: Optional[str] = None
) -> dict:
    """``method`` (default: POST with a ``body``, else GET) ``base_url + path``; return its JSON."""
    request = urllib.request.Request(
        base_url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def read_rss_kib(pid: int) -> int:
    """Resident memory (VmRSS) of process ``pid`` in KiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line: is {pid} a zombie?")


def percentile(sorted_values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def rss_growth(samples: Sequence[Tuple[float, int]]) -> Tuple[float, float, float, str]:
    """(mean of the first window, mean of the last, growth in percent, how windows were chosen).

    Windows are the first and last ``RSS_WINDOW_S`` seconds of a run of at least
    ``RSS_WINDOW_MIN_RUN_S`` seconds, else the first and last ``RSS_SHORT_RUN_FRACTION`` of the
    samples (at least one each).
    """
    if not samples:
        raise ValueError("no RSS samples: the run was shorter than one sampling interval")
    span = samples[-1][0] - samples[0][0]
    if span + RSS_SAMPLE_INTERVAL_S >= RSS_WINDOW_MIN_RUN_S:
        first = [kib for at, kib in samples if at < samples[0][0] + RSS_WINDOW_S]
        last = [kib for at, kib in samples if at > samples[-1][0] - RSS_WINDOW_S]
        window = f"first / last {RSS_WINDOW_S:.0f} s"
    else:
        count = max(1, round(len(samples) * RSS_SHORT_RUN_FRACTION))
        first, last = [kib for _, kib in samples[:count]], [kib for _, kib in samples[-count:]]
        window = (
            f"first / last {RSS_SHORT_RUN_FRACTION:.0%} of samples ({count} of {len(samples)}; "
            f"run shorter than {RSS_WINDOW_MIN_RUN_S:.0f} s)"
        )
    first_mean, last_mean = sum(first) / len(first), sum(last) / len(last)
    return first_mean, last_mean, 100.0 * (last_mean - first_mean) / first_mean, window


class _Worker:
    """A daemon thread running ``body(stop)``; an exception in it is raised again by ``join``."""

    def __init__(self, name: str, body: Callable[[threading.Event], None]):
        self.stop = threading.Event()
        self._body = body
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._body(self.stop)
        except BaseException as err:  # pylint: disable=broad-except
            self._error = err  # raised again by join(), in the thread that waits for results

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self.stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error


class PredictClients:
    """``count`` threads, each with its own gRPC channel, calling predict back to back.

    ``start`` returns once every channel is connected; ``hold`` and ``release`` pause and resume
    the start of new calls; ``in_flight`` counts the calls under way; ``stop`` lets those finish
    and returns every call made, in order of start.
    """

    def __init__(
        self,
        grpc_address: str,
        image: bytes,
        count: int = DEFAULT_CLIENTS,
        model_id: str = BASE_MODEL_ID,
        threshold: Optional[float] = None,
    ):
        self._address = grpc_address
        self._image = image
        self._model_id = model_id
        self._threshold = threshold
        self._connected = threading.Semaphore(0)
        self._open = threading.Event()
        self._open.set()
        self._records: List[List[CallRecord]] = [[] for _ in range(count)]
        # Whether each client has a call under way (each thread writes only its own entry).
        self._calling = [False] * count
        self._workers = [
            _Worker(f"predict-client-{index}", self._client_body(index)) for index in range(count)
        ]

    def _client_body(self, index: int) -> Callable[[threading.Event], None]:
        records = self._records[index]

        def body(stop: threading.Event) -> None:
            with grpc.insecure_channel(self._address) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=30)
                finally:
                    self._connected.release()
                predict = predict_callable(channel)
                while self._open.wait() and not stop.is_set():
                    self._calling[index] = True
                    started = time.monotonic()
                    try:
                        predict(self._image, self._threshold, model_id=self._model_id)
                        status, details = grpc.StatusCode.OK.name, ""
                    except grpc.RpcError as err:
                        status, details = err.code().name, err.details() or ""
                    records.append(CallRecord(started, time.monotonic(), status, details))
                    self._calling[index] = False
                    if status != grpc.StatusCode.OK.name:
                        stop.wait(FAILURE_BACKOFF_S)

        return body

    def start(self) -> None:
        for worker in self._workers:
            worker.start()
        for _ in self._workers:
            self._connected.acquire()  # pylint: disable=consider-using-with

    def in_flight(self) -> int:
        return sum(self._calling)

    def hold(self) -> None:
        """Start no new call until ``release``; the calls in flight go on."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def stop(self) -> List[CallRecord]:
        for worker in self._workers:
            worker.stop.set()
        self.release()
        for worker in self._workers:
            worker.join()
        calls = [record for records in self._records for record in records]
        return sorted(calls, key=operator.attrgetter("started"))


class RssSampler:
    """Samples the VmRSS of process ``pid`` every ``interval_s`` seconds in a thread."""

    def __init__(self, pid: int, interval_s: float = RSS_SAMPLE_INTERVAL_S):
        self.samples: List[Tuple[float, int]] = []
        self._pid, self._interval_s = pid, interval_s
        self._worker = _Worker("rss-sampler", self._sample)

    def _sample(self, stop: threading.Event) -> None:
        started = time.monotonic()
        while True:
            self.samples.append((round(time.monotonic() - started, 3), read_rss_kib(self._pid)))
            if stop.wait(self._interval_s):
                return

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> List[Tuple[float, int]]:
        self._worker.join()
        return self.samples


class TrainingKeeper:
    """Keeps a training running in the runtime for as long as the load lasts.

    ``start`` submits a training and waits until the runtime reports it RUNNING; a thread then
    polls it and, should it end, submits another under a new model name. ``stop`` cancels the
    one still running (so that the runtime is not left training) and waits for it to end.
    """

    def __init__(
        self,
        http_url: str,
        parameters: Optional[dict] = None,
        name_prefix: str = "load_test",
        poll_interval_s: float = TRAINING_POLL_INTERVAL_S,
    ):
        self.trainings: List[TrainingSeen] = []
        self._http_url = http_url
        self._parameters = parameters or DEFAULT_TRAIN_PARAMETERS
        self._name_prefix, self._poll_interval_s = name_prefix, poll_interval_s
        self._worker = _Worker("training-keeper", self._keep_training)

    def _submit(self) -> TrainingSeen:
        model_name = f"{self._name_prefix}_{uuid.uuid4().hex[:12]}"
        answer = http_json(
            self._http_url, TRAIN_PATH, {"model_name": model_name, "parameters": self._parameters}
        )
        training = TrainingSeen(model_name, answer["training_id"])
        self.trainings.append(training)
        return training

    def _poll(self, training: TrainingSeen) -> str:
        query = urllib.parse.urlencode({"training_id": training.training_id})
        state = http_json(self._http_url, f"{TRAININGS_PATH}?{query}")["state"]
        training.saw(state)
        return state

    def _wait_while(self, training: TrainingSeen, states: Tuple[str, ...], timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while (state := self._poll(training)) in states and time.monotonic() < deadline:
            time.sleep(self._poll_interval_s)
        return state

    def _keep_training(self, stop: threading.Event) -> None:
        while not stop.wait(self._poll_interval_s):
            if self._poll(self.trainings[-1]) in FINISHED_STATES:
                self._submit()

    def start(self) -> None:
        training = self._submit()
        state = self._wait_while(training, ("QUEUED",), TRAINING_WAIT_S)
        if state != "RUNNING":
            raise RuntimeError(
                f"training {training.model_name} is {state}, not RUNNING, {TRAINING_WAIT_S:.0f} s "
                f"after it was submitted; states seen: {training.states}"
            )
        self._worker.start()

    def stop(self) -> List[TrainingSeen]:
        self._worker.join()
        training = self.trainings[-1]
        if self._poll(training) not in FINISHED_STATES:
            query = urllib.parse.urlencode({"training_id": training.training_id})
            http_json(self._http_url, f"{TRAININGS_PATH}?{query}", method="DELETE")
            self._wait_while(training, ("QUEUED", "RUNNING"), TRAINING_WAIT_S)
        return self.trainings


# -- the run -----------------------------------------------------------------------------------


def run_load(
    target: RuntimeTarget,
    clients: int = DEFAULT_CLIENTS,
    duration_s: float = DEFAULT_DURATION_S,
    warm_up_s: float = DEFAULT_WARM_UP_S,
    image: Optional[bytes] = None,
    train_parameters: Optional[dict] = None,
) -> LoadReport:
    """Predict with ``clients`` concurrent clients for ``duration_s`` while a training runs.

    The load starts once the training is RUNNING and every client is connected; the first
    ``warm_up_s`` seconds of it are neither counted nor sampled. ``image`` defaults to a
    generated 64 x 64 JPEG like the training images.
    """
    if image is None:
        image, _ = render_example("cat")
    keeper = TrainingKeeper(target.http_url, train_parameters)
    sampler = RssSampler(target.pid)
    predict_clients = PredictClients(target.grpc_address, image, clients)
    keeper.start()
    try:
        try:
            predict_clients.start()
            time.sleep(warm_up_s)
            sampler.start()
            started = time.monotonic()
            time.sleep(duration_s)
        finally:
            try:
                records = predict_clients.stop()
                ended = time.monotonic()
            finally:
                samples = sampler.stop()
    finally:
        trainings = keeper.stop()
    measured = [record for record in records if record.started >= started]
    return summarize(measured, ended - started, clients, samples, trainings, warm_up_s)


def summarize(
    records: Sequence[CallRecord],
    elapsed_s: float,
    clients: int,
    rss_samples: List[Tuple[float, int]],
    trainings: List[TrainingSeen],
    warm_up_s: float = 0.0,
) -> LoadReport:
    """The report of a run from its calls, its length, its memory samples and its trainings."""
    if not records:
        raise ValueError("no predict call completed: is the runtime serving?")
    latencies = sorted(1000.0 * (record.ended - record.started) for record in records)
    failures = Counter(record.status for record in records if record.status != "OK")
    rss_first, rss_last, growth, window = rss_growth(rss_samples)
    return LoadReport(
        clients=clients,
        warm_up_s=warm_up_s,
        duration_s=round(elapsed_s, 3),
        requests=len(records),
        failed=sum(failures.values()),
        failures_by_status=dict(failures),
        latency_ms={
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": latencies[-1],
        },
        requests_per_s=len(records) / elapsed_s,
        rss_first_kib=rss_first,
        rss_last_kib=rss_last,
        rss_growth_percent=growth,
        rss_window=window,
        rss_samples=rss_samples,
        trainings=trainings,
    )


def format_report(report: LoadReport) -> str:
    """The figures as a small two-column table."""
    latency = report.latency_ms
    failures = ", ".join(f"{name} {count}" for name, count in report.failures_by_status.items())
    rows = [
        (
            "clients x duration",
            f"{report.clients} x {report.duration_s:.1f} s (after {report.warm_up_s:.0f} s "
            "of warm-up load)",
        ),
        ("requests", f"{report.requests}"),
        ("failed predictions", f"{report.failed}" + (f" ({failures})" if failures else "")),
        (
            "latency p50/p95/p99/max",
            f"{latency['p50']:.1f} / {latency['p95']:.1f} / {latency['p99']:.1f} / "
            f"{latency['max']:.1f} ms",
        ),
        ("requests/s", f"{report.requests_per_s:.1f}"),
        ("server RSS first", f"{report.rss_first_kib / 1024:.1f} MiB"),
        ("server RSS last", f"{report.rss_last_kib / 1024:.1f} MiB"),
        ("server RSS growth", f"{report.rss_growth_percent:+.2f} % ({report.rss_window})"),
    ]
    rows += [
        (f"training {training.model_name}", " -> ".join(training.states))
        for training in report.trainings
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def write_json(report: LoadReport, path: pathlib.Path) -> None:
    """Write the report as JSON, atomically."""
    write_file_atomically(str(path), json.dumps(asdict(report), indent=2) + "\n")


# -- the command line --------------------------------------------------------------------------


def _loopback_address(value: str) -> str:
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback or not port.isdigit():
        raise argparse.ArgumentTypeError(
            f"{value!r}: give HOST:PORT on this machine's loopback ({HOST}:PORT); the load "
            "test reads the runtime's memory from /proc, so it runs beside the runtime"
        )
    return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"


def _positive(kind: type) -> Callable[[str], float]:
    def parse(value: str):
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{value} is not > 0")
        return number

    return parse


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clients",
        type=_positive(int),
        default=DEFAULT_CLIENTS,
        help="concurrent gRPC clients, one channel each (default: %(default)s)",
    )
    parser.add_argument(
        "--duration",
        type=_positive(float),
        default=DEFAULT_DURATION_S,
        help="seconds of load (default: %(default)s)",
    )
    parser.add_argument(
        "--warm-up",
        type=float,
        default=DEFAULT_WARM_UP_S,
        help="seconds of load before the measured period, not counted (default: %(default)s)",
    )
    parser.add_argument(
        "--grpc",
        type=_loopback_address,
        help="gRPC HOST:PORT of a running runtime (with --http and --pid); by default a runtime "
        "is started in a temporary directory",
    )
    parser.add_argument("--http", type=_loopback_address, help="HTTP HOST:PORT of that runtime")
    parser.add_argument("--pid", type=int, help="process id of that runtime (for its memory)")
    parser.add_argument(
        "--num-epochs",
        type=_positive(int),
        default=DEFAULT_TRAIN_PARAMETERS["num_epochs"],
        help="epochs of each training (default: %(default)s; a training that ends early is "
        "followed by another, one still running at the end is cancelled)",
    )
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    given = [args.grpc is not None, args.http is not None, args.pid is not None]
    if any(given) and not all(given):
        parser.error("--grpc, --http and --pid go together (a running runtime)")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    train_parameters = {**DEFAULT_TRAIN_PARAMETERS, "num_epochs": args.num_epochs}
    if args.grpc:
        target = RuntimeTarget(args.grpc, f"http://{args.http}", args.pid)
        report = run_load(
            target, args.clients, args.duration, args.warm_up, train_parameters=train_parameters
        )
    else:
        # Local
        # Imported here: building a model imports transformers, needless with --grpc.
        from example_tools.demo_assets import create_base_model
        from example_tools.runtime_harness import start_example_runtime

        with tempfile.TemporaryDirectory(prefix="ccv-load-") as work_dir:
            base_model = pathlib.Path(work_dir) / "base" / BASE_MODEL_ID
            create_base_model(base_model)
            runtime = start_example_runtime(pathlib.Path(work_dir) / "runtime", base_model)
            try:
                target = RuntimeTarget.local(runtime.ports, runtime.process.pid)
                report = run_load(
                    target,
                    args.clients,
                    args.duration,
                    args.warm_up,
                    train_parameters=train_parameters,
                )
            finally:
                runtime.stop()
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
