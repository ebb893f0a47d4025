"""The benchmark's quick mode runs end to end: every figure group produces finite figures.

``python -m bench --quick`` runs as CI would run it, in a subprocess from the repository root.
Only that the figures exist and are numbers is asserted: never how fast anything was (the
machines are shared; targets are read from the table, not enforced here).
"""

# Standard
import json
import math
import pathlib
import subprocess
import sys

# Third Party
import pytest

# Local
from bench.__main__ import present_groups

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# About a minute and a half on two busy cores; the limit only stops a hung run.
TIMEOUT_S = 900


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    json_path = tmp_path_factory.mktemp("bench") / "figures.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(json_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    return completed.stdout, json.loads(json_path.read_text())


def test_every_figure_group_produces_figures(quick_run):
    _, results = quick_run
    produced = {figure["group"] for figure in results["figures"]}
    assert set(present_groups()) <= produced, sorted(set(present_groups()) - produced)
    assert results["quick"] is True
    assert results["missing_groups"] == []


def test_every_figure_is_finite(quick_run):
    _, results = quick_run
    for figure in results["figures"]:
        numbers = [figure["value"], *figure["details"].values()]
        if figure["spread"] is not None:
            numbers += [figure["spread"][key] for key in ("min", "p50", "p99")]
        assert all(math.isfinite(number) for number in numbers), figure


def test_the_table_prints_every_figure(quick_run):
    stdout, results = quick_run
    assert stdout.splitlines()[0].split()[:3] == ["group", "figure", "value"]
    for figure in results["figures"]:
        assert figure["name"] in stdout, figure["name"]
