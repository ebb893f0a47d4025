"""The example tried as a newcomer tries it: busy ports, their own models and data beside the
example's, typos, Ctrl-C, scripts run outside the venv (issue 19).

Real processes on free loopback ports, stopped by their process ids; every run is bounded in
time. The demo runs with the tests' interpreter (CCV_USE_CURRENT_PYTHON=1): no pip install.
"""

# Standard
from contextlib import closing, contextmanager
from types import SimpleNamespace
from typing import Dict, Iterator, List
import hashlib
import io
import json
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

# Third Party
import pytest

# Local
from example_tools.runtime_harness import (
    CLIENT,
    DUMP_SCRIPT,
    LAUNCHER,
    REPO_ROOT,
    free_port,
    runtime_env,
    start_runtime,
)
from example_tools.synthetic_data import generate_train_data
from example_tools.venv import USE_CURRENT_PYTHON
from example_tools.workspace import manifest_path
from vision_client.calls import ProgressLine
import common

from .readme_shell import bash_commands, readme_section, run_readme_command
from .served_example import client_training, wait_for_training, wait_until

DEMO = REPO_ROOT / "demo.py"
USER_MODEL = "user_model"
USER_DATA = "my_data"


def _free_ports() -> Dict[str, int]:
    return {name: free_port() for name in ("grpc", "http", "metrics")}


