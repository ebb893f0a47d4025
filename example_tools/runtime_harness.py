"""The one runtime harness: run launch_vision_runtime.py as a child process and talk to it.

Used by demo.py, the tests and bench alike: the child listens on 127.0.0.1 (on free ports unless
told which), runs in a chosen working directory, is ready once it is alive, holds its gRPC and
HTTP ports itself, and HTTP /health answers and gRPC accepts, and is stopped by its own process
id; its log is kept and shown when it fails to start. No request goes to a port before the child
holds it, so another server on the same port (another runtime, another program) never gets one.

Processes that have caikit imported (tests, bench) cannot import stubs compiled from protos/
(caikit registered the same .proto files), so ``predict_callable`` builds the gRPC messages from
the runtime's dumped protos in a private descriptor pool instead.
"""

# Standard
from contextlib import closing
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
import functools
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

# Third Party
import grpc

# Local
from common import BASE_MODEL_ID, HOST, PREPARED_TRAIN_IMAGES
from example_tools.ports import listens_on

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = REPO_ROOT / "launch_vision_runtime.py"
CLIENT = REPO_ROOT / "run_train_and_inference.py"
DUMP_SCRIPT = REPO_ROOT / "dump_protos.py"

# The gRPC method of predictions.
PREDICT_METHOD = "/ccv.ComputerVisionService/ObjectDetectionTaskPredict"


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class RuntimeProcess:
    work_dir: pathlib.Path
    ports: Dict[str, int]
    process: subprocess.Popen
    log_path: pathlib.Path
    extra_env: Dict[str, str]

    @property
    def env(self) -> Dict[str, str]:
        """The environment the runtime was started with (for clients that read the config)."""
        return {**runtime_env(self.ports), **self.extra_env}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def http(
        self, method: str, path: str, body: Optional[dict] = None, port: str = "http"
    ) -> Tuple[int, Any]:
        """(status, body parsed as JSON when it is JSON) of one call; error statuses included."""
        request = urllib.request.Request(
            f"http://{HOST}:{self.ports[port]}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()

    def http_json(self, path: str, body: Optional[dict] = None) -> dict:
        """GET (or POST ``body``) ``path`` and return the JSON answer; an error status raises."""
        status, answer = self.http("GET" if body is None else "POST", path, body)
        if status >= 400:
            raise RuntimeError(f"HTTP {status} from {path}: {answer}")
        return answer

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def runtime_env(ports: Dict[str, int]) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        RUNTIME_GRPC_PORT=str(ports["grpc"]),
        RUNTIME_HTTP_PORT=str(ports["http"]),
        RUNTIME_METRICS_PORT=str(ports["metrics"]),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_runtime(
    work_dir: pathlib.Path,
    args: List[str],
    ports: Optional[Dict[str, int]] = None,
    ready_timeout: float = 180.0,
    extra_env: Optional[Dict[str, str]] = None,
    ready_check: Optional[Callable[[Dict[str, int]], bool]] = None,
) -> RuntimeProcess:
    """Launch the runtime in ``work_dir`` and wait until it holds its gRPC and HTTP ports and
    HTTP /health answers and gRPC accepts there. Raises RuntimeError (with the log) when the
    child exits first, e.g. because a port is taken: whoever holds it is never sent a request.

    ``ports`` maps grpc/http/metrics to port numbers; by default, free ones are picked.
    ``extra_env`` adds environment variables (e.g. caikit config overrides) for the child.
    ``ready_check(ports)`` replaces that readiness test, e.g. for a runtime that serves TLS,
    where plain-HTTP /health never answers.
    """
    is_ready = ready_check or _plaintext_ready
    ports = ports or {name: free_port() for name in ("grpc", "http", "metrics")}
    log_path = work_dir / "runtime.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(LAUNCHER), *args],
            cwd=work_dir,
            env={**runtime_env(ports), **(extra_env or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    runtime = RuntimeProcess(work_dir, ports, process, log_path, dict(extra_env or {}))
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"runtime exited with {process.returncode}:\n{runtime.log()}")
            if _holds_ports(process.pid, ports) and is_ready(ports):
                return runtime
            if time.monotonic() > deadline:
                raise RuntimeError(f"runtime not ready after {ready_timeout} s:\n{runtime.log()}")
            time.sleep(0.25)
    except BaseException:
        runtime.stop()
        raise


def _holds_ports(pid: int, ports: Dict[str, int]) -> bool:
    """Whether process ``pid`` itself listens on its gRPC and HTTP ports.

    Where /proc cannot tell (not Linux), True: the caller's own checks (the child is alive and
    answers) are all there is.
    """
    return all(listens_on(pid, ports[name]) is not False for name in ("grpc", "http"))


def _plaintext_ready(ports: Dict[str, int]) -> bool:
    return _http_ok(ports["http"]) and _tcp_open(ports["grpc"])


def _http_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _tcp_open(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(1)
        return sock.connect_ex((HOST, port)) == 0


# -- a working directory laid out as the walkthrough's --------------------------------------------


def prepare_work_dir(
    work_dir: pathlib.Path, saved_model_dir: pathlib.Path, num_train_images: int = PREPARED_TRAIN_IMAGES
) -> None:
    """models/my_model (a copy of ``saved_model_dir``) and a generated train_data/ in ``work_dir``."""
    # Local
    from example_tools.synthetic_data import generate_train_data  # imports the library

    shutil.copytree(saved_model_dir, work_dir / "models" / BASE_MODEL_ID)
    generate_train_data(str(work_dir / "train_data"), num_images=num_train_images)


def start_example_runtime(
    work_dir: pathlib.Path,
    saved_model_dir: pathlib.Path,
    extra_env: Optional[Dict[str, str]] = None,
    args: Optional[List[str]] = None,
) -> RuntimeProcess:
    """A runtime serving a copy of ``saved_model_dir`` as my_model, from a prepared ``work_dir``."""
    prepare_work_dir(work_dir, saved_model_dir)
    return start_runtime(work_dir, args or [], extra_env=extra_env)


# -- gRPC messages for processes that import caikit -------------------------------------------------


_messages_lock = threading.Lock()


def served_messages() -> SimpleNamespace:
    """The runtime's request and result message classes, from a fresh dump of its protos.

    dump_protos.py runs once per process, in a subprocess (it configures caikit its own way);
    grpc_tools' protoc turns the dump into descriptors, loaded into a private pool so that they
    never meet the classes caikit registered in the default one. Thread-safe: clients on many
    threads (the load generator) share the one dump.
    """
    with _messages_lock:
        return _compile_served_messages()


@functools.lru_cache(maxsize=None)
def _compile_served_messages() -> SimpleNamespace:
    # Third Party
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_tools import protoc
    import grpc_tools

    with tempfile.TemporaryDirectory(prefix="ccv-protos-") as tmp:
        work_dir = pathlib.Path(tmp)
        subprocess.run(
            [sys.executable, str(DUMP_SCRIPT)],
            cwd=work_dir,
            check=True,
            capture_output=True,
            timeout=300,
        )
        descriptor_set = work_dir / "descriptors.pb"
        protos = sorted(str(path) for path in (work_dir / "protos").glob("*.proto"))
        well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
        status = protoc.main(
            [
                "protoc",
                f"-I{work_dir / 'protos'}",
                f"-I{well_known}",
                "--include_imports",
                f"--descriptor_set_out={descriptor_set}",
                *protos,
            ]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed (exit {status}) on the dumped protos")
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    pool = descriptor_pool.DescriptorPool()
    for file_proto in files:
        pool.Add(file_proto)

    def message(full_name: str) -> type:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))

    return SimpleNamespace(
        ObjectDetectionTaskRequest=message("ccv.ObjectDetectionTaskRequest"),
        ObjectDetectionResult=message(
            "caikit_data_model.caikit_computer_vision.ObjectDetectionResult"
        ),
    )


def encode_predict_request(inputs: bytes, threshold: Optional[float] = None) -> bytes:
    """The wire bytes of ``ccv.ObjectDetectionTaskRequest`` (threshold left unset when None)."""
    request = served_messages().ObjectDetectionTaskRequest(inputs=inputs)
    if threshold is not None:
        request.threshold = threshold
    return request.SerializeToString()


def predict_callable(channel: grpc.Channel) -> Callable:
    """``predict(inputs, threshold=None, model_id="my_model", timeout=30, metadata=())`` over
    ``channel``, returning the ObjectDetectionResult message (grpc.RpcError on failure)."""
    call = channel.unary_unary(
        PREDICT_METHOD,
        request_serializer=lambda message: message,
        response_deserializer=served_messages().ObjectDetectionResult.FromString,
    )

    def predict(
        inputs: bytes,
        threshold: Optional[float] = None,
        model_id: str = BASE_MODEL_ID,
        timeout: float = 30.0,
        metadata: Sequence[Tuple[str, str]] = (),
    ):
        return call(
            encode_predict_request(inputs, threshold),
            metadata=[("mm-model-id", model_id), *metadata],
            timeout=timeout,
        )

    return predict
