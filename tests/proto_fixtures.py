"""One real run of dump_protos.py per test session, shared by the test files that read its output.

pytest reads fixtures only from conftest.py and the test file itself, so each test file defines
its own session fixture around ``dump_protos_once``; the run itself is cached here, so the
session pays for one dump however many files use it.
"""

# Standard
from dataclasses import dataclass
from typing import Optional
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DUMP_SCRIPT = REPO_ROOT / "dump_protos.py"

# Put into protos/ before the shared run, which must replace the directory and drop it.
STALE_FILE_NAME = "left_by_an_earlier_dump.proto"

# A dump takes a few seconds; a hung one should fail the test, not the CI job's time limit.
DUMP_TIMEOUT_S = 300


@dataclass(frozen=True)
class DumpRun:
    """A finished run of dump_protos.py: where it ran and what it printed."""

    work_dir: pathlib.Path
    protos_dir: pathlib.Path
    stdout: str
    stderr: str


_shared_run: Optional[DumpRun] = None


def run_dump_script(work_dir: pathlib.Path, *args: str) -> DumpRun:
    """Run dump_protos.py in ``work_dir`` (its protos/ lands there); fail on a non-zero exit."""
    env = dict(os.environ)
    # Tests read the script's own log level: a LOG_LEVEL of the caller would hide its warnings.
    env.pop("LOG_LEVEL", None)
    result = subprocess.run(
        [sys.executable, str(DUMP_SCRIPT), *args],
        cwd=work_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=DUMP_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (
        f"dump_protos.py {' '.join(args)} exited {result.returncode}:\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return DumpRun(work_dir, work_dir / "protos", result.stdout, result.stderr)


def dump_protos_once(tmp_path_factory) -> DumpRun:
    """The session's dump of the real library, run over an existing protos/ with a stale file."""
    global _shared_run  # pylint: disable=global-statement
    if _shared_run is None:
        work_dir = tmp_path_factory.mktemp("dump_protos")
        (work_dir / "protos").mkdir()
        (work_dir / "protos" / STALE_FILE_NAME).write_text("// stale\n", encoding="utf-8")
        _shared_run = run_dump_script(work_dir)
    return _shared_run
