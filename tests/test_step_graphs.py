"""Training steps replayed as CUDA graphs (step_graphs.py) do what eager steps do.

The rule of which steps run eagerly, which is recorded and which are replayed (``ReplayPlan``),
and the CUDA-only decisions of ``training.fine_tune`` are tested on any machine. The tests that
record and replay need a CUDA GPU and are skipped without one (CI has none): on a GPU they check
the real training step is recordable (no host sync hides in it), that replays train as eager
steps do, and that a step that cannot be recorded still trains, eagerly.
"""

# Standard
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Hashable, List, Sequence, Tuple
import math

# Third Party
import pytest
import torch

# Local
from caikit_computer_vision import training
from caikit_computer_vision.labelled_images import load_labelled_images
from caikit_computer_vision.step_graphs import (
    MAX_GRAPHS,
    WARMUP_STEPS,
    Decision,
    ReplayPlan,
    StepGraphs,
)
from caikit_computer_vision.training import (
    ImageBucket,
    Recipe,
    fine_tune,
    steps_per_epoch,
    wants_step_graphs,
)
from example_tools.tiny_yolos import build_tiny_yolos

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

BATCH = 8
STEPS = 12


E, R, P = Decision.EAGER, Decision.RECORD, Decision.REPLAY


def _plan_steps(
    plan: ReplayPlan, steps: Sequence[Tuple[Hashable, int]], recording_fails: bool = False
) -> List[Decision]:
    """What StepGraphs.run does with each (bucket, batch length), without a GPU."""
    decisions = []
    for key, batch_len in steps:
        decision = plan.decide(key, batch_len)
        if decision is R and recording_fails:
            plan.recording_failed(key)
            decision = E
        elif decision is R:
            plan.recorded(key)
        decisions.append(decision)
    return decisions


# -- which steps are recorded and replayed: any machine ----------------------------------------


def test_the_numbers_docs_training_md_quotes():
    assert (WARMUP_STEPS, MAX_GRAPHS) == (3, 4)


def test_a_bucket_warms_up_eagerly_then_is_recorded_once_and_replayed():
    decisions = _plan_steps(ReplayPlan(BATCH), [("a", BATCH)] * 7)
    assert decisions == [E, E, E, R, P, P, P]


def test_partial_batches_run_eagerly_and_do_not_count_as_warm_up():
    steps = [("a", 3)] * 4 + [("a", BATCH)] * 5 + [("a", BATCH - 1)]
    assert _plan_steps(ReplayPlan(BATCH), steps) == [E] * 4 + [E, E, E, R, P] + [E]


def test_at_most_max_graphs_buckets_are_recorded():
    steps = [(bucket, BATCH) for bucket in range(MAX_GRAPHS + 2) for _ in range(WARMUP_STEPS + 2)]
    decisions = _plan_steps(ReplayPlan(BATCH), steps)
    assert decisions.count(R) == MAX_GRAPHS
    per_bucket = WARMUP_STEPS + 2
    for late_bucket in (MAX_GRAPHS, MAX_GRAPHS + 1):
        start = late_bucket * per_bucket
        assert decisions[start : start + per_bucket] == [E] * per_bucket


def test_after_a_failed_recording_every_step_runs_eagerly():
    plan = ReplayPlan(BATCH)
    steps = [("a", BATCH)] * (WARMUP_STEPS + 3) + [("b", BATCH)] * (WARMUP_STEPS + 3)
    assert _plan_steps(plan, steps, recording_fails=True) == [E] * len(steps)
    assert plan.failed


