"""The launcher without --purge_dirs, and the one-command demo, run as a user runs them."""

# Standard
import subprocess
import sys

# Local
from vision_client.local_runtime import LAUNCHER, REPO_ROOT, free_port, runtime_env


def _free_ports():
    return {name: free_port() for name in ("grpc", "http", "metrics")}


def test_launcher_without_purge_says_what_is_missing(tmp_path):
    run = subprocess.run(
        [sys.executable, str(LAUNCHER)],
        cwd=tmp_path,
        env=runtime_env(_free_ports()),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert f"Missing: the base model {tmp_path / 'models' / 'my_model'}" in run.stderr
    assert "Missing: the dumped .proto files" in run.stderr
    assert "Run with --purge_dirs" in run.stderr
    assert not (tmp_path / "models").exists()


def test_one_command_demo_runs_every_step_and_stops_the_runtime(tmp_path):
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "demo.py"), "--num-epochs", "3"],
        cwd=tmp_path,
        env=runtime_env(_free_ports()),
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stdout + run.stderr + (tmp_path / "runtime.log").read_text()
    assert "COMPLETED" in run.stdout
    assert "First prediction from 'new_model'" in run.stdout
    assert "the runtime is stopped" in run.stdout
    assert (tmp_path / "models" / "new_model" / "config.yml").is_file()
    assert "runtime stopped" in (tmp_path / "runtime.log").read_text()
