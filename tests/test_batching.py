"""Dynamic batching and the thread policy (caikit_computer_vision/batching.py, detection.py).

What a client must be able to rely on: an answer is the one its image gets alone (the same
labels and boxes; scores to 1e-6, since float sums in another order, as with another torch
thread count, move the last bits), a bad image
fails its own request only, a request whose client left never reaches a forward pass, a lone
request never waits for company, and torch's threads follow how many passes run at once.
"""

# Standard
from concurrent.futures import ThreadPoolExecutor
import asyncio
import os
import threading
import time

# Third Party
import grpc
import pytest
import torch

# Local
from caikit_computer_vision.batching import (
    PARALLEL_PASS_OPERATIONS,
    Batcher,
    ClientGone,
    ThreadShare,
)
from caikit_computer_vision.detection import Detector
from caikit_computer_vision.guards.http_door import _DisconnectWatch
from caikit_computer_vision.guards import limits as limits_module
from caikit_computer_vision.guards.limits import Limits
from caikit_computer_vision.modules.object_detection import TransformersObjectDetector
from caikit_computer_vision.modules.object_detection import transformers as transformers_module
from example_tools.tiny_yolos import build_tiny_yolos

from .conftest import encode_image, noise_image
from .served_example import predict_status

# Different sizes and contents; the tiny model processes all but the elongated one to one shape.
IMAGE_SIZES = [(64, 64), (80, 60), (640, 480), (33, 200), (300, 300), (64, 64), (120, 90), (50, 50)]


def _images():
    return [
        encode_image(noise_image(width, height, seed=index))
        for index, (width, height) in enumerate(IMAGE_SIZES)
    ]


def _as_tuples(result):
    return [
        (obj.label, obj.score, obj.box.xmin, obj.box.ymin, obj.box.xmax, obj.box.ymax)
        for obj in result.detected_objects
    ]


def assert_same_answers(answers, expected):
    """Each answer has the expected labels and boxes, in order, and scores to 1e-6."""
    assert len(answers) == len(expected)
    for answer, wanted in zip(answers, expected):
        assert [found[:1] + found[2:] for found in answer] == [
            found[:1] + found[2:] for found in wanted
        ]
        assert [found[1] for found in answer] == pytest.approx(
            [found[1] for found in wanted], rel=0, abs=1e-6
        )


# -- answers -----------------------------------------------------------------------------------


def test_a_row_of_a_batched_forward_pass_equals_the_image_alone(detector):
    engine = Detector(detector.model, detector.processor, detector.device)
    prepared = [engine.prepare(image) for image in _images()]
    prepared = [image for image in prepared if image.shape == prepared[0].shape]
    assert len(prepared) > 4
    batched = engine.forward(prepared)
    for image, row in zip(prepared, batched):
        alone_logits, alone_boxes = engine.forward([image])[0]
        assert torch.allclose(row[0], alone_logits, rtol=0, atol=1e-6)
        assert torch.allclose(row[1], alone_boxes, rtol=0, atol=1e-6)


def test_detect_gives_each_image_its_own_answer_alone(detector):
    engine = Detector(detector.model, detector.processor, detector.device)
    images = _images()
    together = engine.detect(images, threshold=0.0)
    alone = [engine.detect([image], threshold=0.0)[0] for image in images]
    assert all(together), "the untrained tiny model finds something at threshold 0"
    assert_same_answers(
        [[(d.label, d.score, d.xmin, d.ymin, d.xmax, d.ymax) for d in found] for found in together],
        [[(d.label, d.score, d.xmin, d.ymin, d.xmax, d.ymax) for d in found] for found in alone],
    )


def test_concurrent_runs_share_forward_passes_and_answer_as_alone(detector):
    images = _images()
    alone = [_as_tuples(detector.run(image, 0.0)) for image in images]
    before = len(detector.batcher.batch_sizes)
    start = threading.Barrier(len(images))

    def run(image):
        start.wait()
        return _as_tuples(detector.run(image, 0.0))

    for _ in range(3):  # thread start-up may leave a round unbatched; three never all are
        with ThreadPoolExecutor(len(images)) as pool:
            assert_same_answers(list(pool.map(run, images)), alone)
    sizes = detector.batcher.batch_sizes[before:]
    assert sum(sizes) == 3 * len(images)
    assert max(sizes) > 1, f"no forward pass was shared: {sizes}"
    assert max(sizes) <= detector.batcher.max_batch_size


