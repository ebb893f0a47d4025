"""Run the example's tests with one command, from a fresh clone or an existing .venv.

    python3 run_tests.py [pytest arguments]

Creates .venv (or updates it in place) from requirements-dev.lock, the runtime's locked packages
plus the test tools, then runs ``python -m pytest -q tests`` inside it; extra arguments go to
pytest (e.g. ``-k guards``; ``python3 run_tests.py --pytest-help`` lists them). The exit code is
pytest's: 5 (no tests collected) counts as a failure.

    python3 run_tests.py --fast    # the fast tier: no runtime process, no script (about a minute)

``--fast`` leaves out the tests marked ``e2e`` (tests/conftest.py marks them: they start a
runtime or run the example's scripts); CI runs both tiers. Test files are spread over the cores
(pytest-xdist, up to 4 workers; ``-n 0`` runs them in this one process, in order).
"""

# Standard
import os
import pathlib
import subprocess
import sys

# Local
from example_tools.venv import REPO_DIR, ensure_venv, requirements_for_this_machine

HELP_FLAGS = ("-h", "--help")
# Test workers at most (pytest-xdist): each starts the runtimes its test files share, about
# 600 MB apiece.
MAX_WORKERS = 4


def main() -> int:
    argv = sys.argv[1:]
    if any(flag in argv for flag in HELP_FLAGS):
        print(__doc__.strip())
        return 0
    requirements = requirements_for_this_machine(
        REPO_DIR / "requirements-dev.lock", REPO_DIR / "requirements-dev.txt"
    )
    covers = [REPO_DIR / "requirements.lock"] if requirements.suffix == ".lock" else []
    ensure_venv(requirements, [str(pathlib.Path(__file__).resolve()), *argv], covers=covers)
    pytest_args = []
    for arg in argv:
        pytest_args += {"--pytest-help": ["--help"], "--fast": ["-m", "not e2e"]}.get(arg, [arg])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests", *_workers(pytest_args), *pytest_args],
        cwd=REPO_DIR,
    ).returncode


def _workers(pytest_args) -> list:
    """pytest-xdist's options: one worker a core, at most ``MAX_WORKERS``, each taking whole test
    files (a module's runtime then starts once); none when the caller chose (-n, -p no:xdist)
    or there is one core."""
    chosen = ("-n", "--numprocesses", "--dist")
    if any(arg.startswith(chosen) or "xdist" in arg for arg in pytest_args):
        return []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(MAX_WORKERS, cores or 1)
    return ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []


if __name__ == "__main__":
    sys.exit(main())
