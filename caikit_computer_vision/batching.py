"""Dynamic batching of predictions, and torch threads that follow the load.

Why our own batcher: caikit 0.29's ``runtime.batching`` wraps a model in a ``Batcher`` that its
task predict RPC rejects (``_verify_model_task`` reads ``model.__class__.tasks``, which the
wrapper lacks), so every predict would answer INTERNAL; making it serve task RPCs means patching
both the wrapper and the servicer. A batcher inside the module needs no caikit at all.

How it works, without a thread of its own: each request prepares its image in its own server
thread (a bad image fails there, alone), then hands the processed pixels to its model's
``Batcher``. A request that finds a free lane leads (``lanes``: the cores, so that under load
each core runs passes of its own, which serves more than one pass spread over all cores): it
gathers what is waiting with the same processed shape (up to ``max_batch_size``, and only as
many as keep the pass under ``PARALLEL_PASS_OPERATIONS``: a big model's pass gains nothing from
company), waits at most ``max_delay_s`` for more only while other requests are still preparing
theirs (a lone client never waits), runs one forward pass and hands each request its row. While
every lane runs, new requests queue; when a leader's own request is answered, it hands its lane
to the oldest queued request. A request whose client gave up (``still_wanted`` says no) is
dropped before the pass.

Threads follow the load (``ThreadShare``): a forward pass alone gets every core as torch
intra-op threads; passes of several models, and trainings, share them; a pass too small to gain
from threads (``PARALLEL_PASS_OPERATIONS``) gets one. torch's thread count is
per thread (OpenMP's), so setting it in the thread that runs the pass affects only that pass.
A pass on more than one thread runs on one long-lived thread of the share (``_OpenMpTeam``
says why), the others in the thread that leads them.
"""

# Standard
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from contextvars import ContextVar
from typing import Callable, Generic, Hashable, Iterator, List, Optional, Sequence, TypeVar
import threading
import time

# Third Party
import torch

# A forward pass of fewer operations runs on one thread: waking more costs more than they save
# (the demo model, 2 to 12 million a pass: 0.8 ms on one thread, 3 ms on two; a yolos-tiny-size
# model, 2 to 100 billion: faster on more threads when the cores are free). It is also as far as
# a batch grows: up to there a pass is dominated by its fixed costs, which a batch shares; beyond,
# it is compute-bound, and company only costs cache and memory (a yolos-tiny-size model at
# 640x480: 8 clients served 3.43 req/s in batches of 8, against 4.14 for a server that runs one
# image at a time; bench/peers).
PARALLEL_PASS_OPERATIONS = 1e9

Item = TypeVar("Item")
Answer = TypeVar("Answer")
Result = TypeVar("Result")


class ClientGone(Exception):
    """The request's client gave up before its forward pass: it left the batch."""


class _OpenMpTeam:
    """The one thread that runs every forward pass of more than one torch thread.

    Why one: libgomp, torch's OpenMP on Linux, gives each thread that starts a parallel region a
    team of worker threads of its own, and keeps it for as long as that thread lives. Once the
    workers of all teams outnumber the cores, every team's threads stop spinning between
    regions and sleep instead (libgomp's throttled spin count), and each wake-up costs a
    context switch: a yolos-tiny-size pass on two threads woke them about 460 times and took 7 %
    longer (175.7 -> 188.0 ms here) as soon as a second thread had run a pass of two threads,
    and was fast again once that thread had ended. Passes led by whichever request thread
    found a lane would build a team in every server thread; passes run here build one.
    The executor starts its thread at the first such pass, never at import.
    """

    def __init__(self):
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ccv-torch-team")

    def run(self, threads: int, function: Callable[[], Result]) -> Result:
        """``function()`` on the team's thread with ``threads`` torch threads; its result or
        its exception."""
        return self._executor.submit(_on_threads, threads, function).result()


def _on_threads(threads: int, function: Callable[[], Result]) -> Result:
    set_torch_threads(threads)
    return function()