def test_a_bad_image_fails_its_own_request_only(detector):
    images = _images()
    alone = [_as_tuples(detector.run(image, 0.0)) for image in images]
    requests = images[:4] + [b"this is not an image"] + images[4:]
    start = threading.Barrier(len(requests))

    def run(image):
        start.wait()
        try:
            return _as_tuples(detector.run(image, 0.0))
        except ValueError as err:
            return err

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(run, requests))
    assert isinstance(answers[4], ValueError) and "image" in str(answers[4])
    assert_same_answers(answers[:4] + answers[5:], alone)


# -- the batcher -----------------------------------------------------------------------------


def _recording_batcher(max_batch_size=8, max_delay_s=0.05, run=None):
    batches = []

    def run_batch(items):
        batches.append(list(items))
        return [run(item) if run else item * 10 for item in items]

    return Batcher(run_batch, max_batch_size, max_delay_s), batches


def test_a_request_whose_client_left_never_reaches_a_forward_pass():
    release = threading.Event()
    first_started = threading.Event()

    def slow(item):
        first_started.set()
        assert release.wait(10)
        return item

    batcher, batches = _recording_batcher(run=slow)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher.submit, "k", 1)
        assert first_started.wait(10)
        # Queued behind the running pass: one client stays, one leaves before its turn.
        staying = pool.submit(batcher.submit, "k", 2)
        leaving = pool.submit(batcher.submit, "k", 3, lambda: False)
        _wait_for(lambda: batcher.queued == 2)
        release.set()
        assert first.result(10) == 1 and staying.result(10) == 2
        with pytest.raises(ClientGone):
            leaving.result(10)
    assert batches == [[1], [2]]


def test_a_lone_request_does_not_wait_for_company():
    batcher, batches = _recording_batcher(max_delay_s=5.0)
    started = time.monotonic()
    assert batcher.submit("k", 4) == 40
    assert time.monotonic() - started < 2.5, "it waited for the collection delay"
    assert batches == [[4]]


def test_the_pass_waits_for_requests_still_preparing_their_image():
    batcher, batches = _recording_batcher(max_delay_s=5.0)
    prepared = threading.Event()
    with ThreadPoolExecutor(2) as pool:

        def late():
            with batcher.preparing():
                assert prepared.wait(10)
            return batcher.submit("k", 2)

        second = pool.submit(late)
        _wait_for(lambda: batcher.preparing_count == 1)
        first = pool.submit(batcher.submit, "k", 1)
        _wait_for(lambda: batcher.queued == 1)
        prepared.set()
        assert (first.result(10), second.result(10)) == (10, 20)
    assert batches == [[1, 2]]


def test_images_of_different_shapes_never_share_a_pass():
    batcher, batches = _recording_batcher(max_delay_s=0.2)
    items = [("a", 1), ("b", 2), ("a", 3), ("b", 4), ("a", 5)]
    start = threading.Barrier(len(items))

    def submit(key_item):
        key, item = key_item
        with batcher.preparing():
            start.wait()
        return batcher.submit(key, (key, item), lambda: True)

    batcher.run_batch = lambda batch: (batches.append(list(batch)), list(batch))[1]
    with ThreadPoolExecutor(len(items)) as pool:
        assert list(pool.map(submit, items)) == [(key, item) for key, item in items]
    assert all(len({key for key, _ in batch}) == 1 for batch in batches)
    assert sorted(item for batch in batches for _, item in batch) == [1, 2, 3, 4, 5]


def test_a_failing_pass_fails_the_requests_of_that_batch_and_the_next_pass_runs():
    calls = []

    def run_batch(items):
        calls.append(list(items))
        if 13 in items:
            raise RuntimeError("the model broke")
        return items

    batcher = Batcher(run_batch, max_batch_size=1, max_delay_s=0)
    with pytest.raises(RuntimeError, match="the model broke"):
        batcher.submit("k", 13)
    assert batcher.submit("k", 7) == 7


