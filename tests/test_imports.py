"""What importing costs: pure helpers and the client without caikit, the library when served.

Each check runs in a fresh interpreter: this one has caikit imported already.
"""

# Standard
import pathlib
import subprocess
import sys
import textwrap

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Stands for an environment where the named packages are not installed.
_HIDE_PACKAGES = """
import importlib.abc, sys
class Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Hidden())
"""


def _python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_pure_helpers_import_without_caikit():
    run = _python(
        """
        import sys
        import caikit_computer_vision.label_format, caikit_computer_vision.coco_format
        import caikit_computer_vision.images, caikit_computer_vision.duplicates
        import caikit_computer_vision.labelled_images, caikit_computer_vision.memory
        from caikit_computer_vision.images import ImageLimits, load_image
        try:
            load_image(b"not an image", ImageLimits())
        except ValueError as err:
            print(err)
        print(sorted(name for name in sys.modules if name.split(".")[0] == "caikit"))
        """
    )
    assert run.returncode == 0, run.stderr
    refusal, imported = run.stdout.strip().splitlines()
    assert refusal.startswith("inputs (12 bytes) is not a complete image")
    assert imported == "[]"


def test_the_client_starts_without_caikit_or_torch_installed():
    run = _python(
        "HIDDEN = ('caikit', 'torch', 'transformers')\n"
        + _HIDE_PACKAGES
        + "import runpy\n"
        + "sys.argv = ['run_train_and_inference.py', '--help']\n"
        + "runpy.run_path('run_train_and_inference.py', run_name='__main__')\n"
    )
    assert run.returncode == 0, run.stderr
    assert "Train a new model through the runtime's gRPC API" in run.stdout


def test_caikit_registers_the_library_by_reading_its_data_model_attribute():
    # caikit 0.29's runtime loads ``runtime.library`` with import_util.get_data_model(), which
    # imports the package and reads ``data_model`` from it (UnifiedDataModel.add_library); the
    # package's __getattr__ imports the data model and modules then, and nothing else does here.
    run = _python(
        """
        import caikit, sys
        caikit.configure("runtime_config.yaml")
        assert "caikit_computer_vision.modules" not in sys.modules
        from caikit.core.registries import module_registry
        from caikit.runtime.utils import import_util
        data_model = import_util.get_data_model()
        print(data_model.caikit_computer_vision.__name__)
        print(sorted(cls.__name__ for cls in module_registry().values()
                     if cls.__module__.startswith("caikit_computer_vision.")))
        """,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    package, modules = run.stdout.strip().splitlines()[-2:]
    assert package == "caikit_computer_vision.data_model"
    assert modules == "['TransformersObjectDetector']"
