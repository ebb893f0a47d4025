"""Run the benchmarks, print one table and write the same figures as JSON.

    .venv/bin/python -m bench                      # every figure group, full length
    .venv/bin/python -m bench --quick              # a short version of each, to try a change
    .venv/bin/python -m bench --only serving_overhead throughput --json /tmp/figures.json

Run from the repository root. A figure group is a module ``bench/<name>.py`` listed in
``FIGURE_GROUPS`` with ``run(quick: bool) -> List[Figure]`` (bench/figures.py); a listed module
whose file is not there yet is reported as missing. Figures never pass or fail: the table says
which meet the issue's targets.
"""

# Standard
from typing import List, Optional, Sequence
import argparse
import importlib
import importlib.util
import pathlib
import sys
import time

# Local
from bench.figures import Figure, machine_description, render_table, write_json

# In the order they run and print.
FIGURE_GROUPS = (
    "serving_overhead",
    "throughput",
    "startup",
    "memory",
    "training_quality",
    "training_speed",
    "scaling",
    "front_door",
    # Not in CI: builds a venv per peer server (bench/peers/venvs.py) the first time.
    "peers",
)
DEFAULT_JSON = pathlib.Path(__file__).resolve().parent / "results" / "latest.json"


def present_groups() -> List[str]:
    """The figure groups whose module exists in bench/."""
    return [name for name in FIGURE_GROUPS if importlib.util.find_spec(f"bench.{name}")]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds and sizes: about a minute, to try a change"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=FIGURE_GROUPS,
        help=f"run only these figure groups (of: {', '.join(FIGURE_GROUPS)})",
    )
    parser.add_argument(
        "--json",
        type=pathlib.Path,
        default=DEFAULT_JSON,
        help="where to write the figures (default: bench/results/latest.json)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    present = present_groups()
    wanted = args.only or list(FIGURE_GROUPS)
    missing = [name for name in wanted if name not in present]
    for name in missing:
        print(f"bench/{name}.py is not there yet: its figures are left out", file=sys.stderr)
    started = time.monotonic()
    figures: List[Figure] = []
    seconds_per_group = {}
    for name in (name for name in wanted if name in present):
        group_started = time.monotonic()
        print(f"running {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
        figures += importlib.import_module(f"bench.{name}").run(args.quick)
        seconds_per_group[name] = round(time.monotonic() - group_started, 1)
    total_s = time.monotonic() - started

    machine = machine_description()
    print(render_table(figures))
    print(
        f"\n{len(figures)} figures in {total_s:.0f} s{' (quick)' if args.quick else ''} on "
        f"{machine['cores']} x {machine['cpu']}, load average {machine['load_average']}"
    )
    write_json(
        {
            "quick": args.quick,
            "machine": machine,
            "seconds": round(total_s, 1),
            "seconds_per_group": seconds_per_group,
            "missing_groups": missing,
            "figures": [figure.as_json() for figure in figures],
        },
        args.json,
    )
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
