"""The launcher without --purge_dirs, and the one-command demo's help, run as a user runs them.

Nothing here installs anything: the demo's --help is printed before it would create .venv (the
whole demo runs in tests/test_newcomer.py, with the tests' interpreter and no install).
"""

# Standard
import socket
import subprocess
import sys

# Local
from common import HOST
from example_tools.runtime_harness import (
    LAUNCHER,
    REPO_ROOT,
    free_port,
    prepare_work_dir,
    runtime_env,
)
from example_tools.venv import VENV_PYTHON


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


def test_launcher_refuses_a_setting_in_one_line(tmp_path, saved_model_dir):
    """A thread pool too small for the limits: the key to change, exit 2, no traceback."""
    prepare_work_dir(tmp_path, saved_model_dir, num_train_images=4)
    run = subprocess.run(
        [sys.executable, str(LAUNCHER)],
        cwd=tmp_path,
        env={**runtime_env(_free_ports()), "RUNTIME_SERVER_THREAD_POOL_SIZE": "4"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "The runtime did not start: " in run.stderr
    assert "runtime.server_thread_pool_size is 4" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


# The whole demo runs in tests/test_newcomer.py (test_demo_keeps_the_users_models_and_data).


def test_launcher_names_a_busy_port_and_its_override_in_one_line(tmp_path):
    ports = _free_ports()
    with socket.socket() as holder:
        holder.bind((HOST, ports["http"]))
        holder.listen()
        run = subprocess.run(
            [sys.executable, str(LAUNCHER), "--purge_dirs"],
            cwd=tmp_path,
            env=runtime_env(ports),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"port {ports['http']} (http) is already in use on {HOST}: stop the program that "
        "holds it, or choose other ports with RUNTIME_HTTP_PORT=<port>"
    )
    # Refused before any set-up work: nothing was purged or created.
    assert list(tmp_path.iterdir()) == []


def test_demo_help_only_prints_help(tmp_path):
    """The client's flags come from .venv's interpreter where .venv exists; without it, the
    help says when they will be listed. Either way nothing is installed or created."""
    (tmp_path / "models" / "keep_me").mkdir(parents=True)
    venv_before = sorted(VENV_PYTHON.parents[1].iterdir()) if VENV_PYTHON.exists() else None
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "demo.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("The whole example in one command")
    if venv_before is None:
        assert "(The client's flags are listed here once .venv exists" in run.stdout
        assert not VENV_PYTHON.exists()
    else:
        assert "--num-epochs" in run.stdout  # the client's flags, which the demo passes on
        assert sorted(VENV_PYTHON.parents[1].iterdir()) == venv_before
    assert "Installing" not in run.stdout
    assert [path.name for path in tmp_path.rglob("*")] == ["models", "keep_me"]

