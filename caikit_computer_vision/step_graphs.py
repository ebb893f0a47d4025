"""Training steps replayed as CUDA graphs.

Why: the demo model's training step is hundreds of kernel launches of a few microseconds each,
so on a GPU the host's launching sets the pace, not the device (the profile is in
docs/training.md, "GPU"). A CUDA graph records a step's launches once and replays all of them
with one call.

What a recorded step needs, and where ``training.fine_tune`` provides it:

* the same shapes and the same memory every time: a graph is recorded per bucket of
  same-size images and only for full batches (which steps run how: ``ReplayPlan``); the step
  reads its images through an index tensor that is refilled in place before each replay, and
  adds its loss into a tensor that lives outside the graph;
* no host syncs inside the step (the whole training has one per epoch);
* an optimiser that keeps its step count and learning rate on the device (AdamW with
  ``capturable=True`` and a tensor learning rate the schedule fills in place), and nothing
  the schedule changes that the recorded kernels would not see (hence no momentum cycling);
* a few eager steps first, on a side stream, so lazily created state (the optimiser's moments,
  cuBLAS workspaces) exists before recording (CUDA semantics notes, "CUDA Graphs").

Anything the recording cannot take (a sync hidden in a newer library version, say) is caught:
the training logs why once and goes on eagerly, with the same results.
"""

# Standard
from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Optional, Set
import enum
import threading

# Third Party
import torch

# First Party
import alog

log = alog.use_channel("CCVGRAPH")

# Eager steps of a bucket before its step is recorded.
WARMUP_STEPS = 3
# At most this many recorded steps (buckets) per training: each keeps its own activations and
# gradients in its own memory pool, so a data set of many image sizes trains its rarer sizes
# eagerly rather than filling the GPU.
MAX_GRAPHS = 4

# A step: (bucket, image indices into it, which images to mirror) -> None; it adds its loss
# into a tensor of its own.
Step = Callable[[object, torch.Tensor, torch.Tensor], None]

# One recording at a time in a process (torch.cuda.graph's documented rule): the runtime runs
# up to max_concurrent_trainings trainings at once, each in a thread of its own. A recording
# takes milliseconds; replays need no lock.
_RECORDING = threading.Lock()


class Decision(enum.Enum):
    """How one training step runs."""

    EAGER = "eager"
    RECORD = "record"  # recorded now, then replayed
    REPLAY = "replay"


class ReplayPlan:
    """Decides, step by step, which steps run eagerly, which is recorded, which are replayed.

    No CUDA here, so that the rule is testable anywhere: a partial batch always runs eagerly
    (a recording's shapes are fixed); a bucket's first ``warmup_steps`` full batches run
    eagerly; the next is recorded and every later full batch of that bucket replays it. At most
    ``max_graphs`` buckets are recorded; the rest, and everything after a failed recording,
    run eagerly.
    """

    def __init__(
        self, batch_size: int, warmup_steps: int = WARMUP_STEPS, max_graphs: int = MAX_GRAPHS
    ):
        self.batch_size = batch_size
        self.warmup_steps = warmup_steps
        self.max_graphs = max_graphs
        self.failed = False
        self._recorded: Set[Hashable] = set()
        self._eager_steps: Dict[Hashable, int] = {}

    def decide(self, key: Hashable, batch_len: int) -> Decision:
        """How the next step of bucket ``key``, a batch of ``batch_len`` images, runs."""
        if batch_len != self.batch_size:
            return Decision.EAGER
        if key in self._recorded:
            return Decision.REPLAY
        if (
            not self.failed
            and len(self._recorded) < self.max_graphs
            and self._eager_steps.get(key, 0) >= self.warmup_steps
        ):
            return Decision.RECORD
        self._count_eager(key)
        return Decision.EAGER

    def recorded(self, key: Hashable) -> None:
        """The RECORD step of ``key`` was recorded: its later full batches replay it."""
        self._recorded.add(key)

    def recording_failed(self, key: Hashable) -> None:
        """The RECORD step of ``key`` could not be recorded: it and every later step run
        eagerly."""
        self.failed = True
        self._count_eager(key)

    def _count_eager(self, key: Hashable) -> None:
        self._eager_steps[key] = self._eager_steps.get(key, 0) + 1


@dataclass
class _RecordedStep:
    graph: torch.cuda.CUDAGraph
    indices: torch.Tensor
    flip: torch.Tensor


class StepGraphs:
    """Runs training steps on a CUDA device: eagerly at first, then replaying a recording.

    ``run`` takes one step of a bucket's batch, eagerly, recorded or replayed as
    ``ReplayPlan`` decides.
    """

    def __init__(self, step: Step, batch_size: int, device: torch.device):
        self._step = step
        self._batch_size = batch_size
        self._device = device
        self._plan = ReplayPlan(batch_size)
        self._recorded: Dict[Hashable, _RecordedStep] = {}
        self._side_stream = torch.cuda.Stream(device)
        # Its own recording stream: torch's default one is shared by every recording in the
        # process.
        self._record_stream = torch.cuda.Stream(device)
        # Why recording failed, once it has (then every step runs eagerly).
        self.failure: Optional[str] = None
        self.replays = 0

    @property
    def recorded(self) -> int:
        return len(self._recorded)

    def run(self, key: Hashable, bucket: object, indices: torch.Tensor,
            flip: torch.Tensor) -> None:
        decision = self._plan.decide(key, len(indices))
        if decision is Decision.RECORD:
            if self._record(key, bucket) is None:
                self._plan.recording_failed(key)
                decision = Decision.EAGER
            else:
                self._plan.recorded(key)
        if decision is Decision.EAGER:
            self._eager(bucket, indices, flip)
            return
        recorded = self._recorded[key]
        recorded.indices.copy_(indices)
        recorded.flip.copy_(flip)
        recorded.graph.replay()
        self.replays += 1

    def _eager(self, bucket: object, indices: torch.Tensor, flip: torch.Tensor) -> None:
        # The side stream waits for what came before and the main stream for the step, so the
        # order of the work is the same as on one stream.
        self._side_stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(self._side_stream):
            self._step(bucket, indices, flip)
        torch.cuda.current_stream(self._device).wait_stream(self._side_stream)

    def _record(self, key: Hashable, bucket: object) -> Optional[_RecordedStep]:
        indices = torch.zeros(self._batch_size, dtype=torch.long, device=self._device)
        flip = torch.zeros(self._batch_size, dtype=torch.bool, device=self._device)
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.current_stream(self._device)
        try:
            # thread_local: a runtime serves predictions (and maybe another training) on other
            # threads while it records; only this thread's calls must be recordable.
            with _RECORDING, torch.cuda.graph(
                graph, stream=self._record_stream, capture_error_mode="thread_local"
            ):
                self._step(bucket, indices, flip)
        except Exception as error:  # pylint: disable=broad-exception-caught
            # Nothing ran: recording only records. The step is taken eagerly instead, on the
            # stream of before (a failed recording's exit does not switch back to it).
            torch.cuda.set_stream(stream)
            self.failure = f"{type(error).__name__}: {error}".splitlines()[0]
            log.warning(
                "<CCV10448230W>",
                "training steps will not be replayed as CUDA graphs (%s); training eagerly",
                self.failure,
            )
            return None
        recorded = _RecordedStep(graph, indices, flip)
        self._recorded[key] = recorded
        log.info("<CCV10448231I>", "recorded a training step as a CUDA graph (%d so far)",
                 len(self._recorded))
        return recorded
