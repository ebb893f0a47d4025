"""The launcher without --purge_dirs, and the one-command demo, run as a user runs them."""

# Standard
import socket
import subprocess
import sys

# Local
from example_tools.runtime_harness import (
    LAUNCHER,
    REPO_ROOT,
    free_port,
    prepare_work_dir,
    runtime_env,
)


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
        holder.bind(("127.0.0.1", ports["http"]))
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
        f"port {ports['http']} (http) is already in use on 127.0.0.1: stop the program that "
        "holds it, or choose other ports with RUNTIME_HTTP_PORT=<port>"
    )
    # Refused before any set-up work: nothing was purged or created.
    assert list(tmp_path.iterdir()) == []


def test_demo_help_only_prints_help(tmp_path):
    (tmp_path / "models" / "keep_me").mkdir(parents=True)
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "demo.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "The whole example in one command" in run.stdout
    assert "--num-epochs" in run.stdout  # the client's flags, which the demo passes on
    assert [path.name for path in tmp_path.rglob("*")] == ["models", "keep_me"]


def test_outside_the_venv_a_script_says_what_to_do_in_one_line():
    # A module that no environment has stands for the example's packages outside .venv.
    code = (
        "import example_tools.venv as venv; "
        "venv.REQUIRED_MODULES = ('ccv_no_such_module',); venv.require_venv()"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert run.stderr.strip().startswith("ccv_no_such_module not installed for ")
    assert "python3 demo.py" in run.stderr and len(run.stderr.strip().splitlines()) == 1
