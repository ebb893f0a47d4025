"""The model call gate: a bound on model calls shared by gRPC threads and HTTP requests on an
event loop, first come first served, with no thread taken by a waiting HTTP request."""

# Standard
import asyncio
import threading
import time

# Third Party
import pytest

# Local
from caikit_computer_vision.guards.front_door import ModelCallGate

WAIT_S = 10


def _start_loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop, thread


def _stop_loop(loop, thread):
    loop.call_soon_threadsafe(loop.stop)
    thread.join(WAIT_S)
    loop.close()


def _wait_until(condition):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_threads_and_event_loop_requests_never_exceed_the_slots_together():
    gate = ModelCallGate(2)
    lock = threading.Lock()
    inside = [0]
    most = [0]

    def enter():
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])

    def leave():
        with lock:
            inside[0] -= 1

    def grpc_call():
        for _ in range(30):
            with gate.held():
                enter()
                time.sleep(0.0005)
                leave()

    async def http_request():
        for _ in range(30):
            await gate.acquire_async()
            try:
                enter()
                await asyncio.sleep(0.0005)
                leave()
            finally:
                gate.release()

    loop, loop_thread = _start_loop()
    try:
        threads = [threading.Thread(target=grpc_call) for _ in range(4)]
        for thread in threads:
            thread.start()
        requests = [asyncio.run_coroutine_threadsafe(http_request(), loop) for _ in range(4)]
        for request in requests:
            request.result(WAIT_S)
        for thread in threads:
            thread.join(WAIT_S)
    finally:
        _stop_loop(loop, loop_thread)
    assert most[0] == 2
    # Every slot came back: both can be taken again without waiting.
    assert gate.free == 2 and not gate.waiting


def test_a_released_slot_goes_to_the_oldest_waiter_of_either_kind():
    gate = ModelCallGate(1)
    order = []
    gate.acquire()
    loop, loop_thread = _start_loop()
    try:

        def grpc_call(name):
            with gate.held():
                order.append(name)

        async def http_request(name):
            await gate.acquire_async()
            order.append(name)
            gate.release()

        first = threading.Thread(target=grpc_call, args=("grpc 1",))
        first.start()
        _wait_until(lambda: gate.waiting == 1)
        second = asyncio.run_coroutine_threadsafe(http_request("http 2"), loop)
        _wait_until(lambda: gate.waiting == 2)
        third = threading.Thread(target=grpc_call, args=("grpc 3",))
        third.start()
        _wait_until(lambda: gate.waiting == 3)
        fourth = asyncio.run_coroutine_threadsafe(http_request("http 4"), loop)
        _wait_until(lambda: gate.waiting == 4)
        gate.release()
        first.join(WAIT_S)
        second.result(WAIT_S)
        third.join(WAIT_S)
        fourth.result(WAIT_S)
    finally:
        _stop_loop(loop, loop_thread)
    assert order == ["grpc 1", "http 2", "grpc 3", "http 4"]


def test_an_http_request_waits_without_a_thread():
    gate = ModelCallGate(1)
    gate.acquire()
    before = threading.active_count()

    async def many_waiting():
        waits = [asyncio.ensure_future(gate.acquire_async()) for _ in range(20)]
        await asyncio.sleep(0.05)
        during = threading.active_count()
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        return during

    assert asyncio.run(many_waiting()) == before
    gate.release()
    assert gate.free == 1 and not gate.waiting


def test_a_cancelled_wait_takes_no_slot():
    gate = ModelCallGate(1)

    async def scenario():
        await gate.acquire_async()
        waiting = asyncio.ensure_future(gate.acquire_async())
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.release()
        # The slot is free again: taken at once.
        await asyncio.wait_for(gate.acquire_async(), WAIT_S)
        gate.release()

    asyncio.run(scenario())
    assert gate.free == 1 and not gate.waiting


def test_a_wait_cancelled_after_its_slot_was_handed_over_passes_the_slot_on():
    gate = ModelCallGate(1)

    async def scenario():
        await gate.acquire_async()
        cancelled = asyncio.ensure_future(gate.acquire_async())
        after = asyncio.ensure_future(gate.acquire_async())
        await asyncio.sleep(0)
        gate.release()  # hands the slot to ``cancelled``: its future is resolved ...
        cancelled.cancel()  # ... and its request goes away before it resumes
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await asyncio.wait_for(after, WAIT_S)
        gate.release()

    asyncio.run(scenario())
    assert gate.free == 1 and not gate.waiting


def test_a_slot_released_by_a_thread_reaches_a_request_on_the_event_loop():
    gate = ModelCallGate(1)
    gate.acquire()
    loop, loop_thread = _start_loop()
    try:
        waiting = asyncio.run_coroutine_threadsafe(gate.acquire_async(), loop)
        _wait_until(lambda: gate.waiting == 1)
        assert not waiting.done()
        gate.release()
        waiting.result(WAIT_S)
    finally:
        _stop_loop(loop, loop_thread)
    gate.release()
    assert gate.free == 1


def test_releasing_more_than_was_acquired_is_an_error():
    gate = ModelCallGate(2)
    with gate.held():
        pass
    with pytest.raises(ValueError, match="released more often than acquired"):
        gate.release()


def test_a_slot_meant_for_a_request_whose_event_loop_has_closed_goes_to_the_next_waiter():
    gate = ModelCallGate(1)
    gate.acquire()
    loop, loop_thread = _start_loop()
    asyncio.run_coroutine_threadsafe(gate.acquire_async(), loop)
    _wait_until(lambda: gate.waiting == 1)
    _stop_loop(loop, loop_thread)  # shutdown: the HTTP server's loop is gone
    next_call = threading.Thread(target=gate.acquire)
    next_call.start()
    _wait_until(lambda: gate.waiting == 2)
    gate.release()
    next_call.join(WAIT_S)
    assert not next_call.is_alive() and gate.waiting == 0 and gate.free == 0
