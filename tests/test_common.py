"""common.py, README.md and .ci/run agree with the library and with each other."""

# Standard
import pathlib
import re

# First Party
import aconfig

# Local
from caikit_computer_vision import defaults
import common

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_train_data_layout_matches_what_the_generator_writes():
    assert common.TRAIN_IMAGES_DIR == common.TRAIN_DATA_DIR / defaults.IMAGES_DIR_NAME
    assert common.TRAIN_LABELS_FILE == common.TRAIN_DATA_DIR / defaults.LABELS_FILE_NAME
    assert common.QUERY_LABEL in defaults.DEFAULT_LABELS


def test_ports_read_without_caikit_match_caikits_own_config_reader(monkeypatch):
    monkeypatch.setenv("RUNTIME_HTTP_PORT", "18123")
    # The reader caikit.configure uses for config files, environment overrides included.
    runtime = aconfig.Config.from_yaml(str(common.RUNTIME_CONFIG), override_env_vars=True).runtime
    assert common.runtime_ports() == {
        "grpc": runtime.grpc.port,
        "http": 18123,
        "metrics": runtime.metrics.port,
    }
    assert runtime.http.port == 18123


def _bash_blocks(text: str):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO_ROOT / "README.md").read_text()
    ci_commands = [
        line.strip()
        for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    readme_lines = {line.strip() for block in _bash_blocks(readme) for line in block.splitlines()}
    assert "python3 run_tests.py" in readme_lines
    assert "python3 run_tests.py" in ci_commands
    assert "requirements-dev.lock" in readme and "--require-hashes" in readme


def test_readme_names_the_one_command_demo_and_the_scripts():
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = [block.strip() for block in _bash_blocks(readme)]
    assert "python3 demo.py" in blocks
    assert "python3 launch_vision_runtime.py --purge_dirs" in blocks
    assert "python3 run_train_and_inference.py" in blocks
    for script in ("demo.py", "launch_vision_runtime.py", "run_train_and_inference.py", "dump_protos.py"):
        assert (REPO_ROOT / script).is_file(), script