def _digest(root: pathlib.Path) -> str:
    """One hash over the names and bytes of every file under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _add_user_things(work_dir: pathlib.Path, saved_model_dir: pathlib.Path) -> Dict[str, str]:
    """A model the user trained and a COCO data set of theirs; returns their digests."""
    shutil.copytree(saved_model_dir, work_dir / "models" / USER_MODEL)
    generate_train_data(str(work_dir / "train_data" / USER_DATA), num_images=8, label_format="coco")
    return _user_digests(work_dir)


def _user_digests(work_dir: pathlib.Path) -> Dict[str, str]:
    return {
        "model": _digest(work_dir / "models" / USER_MODEL),
        "data": _digest(work_dir / "train_data" / USER_DATA),
    }


def _run(args: List[str], cwd: pathlib.Path, env=None, timeout: float = 120) -> SimpleNamespace:
    run = subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return SimpleNamespace(
        returncode=run.returncode,
        stdout=run.stdout,
        stderr=run.stderr,
        output=run.stdout + run.stderr,
    )


def _demo_env(ports: Dict[str, int]) -> Dict[str, str]:
    return {**runtime_env(ports), USE_CURRENT_PYTHON: "1"}


class CountingServer:
    """Someone else's server on a port: answers every connection with HTTP 200 and counts."""

    def __init__(self) -> None:
        self.connections = 0
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((common.HOST, 0))
        self._socket.listen(16)
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except socket.timeout:
                continue
            self.connections += 1
            with closing(connection):
                connection.settimeout(1)
                try:
                    connection.recv(4096)
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                except OSError:
                    pass

    def close(self) -> None:
        """Stop serving; connections still waiting in the listen queue are counted too."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.setblocking(False)
        while True:
            try:
                connection, _ = self._socket.accept()
            except BlockingIOError:
                break
            self.connections += 1
            connection.close()
        self._socket.close()


@contextmanager
def foreign_servers(count: int) -> Iterator[List[CountingServer]]:
    servers = [CountingServer() for _ in range(count)]
    try:
        yield servers
    finally:
        for server in servers:
            server.close()


# -- 1. the demo and the harness talk only to a runtime they started ------------------------------


def test_harness_sends_nothing_to_a_foreign_server_on_its_ports(tmp_path):
    with foreign_servers(2) as (grpc_holder, http_holder):
        ports = {"grpc": grpc_holder.port, "http": http_holder.port, "metrics": free_port()}
        with pytest.raises(RuntimeError, match="already in use"):
            start_runtime(tmp_path, [], ports=ports, ready_timeout=60)
    assert (grpc_holder.connections, http_holder.connections) == (0, 0)


def test_demo_names_every_taken_port_in_one_line_and_sends_them_nothing(tmp_path):
    with foreign_servers(2) as (grpc_holder, http_holder):
        ports = {"grpc": grpc_holder.port, "http": http_holder.port, "metrics": free_port()}
        run = _run([sys.executable, str(DEMO), "--num-epochs", "1"], tmp_path, _demo_env(ports))
    assert (grpc_holder.connections, http_holder.connections) == (0, 0)
    assert run.returncode == 2, run.output
    assert run.stderr.strip() == (
        f"ports {ports['grpc']} (grpc), {ports['http']} (http) are already in use on {common.HOST}: "
        "stop the program that holds them, or choose other ports with RUNTIME_GRPC_PORT=<port> "
        "RUNTIME_HTTP_PORT=<port>"
    )
    assert "Runtime ready" not in run.stdout
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing created


def test_launcher_names_every_busy_port(tmp_path):
    with foreign_servers(2) as (grpc_holder, http_holder):
        ports = {"grpc": grpc_holder.port, "http": http_holder.port, "metrics": free_port()}
        run = _run([sys.executable, str(LAUNCHER), "--purge-dirs"], tmp_path, runtime_env(ports))
    assert run.returncode == 2
    assert f"{ports['grpc']} (grpc), {ports['http']} (http)" in run.stderr
    assert "RUNTIME_GRPC_PORT=<port> RUNTIME_HTTP_PORT=<port>" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


# -- 2. nothing the user made is deleted -----------------------------------------------------------


def test_demo_checks_its_flags_before_it_starts_or_deletes_anything(tmp_path, saved_model_dir):
    _add_user_things(tmp_path, saved_model_dir)
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    run = _run([sys.executable, str(DEMO), "--epochs", "50"], tmp_path, _demo_env(_free_ports()))
    assert run.returncode == 2
    assert (
        "unrecognized arguments: --epochs 50 (did you mean: --epochs -> --num-epochs?)"
        in run.stderr
    )
    assert "Traceback" not in run.output and "Starting the runtime" not in run.stdout
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before


def test_demo_refuses_to_replace_a_model_it_did_not_train(tmp_path, saved_model_dir):
    shutil.copytree(saved_model_dir, tmp_path / "models" / common.TRAINED_MODEL_ID)
    run = _run([sys.executable, str(DEMO)], tmp_path, _demo_env(_free_ports()))
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"the demo would replace {tmp_path / 'models' / common.TRAINED_MODEL_ID}, which this "
        f"example did not generate (not listed in {tmp_path / '.models.generated.json'}): move it "
        "elsewhere, or delete it yourself, then run again"
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["models"]


def test_purge_dirs_refuses_a_base_model_the_example_did_not_make(tmp_path, saved_model_dir):
    shutil.copytree(saved_model_dir, tmp_path / "models" / common.BASE_MODEL_ID)
    run = _run(
        [sys.executable, str(LAUNCHER), "--purge_dirs"], tmp_path, runtime_env(_free_ports())
    )
    assert run.returncode == 2
    assert "--purge_dirs would replace" in run.stderr and "move it elsewhere" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert (tmp_path / "models" / common.BASE_MODEL_ID / "config.yml").is_file()


def test_dump_protos_refuses_a_directory_that_holds_other_files(tmp_path, saved_model_dir):
    shutil.copytree(saved_model_dir, tmp_path / "models" / USER_MODEL)
    run = _run([sys.executable, str(DUMP_SCRIPT), "--output-dir", "models"], tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"{tmp_path / 'models'} holds {USER_MODEL}, which a dump of .proto files would delete: "
        "choose another --output-dir, or move those files away"
    ]
    assert (tmp_path / "models" / USER_MODEL / "config.yml").is_file()


def test_the_step_scripts_replace_only_what_they_generated(tmp_path, saved_model_dir):
    digests = _add_user_things(tmp_path, saved_model_dir)
    data = [sys.executable, str(REPO_ROOT / "create_train_data.py"), "--num-images", "4"]
    models = [sys.executable, str(REPO_ROOT / "create_models_dir.py")]
    assert _run(data, tmp_path, timeout=180).returncode == 0
    assert _run(models, tmp_path, timeout=180).returncode == 0
    again = _run(data, tmp_path, timeout=180)
    assert again.returncode == 0
    assert (
        f"Replaced in {tmp_path / 'train_data'} (generated by this example): held_out, images"
        in again.stdout
    )
    assert _run(models, tmp_path, timeout=180).returncode == 0
    assert _user_digests(tmp_path) == digests
    assert sorted(path.name for path in (tmp_path / "models").iterdir()) == [
        common.BASE_MODEL_ID,
        USER_MODEL,
    ]
    assert sorted(path.name for path in (tmp_path / "train_data").iterdir()) == sorted(
        [*common.GENERATED_TRAIN_DATA, USER_DATA]
    )


@pytest.fixture(scope="module")
def served_workspace(tmp_path_factory, saved_model_dir):
    """A working directory with the user's model and data, then launcher --purge_dirs in it."""
    work_dir = tmp_path_factory.mktemp("newcomer")
    digests = _add_user_things(work_dir, saved_model_dir)
    runtime = start_runtime(work_dir, ["--purge_dirs"])
    try:
        yield SimpleNamespace(runtime=runtime, work_dir=work_dir, digests=digests)
    finally:
        runtime.stop()


