"""common.py, the example's settings: read without side effects; README.md and .ci/run agree."""

# Standard
import pathlib
import re
import subprocess
import sys

# Local
import common

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_importing_the_settings_checks_nothing_and_imports_nothing_outside_the_stdlib(tmp_path):
    # From another directory, with every third-party package hidden: the import still works and
    # its paths name that directory's models/ once used, not the directory it was imported from.
    code = (
        "import sys, pathlib, os\n"
        "sys.path[:] = [p for p in sys.path if 'site-packages' not in p]\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "import common\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('yaml', 'aconfig', 'caikit')]\n"
        "os.chdir(sys.argv[1])\n"
        "print(common.MODELS_DIR.absolute())\n"
    )
    other = tmp_path / "elsewhere"
    other.mkdir()
    run = subprocess.run(
        [sys.executable, "-S", "-c", code, str(other)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(other / "models")


def test_ports_follow_runtime_config_and_its_environment_overrides(monkeypatch):
    monkeypatch.setenv("RUNTIME_HTTP_PORT", "18123")
    monkeypatch.delenv("RUNTIME_GRPC_PORT", raising=False)
    config = (REPO_ROOT / "runtime_config.yaml").read_text()
    grpc_port = int(re.search(r"\n  grpc:\n(?:    .*\n)*?    port: (\d+)", config).group(1))
    ports = common.runtime_ports()
    assert ports["http"] == 18123
    assert ports["grpc"] == grpc_port


def test_paths_sent_to_the_runtime_are_relative_to_the_shared_working_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert common.for_runtime(common.TRAIN_IMAGES_DIR) == "train_data/images"
    assert common.for_runtime(tmp_path / "train_data" / "my_data") == "train_data/my_data"


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
