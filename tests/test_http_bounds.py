"""What an HTTP client can hold, and what it can write to the log, against a real runtime.

One runtime (conftest.py's served_tuned, shared with test_image_formats), with the example's
config and the connection limits made small through environment overrides (so that reaching
them is quick; served_example.TUNED_ENV): request heads within 2 s,
bodies within 2 s, 16 HTTP connections, 2 metrics connections answered within 1.5 s. Each test
does what a slow, careless or hostile client would, over raw sockets where a library would
finish the request for us, and checks the answer, the process (/proc) and the log.
"""

# Standard
import base64
import http.client
import json
import pathlib
import resource
import select
import socket
import subprocess
import sys
import time

# Third Party
import pytest

# Local
from common import HOST
from example_tools.runtime_harness import LAUNCHER, free_port, runtime_env
from example_tools.synthetic_data import render_example

from .served_example import (
    BODY_TIMEOUT_S,
    HEADER_TIMEOUT_S,
    MAX_HTTP_CONNECTIONS,
    MAX_METRICS_CONNECTIONS,
    METRICS_TIMEOUT_S,
    wait_until,
)

IMAGE, _ = render_example("cat")
PREDICT_ROUTE = "/api/v1/task/object-detection"
# Time a good request may take while others hoard connections.
GOOD_REQUEST_S = 1.0
# Slack for a busy two-core machine on top of a timeout.
SLACK_S = 1.5


@pytest.fixture(scope="module")
def served(served_tuned):
    """The runtime with small HTTP limits (conftest's ``runtime`` comes from it)."""
    return served_tuned


def _connect(runtime, port: str = "http") -> socket.socket:
    return socket.create_connection((HOST, runtime.ports[port]), timeout=10)


def _seconds_until_closed(sock: socket.socket, timeout: float) -> float:
    """Seconds until the server closes ``sock`` (whatever it answers first); fails after
    ``timeout``."""
    start = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail(f"the connection was still open after {timeout} s")
    return time.monotonic() - start


def _closed_by_server(sock: socket.socket) -> bool:
    """Closed without an answer (a 408 would be the header timeout's)."""
    readable, _, _ = select.select([sock], [], [], 0)
    try:
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def _timed_http(runtime, method: str, path: str, body=None):
    start = time.monotonic()
    status, answer = runtime.http(method, path, body)
    return status, answer, time.monotonic() - start


