"""Run the example's tests with one command, from a fresh clone or an existing .venv.

    python3 run_tests.py [pytest arguments]

Creates .venv (or updates it in place) from requirements-dev.txt, which includes
requirements.txt, then runs ``python -m pytest -q tests`` inside it; extra arguments go to pytest
(e.g. ``-k guards``). The exit code is pytest's: 5 (no tests collected) counts as a failure.
"""

# Standard
import pathlib
import subprocess
import sys

# Local
from example_tools.venv import REPO_DIR, ensure_venv

REQUIREMENTS = REPO_DIR / "requirements-dev.txt"


def main() -> int:
    ensure_venv(REQUIREMENTS, [str(pathlib.Path(__file__).resolve()), *sys.argv[1:]])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests", *sys.argv[1:]], cwd=REPO_DIR
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
