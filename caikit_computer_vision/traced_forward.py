"""A YOLOS forward pass run as a TorchScript graph, trusted for an input shape only once it gave
exactly the eager pass's answer for that shape.

Why: in eager mode every one of the model's few hundred small operations returns to Python and
takes the GIL back. For the demo model that glue is most of the pass, and while other requests'
threads decode and post-process, each hand-back waits for the GIL (the figures are in
docs/performance.md, "The forward pass as a graph"). A graph runs its operations in C++ with the GIL
released, so the pass neither waits for Python nor holds up the threads around it.

How it stays the same model: ``torch.jit.trace`` records the operations one pass runs. Where
YOLOS' code branches in Python on a size, the recording keeps the branch taken, so a graph is
only known to be right for inputs like the one it was traced with. Every new input shape (batch
size included) therefore runs eager first, and the graph with it; the shape is trusted when the
two answers are equal bit for bit (``torch.equal``), and the eager answer is the one returned.
A shape whose answers differ stays eager for good; a trace that fails turns the graph off. The
graph shares the model's parameters (no copy).

``torch.jit.trace`` is deprecated in favour of ``torch.export`` and ``torch.compile``; neither
runs a pass outside Python without a C++ compiler at serve time (``torch.compile``'s inductor),
so the graph stays on TorchScript while the pinned torch has it.
"""

# Standard
from typing import Optional, Set, Tuple
import threading
import warnings

# Third Party
from transformers import YolosForObjectDetection
import torch

# Local
from .memory import return_freed_memory

# Input shapes a graph is checked for and trusted with, at most (each check costs one eager
# pass more; a model serving images of ever new sizes stops checking after this many).
MAX_TRUSTED_SHAPES = 1024


class TracedForward:
    """``model``'s forward pass: logits and boxes, from the graph where it is trusted."""

    def __init__(self, model: YolosForObjectDetection, max_shapes: int = MAX_TRUSTED_SHAPES):
        self.model = model
        self.max_shapes = max_shapes
        self._graph: Optional[torch.jit.ScriptModule] = None
        self._lock = threading.Lock()
        self._trusted: Set[Tuple[int, ...]] = set()
        self._refused: Set[Tuple[int, ...]] = set()
        # Why the graph is off for every shape (a trace failed), or None.
        self.failure: Optional[str] = None

    @property
    def trusted_shapes(self) -> Set[Tuple[int, ...]]:
        return set(self._trusted)

    @property
    def refused_shapes(self) -> Set[Tuple[int, ...]]:
        return set(self._refused)

    def __call__(self, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        shape = tuple(pixel_values.shape)
        if shape in self._trusted:
            return self._run_graph(pixel_values)
        eager = self.model(pixel_values=pixel_values)
        answer = (eager.logits, eager.pred_boxes)
        if self._worth_checking(shape):
            self._check(shape, pixel_values, answer)
        return answer

    def _worth_checking(self, shape: Tuple[int, ...]) -> bool:
        return (
            self.failure is None
            and shape not in self._refused
            and len(self._trusted) + len(self._refused) < self.max_shapes
        )

    def _check(
        self,
        shape: Tuple[int, ...],
        pixel_values: torch.Tensor,
        eager: Tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        """Trace the graph if there is none yet; trust ``shape`` if the graph's answer is the
        eager one. A request that finds another one checking goes on (its answer is eager
        anyway) rather than wait for a trace, which takes a second for a large model."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._worth_checking(shape) and shape not in self._trusted:
                self._check_held(shape, pixel_values, eager)
        finally:
            self._lock.release()

    def _check_held(self, shape: Tuple[int, ...], pixel_values: torch.Tensor, eager) -> None:
        """``_check`` with the lock held and the shape still to check."""
        traced_now = self._graph is None
        try:
            if traced_now:
                self._graph = _trace(self.model, pixel_values)
            traced = self._run_graph(pixel_values)
        except Exception as failure:  # the model stays served, eagerly
            self.failure = f"{type(failure).__name__}: {failure}"
            # Every shape eager from now on; the graph stays for passes already under way.
            self._trusted = set()
            return
        if all(torch.equal(mine, theirs) for mine, theirs in zip(traced, eager)):
            self._trusted.add(shape)
        else:
            self._refused.add(shape)
        del traced
        # Tracing and the two passes of a check leave freed blocks in this thread's arena,
        # hundreds of MiB for a yolos-tiny-size model: given back here.
        return_freed_memory(collect_cycles=traced_now)

    def _run_graph(self, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # Without the executor's optimisations (a per-thread setting): they may fuse operations,
        # which would change the numerics the check compared (and gained nothing measurable).
        with torch.jit.optimized_execution(False):
            outputs = self._graph(pixel_values)
        return outputs["logits"], outputs["pred_boxes"]


def _trace(model: YolosForObjectDetection, pixel_values: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        # torch warns at every size it reads in Python (TracerWarning) and that tracing is
        # deprecated; the per-shape check above is the answer to the first, the docstring to
        # the second.
        warnings.simplefilter("ignore")
        return torch.jit.trace(model, (pixel_values,), strict=False, check_trace=False)
