"""Run the example's runtime (launch_vision_runtime.py) as a child process.

Used by the one-command demo and by the end-to-end tests: the child listens on 127.0.0.1
(on free ports unless told which), runs in a chosen working directory, and is stopped by its
own process id.
"""

# Standard
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = REPO_ROOT / "launch_vision_runtime.py"
CLIENT = REPO_ROOT / "run_train_and_inference.py"


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
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
            f"http://127.0.0.1:{self.ports[port]}{path}",
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
    """Launch the runtime in ``work_dir`` and wait until HTTP /health answers and gRPC accepts.

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
            if is_ready(ports):
                return runtime
            if time.monotonic() > deadline:
                raise RuntimeError(f"runtime not ready after {ready_timeout} s:\n{runtime.log()}")
            time.sleep(0.25)
    except BaseException:
        runtime.stop()
        raise


def _plaintext_ready(ports: Dict[str, int]) -> bool:
    return _http_ok(ports["http"]) and _tcp_open(ports["grpc"])


def _http_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _tcp_open(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0