def test_purge_dirs_keeps_the_users_models_and_data(served_workspace):
    work_dir = served_workspace.work_dir
    assert _user_digests(work_dir) == served_workspace.digests
    assert (work_dir / "models" / common.BASE_MODEL_ID / "config.yml").is_file()
    generated = json.loads(manifest_path(work_dir / "models").read_text())["generated"]
    assert generated == [common.BASE_MODEL_ID]
    generated = json.loads(manifest_path(work_dir / "train_data").read_text())["generated"]
    assert generated == list(common.GENERATED_TRAIN_DATA)


def test_launcher_ends_its_start_up_with_what_it_serves_and_how_to_stop(served_workspace):
    runtime = served_workspace.runtime
    wait_until(lambda: "Stop: Ctrl-C" in runtime.log(), 30, "the launcher's start-up summary")
    block = runtime.log().split("-" * 72)[-2]
    assert (
        f"Serving 2 model(s) from {served_workspace.work_dir / 'models'}: my_model, {USER_MODEL}"
        in block
    )
    assert f"gRPC     {common.HOST}:{runtime.ports['grpc']}" in block
    assert f"HTTP     http://{common.HOST}:{runtime.ports['http']}" in block
    assert f"Stop: Ctrl-C here, or kill {runtime.process.pid} (SIGTERM)" in block


def test_a_second_launcher_cannot_purge_what_the_first_serves(served_workspace):
    work_dir = served_workspace.work_dir
    models = sorted(path.name for path in (work_dir / "models").iterdir())
    run = _run(
        [sys.executable, str(LAUNCHER), "--purge_dirs"], work_dir, runtime_env(_free_ports())
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"another runtime serves {work_dir / 'models'}: stop it (Ctrl-C in its terminal) before "
        "--purge_dirs, or start this one without --purge_dirs to share its models"
    ]
    assert sorted(path.name for path in (work_dir / "models").iterdir()) == models
    assert _user_digests(work_dir) == served_workspace.digests


def _client(workspace, *args: str, timeout: float = 300) -> SimpleNamespace:
    return _run(
        [sys.executable, str(CLIENT), *args], workspace.work_dir, workspace.runtime.env, timeout
    )