def test_batches_hold_at_most_max_batch_size():
    batcher, batches = _recording_batcher(max_batch_size=3, max_delay_s=0.2)
    start = threading.Barrier(10)

    def submit(item):
        with batcher.preparing():
            start.wait()
        return batcher.submit("k", item)

    with ThreadPoolExecutor(10) as pool:
        assert list(pool.map(submit, range(10))) == [item * 10 for item in range(10)]
    assert max(len(batch) for batch in batches) <= 3


# -- threads -----------------------------------------------------------------------------------


def test_a_pass_alone_gets_every_core_and_concurrent_passes_share_them():
    share = ThreadShare(cores=4)
    seen = {}

    def alone():
        thread = threading.Thread(target=lambda: _run(share, seen, "beside"))
        thread.start()
        thread.join()
        return _threads_here()

    assert share.run_forward(alone) == (4, "ccv-torch-team_0")
    # Started while the first ran: half the cores, in its own thread (the team thread is busy).
    assert seen["beside"] == (2, "beside")
    with share.training() as training:
        assert training == 3
        assert share.run_forward(_threads_here) == (1, "MainThread")
    assert share.run_forward(_threads_here, operations=1e6) == (1, "MainThread"), (
        "a pass too small to gain from threads runs on one, where it was asked for"
    )
    assert ThreadShare(cores=4, fixed=1).training_threads == 1
    assert ThreadShare(cores=4, fixed=3).run_forward(_threads_here) == (3, "ccv-torch-team_0")


def test_passes_on_many_threads_led_by_many_request_threads_build_one_openmp_team():
    """libgomp keeps a team of workers for every thread that started a parallel region; more
    workers than cores make them all sleep between regions (batching._OpenMpTeam)."""
    share = ThreadShare(cores=2)
    matrix = torch.randn(512, 512)
    ran_on = []

    def forward():
        ran_on.append(threading.current_thread().name)
        return float((matrix @ matrix).sum())  # a parallel region on two threads

    answered, finished = [], threading.Event()
    request_threads = [
        threading.Thread(
            target=lambda: (answered.append(share.run_forward(forward)), finished.wait(30))
        )
        for _ in range(4)
    ]
    before = _process_threads()
    for count, thread in enumerate(request_threads, 1):  # one after another: each pass alone
        thread.start()
        while len(answered) < count:
            time.sleep(0.01)
    # The four request threads, the team thread, its one OpenMP worker and the worker of
    # torch's own pool (started once per process by set_num_threads(2)); every request thread
    # leading its own pass would have added an OpenMP worker each (9 here).
    grown = _process_threads() - before
    finished.set()
    for thread in request_threads:
        thread.join()
    assert grown <= len(request_threads) + 3, grown
    assert ran_on == ["ccv-torch-team_0"] * 4


def test_a_model_loads_on_one_torch_thread(tmp_path, monkeypatch):
    """caikit loads models in threads that live on: one that ran torch on two threads would
    keep an OpenMP team (see the test above)."""
    saved = tmp_path / "model"
    TransformersObjectDetector(*build_tiny_yolos()).save(str(saved))
    read, threads_seen = transformers_module._read_hf_model, []

    def read_and_see(*args):
        threads_seen.append(torch.get_num_threads())
        return read(*args)

    monkeypatch.setattr(transformers_module, "_read_hf_model", read_and_see)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        TransformersObjectDetector.load(str(saved))
        assert torch.get_num_threads() == 2, "the load gives the thread its count back"
    finally:
        torch.set_num_threads(threads)
    assert threads_seen == [1]


def test_the_demo_model_is_small_and_a_yolos_tiny_size_model_large_for_threads(detector):
    image = encode_image(noise_image(640, 480))
    demo = Detector(detector.model, detector.processor, detector.device)
    assert demo.pass_operations([demo.prepare(image)] * 8) < PARALLEL_PASS_OPERATIONS
    large = Detector(*build_tiny_yolos(architecture="yolos-tiny"))
    assert large.pass_operations([large.prepare(image)]) > PARALLEL_PASS_OPERATIONS


