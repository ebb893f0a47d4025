"""Fixtures shared by the library tests: a tiny random YOLOS, a saved copy, generated data."""

# Standard
import io
import os
import pathlib
import sys

# cuBLAS reads this when it first runs on a GPU: training's reproducibility (deterministic
# algorithms, see caikit_computer_vision/training.py) needs it set before any test uses CUDA.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
# OpenMP reads this when torch loads: idle worker threads sleep instead of spinning. With two
# threads on a machine that has other work (the runtimes these tests start, a parallel job),
# spinning made every optimiser step of the tiny model 30x slower (10 epochs of 48 images: 85 s
# instead of 3). Runtimes started by the tests inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Third Party
from PIL import Image
import numpy as np
import pytest

# The repository root holds the library and the scripts; tests import both from there.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Local
from caikit_computer_vision.modules.object_detection import (  # noqa: E402
    TransformersObjectDetector,
)
from example_tools.synthetic_data import generate_train_data  # noqa: E402
from example_tools.tiny_yolos import build_tiny_yolos  # noqa: E402


def encode_image(array: np.ndarray, image_format: str = "JPEG", mode: str = None) -> bytes:
    """Encode a numpy image as real file bytes, as a client would send them."""
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=image_format)
    return buffer.getvalue()


def noise_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def detector() -> TransformersObjectDetector:
    """The demo's untrained tiny model (read-only: tests must not train it in place)."""
    return TransformersObjectDetector(*build_tiny_yolos())


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory, detector) -> pathlib.Path:
    path = tmp_path_factory.mktemp("models") / "my_model"
    detector.save(str(path))
    return path


@pytest.fixture(scope="session")
def train_dir(tmp_path_factory) -> pathlib.Path:
    """A small generated training set: ``images/`` and ``labels.txt``."""
    path = tmp_path_factory.mktemp("train_data")
    generate_train_data(str(path), num_images=48)
    return path


@pytest.fixture(scope="session")
def served(tmp_path_factory, saved_model_dir):
    """One runtime of the example with runtime_config.yaml as it is, and a gRPC predict on it.

    Shared by every test module that needs no other configuration (a start takes 10 to 30 s on
    two cores): they predict, fuzz, train new models, add data under train_data/, or damage
    copies of my_model they make themselves, never my_model, and none asserts on what models/
    holds beyond its own models. Modules that need other settings use ``served_tuned`` or start
    their own.
    """
    # Local
    from .served_example import serve_example  # imports this module's image helpers

    with serve_example(tmp_path_factory.mktemp("served"), saved_model_dir) as served:
        yield served


@pytest.fixture(scope="session")
def served_tuned(tmp_path_factory, saved_model_dir):
    """One runtime with small HTTP limits, a short request-message timeout and every image
    format accepted (served_example.TUNED_ENV), shared by test_http_bounds, test_image_formats
    and test_request_costs."""
    # Local
    from .served_example import TUNED_ENV, serve_example

    with serve_example(tmp_path_factory.mktemp("tuned"), saved_model_dir, TUNED_ENV) as served:
        yield served


@pytest.fixture(scope="module")
def runtime(served):
    """The runtime process of ``served`` (a module's own ``served`` fixture, when it has one)."""
    return served.runtime


@pytest.fixture(scope="module")
def predict(served):
    """The gRPC predict call of ``served``: predict(inputs, threshold, model_id=..., ...)."""
    return served.predict


@pytest.fixture(scope="session")
def walkthrough(tmp_path_factory, saved_model_dir):
    """One runtime laid out as the README's walkthrough leaves the repository, shared by the
    tests that run the README's and docs' commands against it (HTTP, grpcurl, Node.js)."""
    # Local
    from .walkthrough_runtime import serve_walkthrough

    with serve_walkthrough(tmp_path_factory, saved_model_dir) as runtime:
        yield runtime


# -- the two tiers ----------------------------------------------------------------------------------

# Fixtures that start a runtime process (a test using one, directly or through another fixture,
# is end-to-end), and the modules whose tests run the example's scripts or servers themselves.
RUNTIME_FIXTURES = frozenset({
    "runtime", "second_runtime", "served", "served_tuned", "served_workspace", "deploying_runtime",
    "walkthrough", "node_client",
})
SCRIPT_MODULES = frozenset({
    "test_newcomer", "test_scripts", "test_tls", "test_fuzz_runtime", "test_dump_protos",
    "test_end_to_end", "test_training_lifecycle", "test_http_api",
})


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "e2e: starts a runtime process or runs the example's scripts (the slow tier; "
        "`python3 run_tests.py --fast` leaves these out)",
    )


# A test's figures to print at the end of the run, never to assert on (machines are noisy):
# record_property(FIGURES, text). Printed from the reports, so that they show with pytest-xdist,
# whose workers' own output is not shown.
FIGURES = "figures"


def pytest_terminal_summary(terminalreporter):
    reports = [
        report
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", None) == "call"
    ]
    figures = [
        (report.nodeid, value)
        for report in reports
        for name, value in report.user_properties
        if name == FIGURES
    ]
    if figures:
        terminalreporter.section("figures")
        for nodeid, text in figures:
            terminalreporter.write_line(f"{nodeid}:\n{text}")


def pytest_collection_modifyitems(items):
    """Mark every end-to-end test ``e2e``, from the fixtures it uses and the module it is in."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in SCRIPT_MODULES or RUNTIME_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.e2e)