def test_a_training_replays_every_full_batch_after_each_buckets_warm_up():
    """fine_tune's epochs (training._epoch_batches) through the plan: two image sizes whose
    last batch of every epoch is partial."""
    buckets = [_bucket(20), _bucket(12)]
    epochs = 4
    generator = torch.Generator().manual_seed(0)
    decisions = []
    plan = ReplayPlan(BATCH)
    for _ in range(epochs):
        batches = training._epoch_batches(buckets, BATCH, generator, 0.5, torch.device("cpu"))
        assert len(batches) == steps_per_epoch(buckets, BATCH) == 3 + 2
        decisions += _plan_steps(plan, [(key, len(indices)) for key, indices, _ in batches])
    full_batches = epochs * (20 // BATCH + 12 // BATCH)
    partial_batches = epochs * 2
    assert decisions.count(R) == 2
    assert decisions.count(R) + decisions.count(P) == full_batches - 2 * WARMUP_STEPS
    assert decisions.count(E) == partial_batches + 2 * WARMUP_STEPS


def test_steps_are_replayed_only_on_cuda_with_the_training_set_there():
    on_gpu = [SimpleNamespace(pixel_values=SimpleNamespace(device=torch.device("cuda")))]
    on_host = [SimpleNamespace(pixel_values=SimpleNamespace(device=torch.device("cpu")))]
    assert wants_step_graphs(Recipe(), torch.device("cuda"), on_gpu)
    assert not wants_step_graphs(Recipe(cuda_graphs=False), torch.device("cuda"), on_gpu)
    assert not wants_step_graphs(Recipe(), torch.device("cuda"), on_host)
    assert not wants_step_graphs(Recipe(), torch.device("cpu"), on_host)


def _bucket(images: int) -> ImageBucket:
    return ImageBucket(
        torch.zeros(images, 3, 4, 4),
        torch.zeros(images, 1, dtype=torch.long),
        torch.zeros(images, 1, 4),
        torch.ones(images, 1, dtype=torch.bool),
    )


# -- recording and replaying: a CUDA GPU ----------------------------------------------------------


class _Toy:
    """A linear model trained by a graph-friendly step on fixed data, indexed per batch."""

    def __init__(self, sync_in_step: bool = False):
        device = torch.device("cuda")
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(64, 5, generator=generator).to(device)
        self.targets = torch.randn(64, 1, generator=generator).to(device)
        self.model = torch.nn.Linear(5, 1)
        with torch.no_grad():
            for parameter in self.model.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        self.model.to(device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=torch.tensor(1e-2, device=device), fused=True,
            capturable=True,
        )
        self.loss_sum = torch.zeros((), device=device)
        self.sync_in_step = sync_in_step

    def step(self, bucket, indices, flip):
        del bucket
        inputs = torch.where(flip[:, None], -self.inputs[indices], self.inputs[indices])
        loss = (self.model(inputs) - self.targets[indices]).square().mean()
        if self.sync_in_step:
            # A host sync: a CUDA graph cannot record it.
            assert math.isfinite(loss.item())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum.add_(loss.detach())

    def weights(self):
        return torch.cat([p.detach().flatten() for p in self.model.parameters()]).cpu()


def _batches(sizes):
    generator = torch.Generator().manual_seed(1)
    for size in sizes:
        yield (torch.randperm(64, generator=generator)[:size].cuda(),
               (torch.rand(size, generator=generator) < 0.5).cuda())


@needs_cuda
def test_replayed_steps_train_as_eager_steps():
    eager, replayed = _Toy(), _Toy()
    graphs = StepGraphs(replayed.step, BATCH, torch.device("cuda"))
    for indices, flip in _batches([BATCH] * STEPS):
        eager.step(None, indices, flip)
        graphs.run("bucket", None, indices, flip)
    assert graphs.failure is None
    assert graphs.recorded == 1
    assert graphs.replays == STEPS - WARMUP_STEPS
    assert torch.allclose(replayed.weights(), eager.weights(), rtol=1e-5, atol=1e-6)
    assert torch.allclose(replayed.loss_sum.cpu(), eager.loss_sum.cpu(), rtol=1e-5)


@needs_cuda
def test_partial_batches_and_new_buckets_run_eagerly():
    toy = _Toy()
    graphs = StepGraphs(toy.step, BATCH, torch.device("cuda"))
    for indices, flip in _batches([BATCH] * (WARMUP_STEPS + 2) + [3]):
        graphs.run("first", None, indices, flip)
    for indices, flip in _batches([BATCH] * 2):
        graphs.run("second", None, indices, flip)
    # "first": 3 eager, recorded, 1 more replay, then a partial batch eagerly; "second" is
    # still warming up.
    assert (graphs.recorded, graphs.replays) == (1, 2)


@needs_cuda
def test_two_trainings_in_two_threads_record_and_replay_as_alone():
    # The runtime trains up to max_concurrent_trainings models at once, in threads.
    eager = [_Toy(), _Toy()]
    for indices, flip in _batches([BATCH] * STEPS):
        for toy in eager:
            toy.step(None, indices, flip)

    def train(toy):
        graphs = StepGraphs(toy.step, BATCH, torch.device("cuda"))
        for indices, flip in _batches([BATCH] * STEPS):
            graphs.run("bucket", None, indices, flip)
        torch.cuda.synchronize()
        return graphs

    replayed = [_Toy(), _Toy()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(train, replayed))
    for graphs, toy, alone in zip(done, replayed, eager):
        assert graphs.failure is None
        assert graphs.replays == STEPS - WARMUP_STEPS
        assert torch.allclose(toy.weights(), alone.weights(), rtol=1e-5, atol=1e-6)


@needs_cuda
def test_a_step_that_syncs_trains_eagerly_and_says_why():
    eager, fallback = _Toy(sync_in_step=True), _Toy(sync_in_step=True)
    stream = torch.cuda.current_stream()
    graphs = StepGraphs(fallback.step, BATCH, torch.device("cuda"))
    for indices, flip in _batches([BATCH] * STEPS):
        eager.step(None, indices, flip)
        graphs.run("bucket", None, indices, flip)
    assert graphs.failure
    assert (graphs.recorded, graphs.replays) == (0, 0)
    assert torch.cuda.current_stream() == stream
    assert torch.allclose(fallback.weights(), eager.weights(), rtol=1e-5, atol=1e-6)


@needs_cuda
def test_the_training_step_is_recorded_and_trains_like_eager_steps(train_dir, monkeypatch):
    """The real step (YOLOS, the DETR loss, clipping, fused AdamW) records without a sync, and
    a training of replays lands where the eager one does (to float rounding: the recorded
    kernels are the eager ones, but CUDA training is not bit-exact run to run)."""
    made = []

    class Spy(StepGraphs):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(training, "StepGraphs", Spy)
    images = load_labelled_images(str(train_dir / "images"), str(train_dir / "labels.txt"))
    base, _ = build_tiny_yolos()
    base_weights = {key: value.clone() for key, value in base.state_dict().items()}

    def train(recipe):
        model, processor = build_tiny_yolos()
        losses = fine_tune(model=model, processor=processor, images=images, num_epochs=4,
                           learning_rate=5e-3, batch_size=BATCH, seed=0,
                           device=torch.device("cuda"), longest_edge=128, max_aspect_ratio=4.0,
                           recipe=recipe)
        return model.state_dict(), losses

    replayed, replayed_losses = train(Recipe())
    eager, eager_losses = train(Recipe(cuda_graphs=False))
    assert len(made) == 1, "cuda_graphs=False must not make step graphs"
    assert made[0].failure is None
    assert made[0].replays == 4 * len(images) // BATCH - WARMUP_STEPS
    moved = sum(float((value.float() - base_weights[key].float().cuda()).square().sum())
                for key, value in eager.items())
    apart = sum(float((value.float() - replayed[key].float()).square().sum())
                for key, value in eager.items())
    assert moved > 0
    assert math.sqrt(apart) <= 0.01 * math.sqrt(moved), (apart, moved)
    assert replayed_losses == pytest.approx(eager_losses, rel=0.01)