def test_client_trains_on_the_users_coco_data(served_workspace):
    run = _client(
        served_workspace,
        "--images-dir",
        f"train_data/{USER_DATA}/images",
        "--labels-file",
        f"train_data/{USER_DATA}/annotations.json",
        "--model-id",
        "from_my_data",
        "--num-epochs",
        "1",
    )
    assert run.returncode == 0, run.output
    assert f"on train_data/{USER_DATA}/images (1 epochs" in run.stdout
    assert (served_workspace.work_dir / "models" / "from_my_data" / "config.yml").is_file()


def test_docs_follow_and_cancel_a_training_over_http(served_workspace):
    """docs/training.md's three curl calls, as a reader pastes them, on the user's data."""
    commands = bash_commands(readme_section("### End to end, with your data"))
    [train] = [command for command in commands if "TransformersObjectDetectorTrain" in command]
    [follow] = [command for command in commands if command.startswith("curl -s 'http")]
    [cancel] = [command for command in commands if "-X DELETE" in command]

    def run(command: str) -> dict:
        result = run_readme_command(command, served_workspace.runtime)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    training_id = run(train)["training_id"]
    follow = follow.replace("<training_id>", training_id)
    wait_until(lambda: run(follow)["state"] == "RUNNING", 60, f"{follow} says RUNNING")
    assert run(cancel.replace("<training_id>", training_id))["state"] == "CANCELED"
    assert run(follow)["state"] == "CANCELED"