def set_torch_threads(threads: int) -> None:
    """torch's intra-op threads in this thread.

    torch sets a thread's count from the one last set in any thread when the thread first
    reads or uses it (``at::lazy_init_num_threads``), which would undo a count set before: so
    read it first.
    """
    torch.get_num_threads()
    torch.set_num_threads(threads)


class ThreadShare:
    """Intra-op threads for forward passes and trainings: the cores divided among those running.

    A training takes ``training_threads`` (``fixed``, else all cores but one, which stay for
    predictions); forward passes divide what trainings leave. ``fixed`` (the config's
    ``torch_threads``) overrides the division. A pass given more than one thread runs on the
    share's OpenMP team thread while no other pass uses it.
    """

    def __init__(self, cores: int, fixed: Optional[int] = None):
        self.cores = max(1, cores)
        self.fixed = fixed
        self._forwards = 0
        self._training_threads = 0
        self._team = _OpenMpTeam()
        self._team_in_use = False
        self._lock = threading.Lock()

    @property
    def training_threads(self) -> int:
        return self.fixed or max(1, self.cores - 1)

    def run_forward(
        self, forward: Callable[[], Result], operations: float = PARALLEL_PASS_OPERATIONS
    ) -> Result:
        """``forward()``, a pass of about ``operations``, on the threads its share gives it.

        On more than one thread it runs on the team thread; when that is in use (many cores,
        several passes at once), in this thread, as every pass did before the team thread.
        """
        with self._lock:
            self._forwards += 1
            free = max(1, self.cores - self._training_threads)
            threads = self.fixed or (
                max(1, free // self._forwards) if operations >= PARALLEL_PASS_OPERATIONS else 1
            )
            on_team = threads > 1 and not self._team_in_use
            if on_team:
                self._team_in_use = True
        try:
            if on_team:
                return self._team.run(threads, forward)
            set_torch_threads(threads)
            return forward()
        finally:
            with self._lock:
                self._forwards -= 1
                if on_team:
                    self._team_in_use = False

    @contextmanager
    def training(self) -> Iterator[int]:
        """Around a training: count its threads, set and yield them."""
        threads = self.training_threads
        with self._lock:
            self._training_threads += threads
        set_torch_threads(threads)
        try:
            yield threads
        finally:
            with self._lock:
                self._training_threads -= threads


# Whether the client of the request being served still waits for its answer; the doors set it
# (gRPC: the call is active; HTTP: the connection has not been closed).
_STILL_WANTED: ContextVar[Callable[[], bool]] = ContextVar(
    "ccv_client_still_waiting", default=lambda: True
)


def client_still_waiting() -> Callable[[], bool]:
    """The check for the request being served (always true outside a served request)."""
    return _STILL_WANTED.get()


@contextmanager
def serving_client(still_waiting: Callable[[], bool]) -> Iterator[None]:
    """Around the handling of a request: ``client_still_waiting()`` returns ``still_waiting``."""
    token = _STILL_WANTED.set(still_waiting)
    try:
        yield
    finally:
        _STILL_WANTED.reset(token)


@dataclass(eq=False)
class _Request(Generic[Item, Answer]):
    key: Hashable
    item: Item
    still_wanted: Callable[[], bool]
    answer: Optional[Answer] = None
    failure: Optional[BaseException] = None
    done: bool = False
    # Whether its thread leads passes (it found a free lane, or one was handed to it).
    leads: bool = False
    # Set when the request is answered, or when its thread is to lead.
    woken: threading.Event = field(default_factory=threading.Event)
    # Set when the request is answered.
    answered: threading.Event = field(default_factory=threading.Event)


class Batcher(Generic[Item, Answer]):
    """Runs ``run_batch`` over requests of one key at a time, at most ``max_batch_size`` each.

    ``run_batch(items)`` returns one answer per item, in order; if it raises, every request of
    that batch gets the exception. Each waiting thread is woken once, for its answer or to lead:
    never all of them for every change (a notify_all per request cost a third of the GIL at 8
    clients).
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Sequence[Answer]],
        max_batch_size: int,
        max_delay_s: float,
        batch_size_for: Callable[[Item], int] = lambda _item: 1 << 30,
        lanes: int = 1,
    ):
        self.run_batch = run_batch
        self.max_batch_size = max(1, max_batch_size)
        # The most items a batch that starts with this item may hold (within max_batch_size).
        self.batch_size_for = batch_size_for
        self.max_delay_s = max(0.0, max_delay_s)
        self._lock = threading.Lock()
        # Only the leader waits on this, while it gathers a batch.
        self._gathering = threading.Condition(self._lock)
        self._queue: List[_Request] = []
        # Passes that may run at once (each led by a request's thread), and those leading now.
        self.lanes = max(1, lanes)
        self._leaders = 0
        self._preparing = 0
        # Sizes of the batches run, the last few hundred (for tests and bench).
        self.batch_sizes: List[int] = []

    @property
    def queued(self) -> int:
        """Requests waiting for a forward pass."""
        return len(self._queue)

    @property
    def preparing_count(self) -> int:
        """Requests preparing their image, which a gathering leader may wait for."""
        return self._preparing

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Around a request's preparation: a leader may wait for it to join its batch."""
        with self._lock:
            self._preparing += 1
        try:
            yield
        finally:
            with self._lock:
                self._preparing -= 1
                self._gathering.notify_all()

    def submit(
        self, key: Hashable, item: Item, still_wanted: Callable[[], bool] = lambda: True
    ) -> Answer:
        """``item``'s answer, computed in a batch of items with the same ``key``."""
        request = _Request(key, item, still_wanted)
        with self._lock:
            self._queue.append(request)
            if self._leaders < self.lanes:
                self._leaders += 1
                request.leads = True
            else:
                self._gathering.notify_all()
        if not request.leads:
            request.woken.wait()
        if not request.done:  # it leads: a lane was free, or a leader handed its lane over
            self._lead_until_done(request)
        if request.failure is not None:
            raise request.failure
        return request.answer

    def _lead_until_done(self, own: _Request) -> None:
        """Run passes until ``own`` is answered, then hand the lane to the oldest follower."""
        try:
            while not own.done:
                batch = self._gather()
                if batch is None:  # another lane took ``own`` into its pass
                    own.answered.wait()
                else:
                    self._run(batch)
        finally:
            with self._lock:
                follower = next((request for request in self._queue if not request.leads), None)
                if follower is None:
                    self._leaders -= 1
                else:
                    follower.leads = True
                    follower.woken.set()

    def _gather(self) -> Optional[List[_Request]]:
        """The next batch: the oldest request's key, waiting briefly while others prepare;
        None when nothing is queued (another lane took it)."""
        deadline = time.monotonic() + self.max_delay_s
        with self._lock:
            if not self._queue:
                return None
            first = self._queue[0]
            size = max(1, min(self.max_batch_size, self.batch_size_for(first.item)))
            while True:
                same = [request for request in self._queue if request.key == first.key]
                left = deadline - time.monotonic()
                if len(same) >= size or self._preparing == 0 or left <= 0:
                    break
                self._gathering.wait(left)
            batch = same[:size]
            taken = set(map(id, batch))
            self._queue = [request for request in self._queue if id(request) not in taken]
        return batch

    def _run(self, batch: List[_Request]) -> None:
        wanted = []
        for request in batch:
            if request.still_wanted():
                wanted.append(request)
            else:
                request.failure = ClientGone("the client gave up before its forward pass")
        try:
            answers = list(self.run_batch([request.item for request in wanted])) if wanted else []
            if len(answers) != len(wanted):
                raise RuntimeError(f"{len(answers)} answers for a batch of {len(wanted)}")
            for request, answer in zip(wanted, answers):
                request.answer = answer
        except Exception as failure:  # every request of the batch learns of it
            for request in wanted:
                request.failure = failure
        finally:
            if wanted:
                self.batch_sizes = (self.batch_sizes + [len(wanted)])[-256:]
            for request in batch:
                if request.answer is None and request.failure is None:
                    request.failure = RuntimeError("the forward pass was interrupted")
                request.done = True
                request.answered.set()
                request.woken.set()
