"""What a client's request may cost the runtime: threads while it sends nothing, a log line per
bad message, and for a Train that will be refused, no more than a look at its name and paths.

One runtime (conftest.py's served_tuned, shared with test_http_bounds and test_image_formats),
with a short request-message timeout so that the reaper is seen at work. The hostile calls are the ones the availability probe made: a unary predict called as if
it were client-streaming, whose message never comes, on one connection and on many; Train
requests naming a model that exists, and an image with more boxes than the limit.
"""

# Standard
from typing import Iterator, List
import base64
import socket
import threading
import time

# Third Party
from grpc_health.v1 import health_pb2, health_pb2_grpc
import grpc
import pytest
import yaml

# Local
from example_tools.runtime_harness import PREDICT_METHOD, predict_callable
from example_tools.synthetic_data import render_example
import common

from .served_example import REQUEST_MESSAGE_TIMEOUT_S, TRAIN_ROUTE, train_body, wait_until

IMAGE, _ = render_example("cat")
# How long a good call may take while the runtime is under attack (the goal).
GOOD_CALL_S = 1.0
# The launcher's pool: runtime_config.yaml's server_thread_pool_size.
POOL_THREADS = 48
# Calls the door lets wait for their message at once; a further one cancels the one that has
# waited longest (runtime_config.yaml).
AWAITING_LIMIT = yaml.safe_load(common.RUNTIME_CONFIG.read_text())["caikit_computer_vision"][
    "max_calls_awaiting_request"
]


@pytest.fixture(scope="module")
def runtime(served_tuned):
    served_tuned.predict(IMAGE)  # the model is loaded before any test measures
    return served_tuned.runtime


