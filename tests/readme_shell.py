"""Run the shell commands of README.md and docs/*.md as a reader would paste them.

The README writes the ports of runtime_config.yaml (127.0.0.1:8085, :8080, :8086); a test runtime
listens on free ports, so those addresses, and nothing else, are replaced before a command runs.
"""

# Standard
from typing import Dict, List
import os
import pathlib
import re
import shlex
import subprocess
import sys

# Third Party
import yaml

# Local
from example_tools.runtime_harness import RuntimeProcess
import common

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
# The pages a reader is sent to from the README; their commands are checked like its own.
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
# Tools that requirements-dev.txt installs into the virtualenv (grpcurl) are on a reader's PATH once
# the environment is activated, as the README says.
VENV_BIN = pathlib.Path(sys.executable).parent
COMMAND_TIMEOUT_S = 120


def readme_section(heading: str, text: str = None) -> str:
    """The text under ``heading`` (e.g. ``### The same calls over HTTP``), up to the next heading
    of the same or a higher level, in ``text`` or else in the one page of README.md and docs/
    that has that heading."""
    if text is None:
        pages = [page for page in (README, *DOCS) if heading in _lines(page)]
        assert len(pages) == 1, f"heading {heading!r} should be in one page, found in {pages}"
        text = pages[0].read_text(encoding="utf-8")
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next(
        (
            index
            for index in range(start, len(lines))
            if re.match(rf"#{{1,{level}}} ", lines[index])
        ),
        len(lines),
    )
    return "\n".join(lines[start:end])


def _lines(page: pathlib.Path) -> List[str]:
    return page.read_text(encoding="utf-8").splitlines()


def bash_commands(section: str) -> List[str]:
    """The commands of the ```bash blocks in ``section``, one string each.

    A command goes on over a line that ends with a backslash or leaves a quote open.
    """
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", section, re.M | re.S):
        current = ""
        for line in block.splitlines():
            if not current and not line.strip():
                continue
            current = f"{current}\n{line}" if current else line
            if current.endswith("\\") or _quote_open(current):
                continue
            commands.append(current)
            current = ""
        assert not current, f"unterminated command in README.md: {current!r}"
    return commands


def readme_command(section: str, *parts: str) -> str:
    """The one command of README section ``section`` that contains every string of ``parts``."""
    matches = [
        command
        for command in bash_commands(readme_section(section))
        if all(part in command for part in parts)
    ]
    assert len(matches) == 1, f"expected one command with {parts} under {section}: {matches}"
    return matches[0]


def configured_ports() -> Dict[str, int]:
    """The ports written in runtime_config.yaml (no environment overrides), as README.md has."""
    runtime = yaml.safe_load(common.RUNTIME_CONFIG.read_text())["runtime"]
    return {server: int(runtime[server]["port"]) for server in ("grpc", "http", "metrics")}


def for_runtime(command: str, runtime: RuntimeProcess) -> str:
    """``command`` with the README's addresses replaced by those of ``runtime``."""
    for server, port in configured_ports().items():
        command = command.replace(f"127.0.0.1:{port}", f"127.0.0.1:{runtime.ports[server]}")
    return command


def run_readme_command(command: str, runtime: RuntimeProcess) -> subprocess.CompletedProcess:
    """Run a README command in the runtime's working directory (laid out as the README's)."""
    env = {**runtime.env, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", for_runtime(command, runtime)],
        cwd=runtime.work_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def readme_output(runtime: RuntimeProcess, section: str, *parts: str) -> str:
    """The standard output of ``readme_command(section, *parts)`` run against ``runtime``,
    which must succeed."""
    command = readme_command(section, *parts)
    result = run_readme_command(command, runtime)
    assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stderr}"
    return result.stdout


def _quote_open(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # "No closing quotation"
        return True
    return False
