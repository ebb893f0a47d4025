"""What every benchmark returns, how the runner prints and saves it, and how timings are taken.

A figure group is a module of ``bench/`` with ``run(quick: bool) -> List[Figure]``. Machines
are shared and noisy, so a timing is never read alone: ``interleaved`` alternates the thing
measured with its baseline (A B C, B C A, C A B, ...), and a figure reports the min / p50 / p99
over those rounds, usually of the paired difference or ratio to the baseline of the same round.
"""

# Standard
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence
import json
import os
import pathlib
import platform
import tempfile
import time

# Third Party
import torch

# Local
from example_tools.load_generator import percentile


@dataclass(frozen=True)
class Spread:
    """min / p50 / p99 of repeated measurements (nearest-rank percentiles)."""

    min: float
    p50: float
    p99: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> "Spread":
        ordered = sorted(values)
        if not ordered:
            raise ValueError("no measurements to summarize")
        return cls(ordered[0], percentile(ordered, 50), percentile(ordered, 99), len(ordered))

    def scaled(self, factor: float) -> "Spread":
        """The same spread in another unit (e.g. seconds to milliseconds)."""
        return Spread(self.min * factor, self.p50 * factor, self.p99 * factor, self.count)


@dataclass(frozen=True)
class Target:
    """An issue's target for a figure: ``value <= limit`` (or ``>=`` with ``at_least``)."""

    limit: float
    at_least: bool = False

    def met_by(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit

    def describe(self, unit: str) -> str:
        return f"{'>=' if self.at_least else '<='} {self.limit:g}{_unit_suffix(unit)}"


@dataclass
class Figure:
    """One number of the benchmark, with its spread, its target and how it was obtained."""

    group: str
    name: str
    value: float
    unit: str
    spread: Optional[Spread] = None
    target: Optional[Target] = None
    note: str = ""
    # Further numbers behind the figure (baselines, settings), kept in the JSON.
    details: Dict[str, float] = field(default_factory=dict)

    @classmethod
    def of_samples(
        cls,
        group: str,
        name: str,
        samples: Iterable[float],
        unit: str,
        scale: float = 1.0,
        target: Optional[Target] = None,
        note: str = "",
        details: Optional[Dict[str, float]] = None,
    ) -> "Figure":
        """The p50 of ``samples`` (times ``scale``, e.g. seconds to ms) with their spread."""
        spread = Spread.of(samples).scaled(scale)
        return cls(group, name, spread.p50, unit, spread, target, note, dict(details or {}))

    @property
    def met(self) -> Optional[bool]:
        return None if self.target is None else self.target.met_by(self.value)

    def as_json(self) -> dict:
        return {**asdict(self), "met": self.met}


# -- timing ------------------------------------------------------------------------------------


def interleaved(
    variants: Mapping[str, Callable[[], float]], rounds: int, warm_up_rounds: int = 1
) -> Dict[str, List[float]]:
    """What each variant returns in each of ``rounds`` rounds, the variants called interleaved.

    A round calls every variant once, one after the other; the order rotates every round so no
    variant always follows the same one. The ``warm_up_rounds`` first rounds are not kept.
    Round ``i`` of every variant ran within the same short window, so ``paired`` differences
    and ratios cancel most of a shared machine's drift.
    """
    names = list(variants)
    results: Dict[str, List[float]] = {name: [] for name in names}
    for round_index in range(warm_up_rounds + rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            result = variants[name]()
            if round_index >= warm_up_rounds:
                results[name].append(result)
    return results


def interleaved_rounds(
    variants: Mapping[str, Callable[[], object]],
    rounds: int,
    warm_up_rounds: int = 1,
    calls_per_round: int = 1,
) -> Dict[str, List[float]]:
    """Seconds per call of every variant in each round, timed ``interleaved``.

    In a round, each variant is called ``calls_per_round`` times in a row.
    """

    def timed(call: Callable[[], object]) -> Callable[[], float]:
        def measure() -> float:
            started = time.perf_counter()
            for _ in range(calls_per_round):
                call()
            return (time.perf_counter() - started) / calls_per_round

        return measure

    return interleaved(
        {name: timed(call) for name, call in variants.items()}, rounds, warm_up_rounds
    )


def paired(
    first: Sequence[float], second: Sequence[float], combine: Callable[[float, float], float]
) -> List[float]:
    """``combine(first[i], second[i])`` for every round, e.g. a difference or a ratio."""
    if len(first) != len(second):
        raise ValueError(f"rounds differ: {len(first)} and {len(second)}")
    return [combine(a, b) for a, b in zip(first, second)]


def difference(base: float, other: float) -> float:
    return other - base


def ratio(base: float, other: float) -> float:
    return other / base


# -- rendering ---------------------------------------------------------------------------------


def render_table(figures: Sequence[Figure]) -> str:
    """The figures as an aligned plain-text table, grouped as given."""
    header = ("group", "figure", "value", "min / p50 / p99", "target", "met", "note")
    rows = [header]
    for figure in figures:
        spread = figure.spread
        rows.append(
            (
                figure.group,
                figure.name,
                f"{_number(figure.value)}{_unit_suffix(figure.unit)}",
                (
                    ""
                    if spread is None
                    else f"{_number(spread.min)} / {_number(spread.p50)} / {_number(spread.p99)}"
                ),
                "" if figure.target is None else figure.target.describe(figure.unit),
                {None: "", True: "yes", False: "NO"}[figure.met],
                figure.note,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths) + "  ----")
    return "\n".join(lines)


def machine_description() -> Dict[str, str]:
    """What the numbers were measured on (Linux: the CPU's name comes from /proc/cpuinfo)."""
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
        ]
    return {
        "cpu": models[0] if models else platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "cores": str(len(os.sched_getaffinity(0))),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "platform": platform.platform(),
        "load_average": " ".join(f"{load:.2f}" for load in os.getloadavg()),
    }


def write_json(payload: dict, path: pathlib.Path) -> None:
    """Write ``payload`` as JSON, atomically (a temporary file beside ``path``, then rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as temporary:
        json.dump(payload, temporary, indent=2)
    os.replace(temporary.name, path)


def _number(value: float) -> str:
    """Three significant digits, but no exponent for hundreds and thousands."""
    return f"{value:.0f}" if 100 <= abs(value) < 10_000 else f"{value:.3g}"


def _unit_suffix(unit: str) -> str:
    if not unit:
        return ""
    return unit if unit in ("x", "%") else f" {unit}"