def _own_channel(runtime) -> grpc.Channel:
    """A channel on a connection of its own (grpc shares one between equal channels)."""
    return grpc.insecure_channel(
        f"{common.HOST}:{runtime.ports['grpc']}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


class HalfOpenCalls:
    """Predict calls that open and then send nothing, each on ``per_connection`` per channel."""

    def __init__(self, runtime, connections: int, per_connection: int, method: str = PREDICT_METHOD):
        self._release = threading.Event()
        self.channels = [_own_channel(runtime) for _ in range(connections)]
        self.calls = []
        for channel in self.channels:
            call = channel.stream_unary(
                method, request_serializer=lambda m: m, response_deserializer=lambda b: b
            )
            self.calls += [
                call.future(self._nothing(), metadata=[("mm-model-id", "my_model")])
                for _ in range(per_connection)
            ]

    def _nothing(self) -> Iterator[bytes]:
        self._release.wait(60)
        return
        yield b""  # pylint: disable=unreachable

    def close(self) -> None:
        self._release.set()
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            channel.close()


def _good_calls_answer(runtime) -> List[float]:
    """Seconds taken by a predict and a health check on a fresh connection (they must pass)."""
    with _own_channel(runtime) as channel:
        started = time.monotonic()
        result = predict_callable(channel)(IMAGE, timeout=10)
        predict_s = time.monotonic() - started
        started = time.monotonic()
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        health_s = time.monotonic() - started
    assert result.producer_id.name
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    return [predict_s, health_s]


def _wait_until_the_door_took_every_call(attack: HalfOpenCalls) -> None:
    """Every call reached the door: all but the last AWAITING_LIMIT were cancelled to make room
    (the calls that waited longest), and nothing else ended them."""
    wait_until(
        lambda: sum(call.done() for call in attack.calls) >= len(attack.calls) - AWAITING_LIMIT,
        10,
        f"{len(attack.calls) - AWAITING_LIMIT} of {len(attack.calls)} silent calls cancelled",
        interval=0.05,
    )
    ended = [call.code() for call in attack.calls if call.done()]
    assert set(ended) == {grpc.StatusCode.CANCELLED}


@pytest.mark.parametrize(
    "connections, per_connection",
    [(1, POOL_THREADS), (POOL_THREADS, 1)],
    ids=["on-one-connection", "on-many-connections"],
)
def test_calls_that_never_send_leave_threads_for_good_calls(runtime, connections, per_connection):
    attack = HalfOpenCalls(runtime, connections=connections, per_connection=per_connection)
    try:
        _wait_until_the_door_took_every_call(attack)
        assert max(_good_calls_answer(runtime)) < GOOD_CALL_S
    finally:
        attack.close()


def test_a_call_that_never_sends_is_cancelled_after_the_timeout(runtime):
    attack = HalfOpenCalls(runtime, connections=1, per_connection=1)
    try:
        started = time.monotonic()
        timeout = REQUEST_MESSAGE_TIMEOUT_S
        wait_until(attack.calls[0].done, timeout + 5, "the silent call ended", interval=0.05)
        assert timeout - 0.5 <= time.monotonic() - started <= timeout + 5
        assert attack.calls[0].code() == grpc.StatusCode.CANCELLED
    finally:
        attack.close()
    wait_until(
        lambda: f"no request message within {REQUEST_MESSAGE_TIMEOUT_S} s" in runtime.log(),
        5,
        lambda: f"the log line of the cancelled call (log ends: {runtime.log()[-2000:]})",
    )


def test_a_refused_call_is_answered_without_waiting_for_its_message(runtime):
    """DeployModel is off: the refusal comes at once, not after a message that never comes."""
    attack = HalfOpenCalls(
        runtime, connections=1, per_connection=1,
        method="/caikit.runtime.models.ModelManagement/DeployModel",
    )
    try:
        wait_until(
            attack.calls[0].done, REQUEST_MESSAGE_TIMEOUT_S / 2, "the refusal", interval=0.05
        )
        assert attack.calls[0].code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        attack.close()


def test_a_malformed_request_message_is_invalid_argument_in_one_log_line(runtime):
    before = runtime.log()
    with grpc.insecure_channel(f"{common.HOST}:{runtime.ports['grpc']}") as channel:
        raw = channel.unary_unary(
            PREDICT_METHOD, request_serializer=lambda m: m, response_deserializer=lambda b: b
        )
        with pytest.raises(grpc.RpcError) as refused:
            # Field 1 (inputs) announced as 100 bytes long, followed by 3.
            raw(b"\x0a\x64abc", metadata=[("mm-model-id", "my_model")], timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ObjectDetectionTaskRequest message" in refused.value.details()
    new_lines = runtime.log()[len(before):]
    assert "Traceback" not in new_lines
    assert [line for line in new_lines.splitlines() if "not a valid" in line] == [
        line for line in new_lines.splitlines() if line.strip()
    ]


def test_a_malformed_health_check_is_invalid_argument(runtime):
    """Every unary method goes through the door's reading, caikit's and grpc's own included."""
    with grpc.insecure_channel(f"{common.HOST}:{runtime.ports['grpc']}") as channel:
        status = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda m: m,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as refused:
            status(b"\xff\xff\xff", timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- Train: cheap checks first -------------------------------------------------------------------


def test_a_train_naming_an_existing_model_is_refused_before_its_images_are_read(runtime):
    """The data set is broken too; the answer is about the name, so no image was opened."""
    broken = runtime.work_dir / "train_data" / "broken"
    (broken / "images").mkdir(parents=True)
    (broken / "labels.txt").write_text("missing.jpg\tcat\t(1, 5, 1, 5)\n")
    before = runtime.log()
    status, answer = runtime.http("POST", TRAIN_ROUTE, train_body(
        model_name="my_model", img_dir="train_data/broken/images", labels="train_data/broken/labels.txt",
    ))
    assert status == 400, answer
    assert "already exists" in answer["details"] and "missing.jpg" not in answer["details"]
    wait_until(lambda: "already exists" in runtime.log()[len(before):], 5, "the refusal's log line")
    lines = _new_log_lines(runtime, before)
    assert len(lines) == 1 and ":WARN:" in lines[0], lines


def test_an_image_with_more_boxes_than_the_limit_is_refused_before_images_are_read(runtime):
    crowded = runtime.work_dir / "train_data" / "crowded"
    (crowded / "images").mkdir(parents=True)
    lines = ["missing.jpg\tcat\t(1, 5, 1, 5)\n"] * 301  # the image does not even exist
    (crowded / "labels.txt").write_text("".join(lines))
    status, answer = runtime.http("POST", TRAIN_ROUTE, train_body(
        model_name="crowded", img_dir="train_data/crowded/images", labels="train_data/crowded/labels.txt",
    ))
    assert status == 400, answer
    assert "more than 300 boxes" in answer["details"] and "max_boxes_per_image" in answer["details"]
    assert "labels.txt:301" in answer["details"]  # reading stopped at the line over the limit
    assert not (runtime.work_dir / "models" / "crowded").exists()


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        (
            '{"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "cat"}],'
            ' "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1' + "0" * 400
            + ", 1, 2, 2]}]}",
            "bbox must be 4 finite numbers",
        ),
    ],
    ids=["deeply-nested", "400-digit-number"],
)
def test_a_hostile_coco_file_is_a_one_line_invalid_argument(runtime, content, problem):
    coco = runtime.work_dir / "train_data" / "hostile.json"
    coco.write_text(content)
    before = runtime.log()
    status, answer = runtime.http("POST", TRAIN_ROUTE, train_body(
        model_name="hostile", labels="train_data/hostile.json",
    ))
    assert status == 400, answer
    assert problem in answer["details"]
    assert "Traceback" not in runtime.log()[len(before):]


# -- where the runtime listens ------------------------------------------------------------------


def _outward_address() -> str:
    """This machine's address on its default route (no packet is sent), or skip the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
        except OSError:
            pytest.skip("this machine has no network interface besides loopback")
        address = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has no network interface besides loopback")
    return address


def test_no_port_is_reachable_on_another_address_of_the_machine(runtime):
    """The launcher binds loopback: gRPC, HTTP and metrics refuse a connection on the machine's
    outward address. caikit itself listens on every interface; the rebinding is ours
    (caikit_workarounds.build_servers_with), and this notices a caikit upgrade that undoes it."""
    address = _outward_address()
    for server, port in runtime.ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as connection:
            connection.settimeout(2)
            assert connection.connect_ex((address, port)) != 0, f"{server} port {port} open on {address}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as connection:
            connection.settimeout(2)
            assert connection.connect_ex((common.HOST, port)) == 0, f"{server} port {port} closed"


# -- the log ---------------------------------------------------------------------------------------


def _new_log_lines(runtime, before: str) -> List[str]:
    """Lines logged since ``before``, without uvicorn's access line (one per request)."""
    return [
        line for line in runtime.log()[len(before):].splitlines()
        if line.strip() and '" 4' not in line and '" 2' not in line
    ]


@pytest.mark.parametrize(
    "threshold, inputs, says",
    [(5.0, IMAGE, "threshold must be a number between 0 and 1"), (None, b"hello", "not a complete image")],
    ids=["threshold-out-of-range", "not-an-image"],
)
def test_a_client_error_is_one_warning_line_over_grpc_and_http(runtime, threshold, inputs, says):
    with grpc.insecure_channel(f"{common.HOST}:{runtime.ports['grpc']}") as channel:
        before = runtime.log()
        with pytest.raises(grpc.RpcError) as refused:
            predict_callable(channel)(inputs, threshold, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        wait_until(lambda: says in runtime.log()[len(before):], 5, f"log line {says!r}")
        lines = _new_log_lines(runtime, before)
        assert len(lines) == 1 and ":WARN:" in lines[0] and says in lines[0], lines

    body = {"model_id": "my_model", "inputs": base64.b64encode(inputs).decode()}
    if threshold is not None:
        body["parameters"] = {"threshold": threshold}
    before = runtime.log()
    status, answer = runtime.http("POST", "/api/v1/task/object-detection", body)
    assert status == 400, answer
    wait_until(lambda: says in runtime.log()[len(before):], 5, f"log line {says!r}")
    lines = _new_log_lines(runtime, before)
    assert len(lines) == 1 and ":WARN:" in lines[0] and says in lines[0], lines
    assert answer["id"] in lines[0]  # the id the client was given finds the line
    assert "Traceback" not in runtime.log()[len(before):]