def _threads_here():
    """(torch's threads, the thread's name) where a pass runs."""
    return torch.get_num_threads(), threading.current_thread().name


def _run(share, seen, name):
    threading.current_thread().name = name
    seen[name] = share.run_forward(_threads_here)


def _process_threads():
    return len(os.listdir("/proc/self/task"))


# -- configuration ------------------------------------------------------------------------------


def test_model_calls_are_few_a_core_on_a_cpu_and_fill_batches_on_a_gpu(monkeypatch):
    cores = limits_module._cores()
    monkeypatch.setattr(limits_module, "_models_run_on_a_gpu", lambda: False)
    assert Limits(predict_batch_size=8).model_calls == 2 * cores
    monkeypatch.setattr(limits_module, "_models_run_on_a_gpu", lambda: True)
    assert Limits(predict_batch_size=8).model_calls == 8 * cores
    assert Limits(predict_batch_size=1).model_calls == cores
    assert Limits(max_concurrent_model_calls=3).model_calls == 3


# -- through the runtime ----------------------------------------------------------------------------


def test_concurrent_grpc_predicts_answer_as_alone_and_a_bad_image_fails_alone(served):
    images = _images()
    alone = [_as_tuples(served.predict(image, 0.0)) for image in images]
    requests = images + [b"\xff\xd8 not really a JPEG"]
    start = threading.Barrier(len(requests))

    def call(image):
        start.wait()
        return predict_status(served.predict, image, 0.0)

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(call, requests))
    assert all(code is grpc.StatusCode.OK for code, _, _ in answers[:-1])
    assert_same_answers([_as_tuples(result) for _, _, result in answers[:-1]], alone)
    assert answers[-1][0] is grpc.StatusCode.INVALID_ARGUMENT


def _wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_the_http_door_sees_a_client_leave_and_the_app_still_gets_its_message():
    async def scenario():
        messages = asyncio.Queue()
        watch = _DisconnectWatch(messages.get)
        await asyncio.sleep(0)
        assert watch.client_waits(), "nothing received yet: the client is there"
        await messages.put({"type": "http.disconnect"})
        await asyncio.sleep(0)
        assert not watch.client_waits()
        assert await watch.receive() == {"type": "http.disconnect"}
        watch.close()

        staying = _DisconnectWatch(asyncio.Queue().get)
        await asyncio.sleep(0)
        assert staying.client_waits()
        staying.close()

    asyncio.run(scenario())


def test_a_batch_grows_only_while_its_pass_is_small():
    batcher, batches = _recording_batcher(max_batch_size=8, max_delay_s=0.2)
    batcher.batch_size_for = lambda item: 1 if item >= 100 else 3
    start = threading.Barrier(6)

    def submit(item):
        with batcher.preparing():
            start.wait()
        return batcher.submit("big" if item >= 100 else "small", item)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(submit, [1, 2, 3, 100, 101, 102]))
    assert all(len(batch) == 1 for batch in batches if batch[0] >= 100)
    assert max(len(batch) for batch in batches if batch[0] < 100) <= 3


def test_the_demo_model_batches_and_a_yolos_tiny_size_model_runs_one_image_a_pass(detector):
    image = encode_image(noise_image(640, 480))
    assert detector._batch_size_for(detector.detector.prepare(image)) >= 8
    large = TransformersObjectDetector(*build_tiny_yolos(architecture="yolos-tiny"))
    assert large._batch_size_for(large.detector.prepare(image)) == 1


def test_each_lane_runs_a_pass_of_its_own_at_once():
    running, most = [0], [0]
    lock = threading.Lock()

    def slow(items):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)  # the work of a pass: the lanes must overlap it
        with lock:
            running[0] -= 1
        return items

    batcher = Batcher(slow, max_batch_size=1, max_delay_s=0, lanes=2)
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(lambda item: batcher.submit("k", item), range(6))) == list(range(6))
    assert most[0] == 2