# -- 3. one line instead of a traceback ------------------------------------------------------------


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["--image", "nothere.jpg"],
            "--image nothere.jpg: no such file; pass the path of a JPEG or PNG",
        ),
        (
            ["--image", str(REPO_ROOT / "README.md")],
            f"--image {REPO_ROOT / 'README.md'} is not an image Pillow can read "
            "(UnidentifiedImageError): pass a JPEG or PNG",
        ),
        (["--images-dir", "/tmp"], "--images-dir /tmp is outside"),
    ],
)
def test_client_mistakes_are_one_line_before_any_training(served_workspace, args, line):
    run = _client(served_workspace, "--model-id", "never_trained", *args, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().startswith(line) and len(run.stderr.strip().splitlines()) == 1
    assert "Traceback" not in run.output and "Training '" not in run.stdout
    assert not (served_workspace.work_dir / "models" / "never_trained").exists()


def test_half_deleted_stubs_are_compiled_again(served_workspace):
    generated = served_workspace.work_dir / "generated"
    first = _client(served_workspace, "--base-model", "no_such_model", "--model-id", "x")
    assert (generated / "PROTOS_SHA256").is_file(), first.output
    shutil.rmtree(generated / "ccv")
    run = _client(served_workspace, "--base-model", "no_such_model", "--model-id", "x")
    assert "Traceback" not in run.output
    assert "Compiling" in run.stdout and "is missing" in run.stdout
    assert "Train request refused (INVALID_ARGUMENT)" in run.stdout


def test_ctrl_c_in_the_client_cancels_its_training(served_workspace):
    work_dir, runtime = served_workspace.work_dir, served_workspace.runtime
    with client_training(work_dir, runtime.env) as client:
        client.send_signal(signal.SIGINT)
        stdout, stderr = client.communicate(timeout=60)
    assert client.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    [message] = stderr.strip().splitlines()
    assert message.startswith("Interrupted: training ") and message.endswith(
        " CANCELED in the runtime; models/interrupted was not saved"
    )
    training_id = message.split()[2]
    wait_for_training(runtime, training_id, "CANCELED", timeout=0)
    assert not (work_dir / "models" / "interrupted").exists()


@pytest.mark.parametrize("script", ["run_train_and_inference.py", "dump_protos.py"])
def test_outside_the_venv_a_script_says_so_in_one_line(tmp_path, script):
    # -S: no site-packages, as under a python3 that has none of the example's packages.
    run = _run([sys.executable, "-S", str(REPO_ROOT / script)], tmp_path, timeout=60)
    assert run.returncode == 1
    assert "Traceback" not in run.output
    [line] = run.stderr.strip().splitlines()
    assert " not installed for " in line and "python3 demo.py" in line


def test_dump_protos_help_is_quick(tmp_path):
    started = time.monotonic()
    run = _run([sys.executable, str(DUMP_SCRIPT), "--help"], tmp_path, timeout=60)
    assert run.returncode == 0 and "--output-dir" in run.stdout
    assert time.monotonic() - started < 5


def test_run_tests_help_is_its_own(tmp_path):
    run = _run([sys.executable, str(REPO_ROOT / "run_tests.py"), "--help"], tmp_path, timeout=30)
    assert run.returncode == 0
    assert run.stdout.startswith("Run the example's tests with one command")
    assert "--pytest-help" in run.stdout


# -- 4. the figures a user sees ---------------------------------------------------------------------


def test_the_quicker_training_the_readme_offers_still_learns(served_workspace):
    """README: --num-epochs QUICK_NUM_EPOCHS scores 0.690 on the 2-core VM; 60 epochs 0.066."""
    run = _client(
        served_workspace, "--num-epochs", str(common.QUICK_NUM_EPOCHS), "--model-id", "quick"
    )
    assert run.returncode == 0, run.output
    [line] = [line for line in run.stdout.splitlines() if line.strip().startswith("quick ")]
    map_50 = float(line.split("mAP@0.5")[1].split()[0])
    assert map_50 >= 0.5, line
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    assert f"`--num-epochs {common.QUICK_NUM_EPOCHS}`" in readme


# -- 6. what a person reads ------------------------------------------------------------------------


def test_piped_progress_prints_a_line_per_state_not_per_poll(monkeypatch):
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    piped = io.StringIO()
    progress = ProgressLine(piped)
    for second in range(40):
        progress.update("RUNNING", f"training: RUNNING {second} s")
    progress.update("COMPLETED", "training: COMPLETED")
    assert piped.getvalue().splitlines() == ["training: RUNNING 0 s", "training: COMPLETED"]


def test_launcher_help_names_the_port_variables_and_both_spellings(tmp_path):
    run = _run([sys.executable, str(LAUNCHER), "--help"], tmp_path, timeout=60)
    text = " ".join(run.stdout.split())
    assert run.returncode == 0 and "--purge_dirs, --purge-dirs" in text
    for variable in ("RUNTIME_GRPC_PORT", "RUNTIME_HTTP_PORT", "RUNTIME_METRICS_PORT"):
        assert variable in text
    assert list(tmp_path.iterdir()) == []


def test_client_help_shows_its_defaults(tmp_path):
    run = _run([sys.executable, str(CLIENT), "--help"], tmp_path, timeout=60)
    text = " ".join(run.stdout.split())  # argparse wraps lines
    assert f"training epochs (default: {common.DEFAULT_NUM_EPOCHS};" in text
    assert f"schedule (default: {common.DEFAULT_LEARNING_RATE})" in text


# -- the whole demo, with the user's model and data beside it --------------------------------------


def test_demo_keeps_the_users_models_and_data(tmp_path, saved_model_dir):
    digests = _add_user_things(tmp_path, saved_model_dir)
    run = _run(
        [sys.executable, str(DEMO), "--num-epochs", "3", "--save-annotated", "annotated.png"],
        tmp_path,
        _demo_env(_free_ports()),
        timeout=600,
    )
    log = tmp_path / "runtime.log"
    assert run.returncode == 0, run.output + (log.read_text() if log.exists() else "")
    assert "COMPLETED" in run.stdout and "First prediction from 'new_model'" in run.stdout
    assert "the runtime is stopped" in run.stdout
    assert "runtime stopped" in log.read_text()
    assert _user_digests(tmp_path) == digests
    generated = json.loads(manifest_path(tmp_path / "models").read_text())["generated"]
    assert generated == [common.BASE_MODEL_ID, common.TRAINED_MODEL_ID]
    assert "and 1 expected boxes drawn" in run.stdout