def _proc_status(pid: int, field: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def _log_after(runtime, offset: int, awaited: bytes) -> bytes:
    """The log from ``offset`` on, once it holds ``awaited`` (the runtime writes its log line
    after it answers)."""

    def logged() -> bytes:
        with open(runtime.log_path, "rb") as log:
            log.seek(offset)
            text = log.read()
        return text if awaited in text else b""

    return wait_until(logged, 10, f"{awaited!r} in the runtime's log")


def _predict_body(threshold: float = 0.5) -> dict:
    return {
        "model_id": "my_model",
        "inputs": base64.b64encode(IMAGE).decode(),
        "parameters": {"threshold": threshold},
    }


# -- time ---------------------------------------------------------------------------------------


def test_an_unfinished_request_head_is_closed_within_the_header_timeout(runtime):
    with _connect(runtime) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head goes on
        assert _seconds_until_closed(sock, HEADER_TIMEOUT_S + 10) < HEADER_TIMEOUT_S + SLACK_S


def test_a_connection_that_sends_nothing_is_closed_within_the_header_timeout(runtime):
    with _connect(runtime) as sock:
        assert _seconds_until_closed(sock, HEADER_TIMEOUT_S + 10) < HEADER_TIMEOUT_S + SLACK_S


def test_a_slow_body_is_cut_within_the_body_timeout(runtime):
    """One byte every 0.2 s would take minutes; the door answers 408 and closes (the client,
    still sending, may see the connection reset before it reads the 408)."""
    with _connect(runtime) as sock:
        sock.sendall(
            f"POST {PREDICT_ROUTE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n".encode()
        )
        start = time.monotonic()
        answer = b""
        sock.settimeout(0.2)
        while time.monotonic() - start < BODY_TIMEOUT_S + 10:
            try:
                sock.sendall(b" ")
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
        elapsed = time.monotonic() - start
    assert elapsed < BODY_TIMEOUT_S + SLACK_S, f"still open after {elapsed:.1f} s"
    if answer:
        assert answer.startswith(b"HTTP/1.1 408") and b"http_body_timeout_s" in answer, answer


# -- how many -----------------------------------------------------------------------------------


def test_connections_over_the_bound_close_idle_ones_and_good_requests_still_answer(runtime):
    """3x the bound of half-open connections: the oldest are closed at once (not after the
    header timeout), and a health check and a prediction answer within a second."""
    assert runtime.http("POST", PREDICT_ROUTE, _predict_body())[0] == 200  # the model is loaded
    hoarded = [_connect(runtime) for _ in range(3 * MAX_HTTP_CONNECTIONS)]
    try:
        opened = time.monotonic()
        for sock in hoarded:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
        wait_until(
            lambda: sum(_closed_by_server(sock) for sock in hoarded) >= 2 * MAX_HTTP_CONNECTIONS,
            HEADER_TIMEOUT_S / 2 - (time.monotonic() - opened),
            f"{2 * MAX_HTTP_CONNECTIONS} of {len(hoarded)} hoarded connections closed",
            interval=0.05,
        )
        status, _, seconds = _timed_http(runtime, "GET", "/health")
        assert status == 200 and seconds < GOOD_REQUEST_S, (status, seconds)
        status, answer, seconds = _timed_http(runtime, "POST", PREDICT_ROUTE, _predict_body())
        assert status == 200 and seconds < GOOD_REQUEST_S, (status, seconds, answer)
    finally:
        for sock in hoarded:
            sock.close()


def test_idle_metrics_connections_hold_no_thread_and_metrics_still_answer(runtime):
    pid = runtime.process.pid
    threads_before = _proc_status(pid, "Threads")
    idle = [_connect(runtime, "metrics") for _ in range(100)]
    try:
        # Each new connection over the bound closes the one idle longest: all but the last few.
        over_the_bound = len(idle) - MAX_METRICS_CONNECTIONS
        wait_until(
            lambda: sum(_closed_by_server(sock) for sock in idle) >= over_the_bound,
            10,
            f"{over_the_bound} of {len(idle)} idle metrics connections closed",
            interval=0.05,
        )
        threads = _proc_status(pid, "Threads")
        # 2 for threads that come and go on their own (the models poller's timer)
        assert threads <= threads_before + 2, (threads_before, threads)
        start = time.monotonic()
        status, text = runtime.http("GET", "/metrics", port="metrics")
        assert status == 200 and "python_gc_objects_collected_total" in text
        assert time.monotonic() - start < GOOD_REQUEST_S
    finally:
        for sock in idle:
            sock.close()


def test_a_metrics_request_head_is_closed_within_its_timeout(runtime):
    with _connect(runtime, "metrics") as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        assert _seconds_until_closed(sock, METRICS_TIMEOUT_S + 10) < METRICS_TIMEOUT_S + SLACK_S


# -- what reaches the log -----------------------------------------------------------------------


def test_a_deeply_nested_json_body_is_422_with_one_warning(runtime):
    offset = runtime.log_path.stat().st_size
    body = '{"model_id": ' + "[" * 200_000 + "]" * 200_000 + "}"
    connection = http.client.HTTPConnection(HOST, runtime.ports["http"], timeout=30)
    try:
        connection.request("POST", PREDICT_ROUTE, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 422, answer
    assert "Invalid JSON" in answer["details"]
    logged = _log_after(runtime, offset, b"Invalid JSON").decode(errors="replace")
    assert "Traceback" not in logged
    warnings = [line for line in logged.splitlines() if ":WARN:" in line or ":ERRR:" in line]
    assert len(warnings) == 1 and "Invalid JSON" in warnings[0], warnings


def test_control_characters_of_a_path_are_logged_escaped(runtime):
    """The path is percent-decoded before the door sees it: ESC, CR LF and NUL reach it."""
    offset = runtime.log_path.stat().st_size
    connection = http.client.HTTPConnection(HOST, runtime.ports["http"], timeout=10)
    try:
        connection.request("GET", "/x%1b%5b31mRED%0d%0aFAKE%00")
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 404
    logged = _log_after(runtime, offset, b"GET /x")
    for raw in (b"\x1b", b"\r", b"\x00"):
        assert raw not in logged, raw
    assert rb"GET /x\x1b[31mRED\r\nFAKE\x00" in logged, logged


# A client error over HTTP is one warning line: tests/test_request_costs.py, with gRPC's.


# -- open files ---------------------------------------------------------------------------------


def test_a_runtime_whose_connections_do_not_fit_its_open_files_refuses_to_start(runtime):
    """256 HTTP + 256 gRPC connections cannot fit in 300 descriptors: a line naming the settings."""

    def limit_open_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))

    ports = {name: free_port() for name in ("grpc", "http", "metrics")}
    result = subprocess.run(
        [sys.executable, str(LAUNCHER)],
        cwd=runtime.work_dir,
        env=runtime_env(ports),
        preexec_fn=limit_open_files,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    refusals = [line for line in output.splitlines() if "open-files limit" in line]
    assert refusals, output[-3000:]
    assert all(
        "max_http_connections" in line and "max_allowed_incoming_connections" in line
        for line in refusals
    ), refusals


def test_the_soft_open_files_limit_is_raised_when_the_hard_one_fits(monkeypatch):
    # Local
    from caikit_computer_vision.guards import open_files
    from caikit_computer_vision.guards.limits import Limits

    raised = []
    monkeypatch.setattr(open_files.resource, "getrlimit", lambda _: (300, 100_000))
    monkeypatch.setattr(open_files.resource, "setrlimit", lambda _, limits: raised.append(limits))
    open_files.check_open_files(Limits())
    assert raised == [(100_000, 100_000)]
    assert sum(count for _, count in open_files.open_files_needed(Limits())) > 300
