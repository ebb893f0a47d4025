"""Run the example's commands inside .venv, creating or updating it first when needed.

Standard library only: this runs under whatever ``python3`` the user has, before any of the
example's requirements are installed. A venv the user already has is updated in place, never
deleted; a stamp file records which requirements file (by content) was installed completely, so
an interrupted install is redone next time.

What is installed is a lock (requirements.lock, requirements-dev.lock): every package at one
version, with its hashes, so pip resolves nothing and never backtracks. The locks are made for
the project's machines (CPython 3.11 on Linux x86-64, with the CPU build of torch); elsewhere the
unlocked requirements file is installed instead, and the scripts say so.
"""

# Standard
from typing import Sequence
import hashlib
import importlib.util
import os
import pathlib
import platform
import subprocess
import sys

REPO_DIR = pathlib.Path(__file__).resolve().parents[1]
VENV_DIR = REPO_DIR / ".venv"
VENV_PYTHON = VENV_DIR / "bin" / "python"
# Packages the runtime's scripts need; missing ones mean "not running inside the venv".
REQUIRED_MODULES = ("caikit", "grpc", "torch", "yaml")
# What the client (run_train_and_inference.py, vision_client) needs: gRPC and protobuf with the
# proto compiler, Pillow, pycocotools, and caikit's config reader. Never caikit or torch.
CLIENT_MODULES = ("grpc", "grpc_tools", "google.protobuf", "PIL", "pycocotools", "aconfig")
# Set to 1, the scripts run in the interpreter that started them, as it is: no install, no
# switch to .venv. For an environment set up by other means (the tests, a container image).
USE_CURRENT_PYTHON = "CCV_USE_CURRENT_PYTHON"
# The interpreter and machine the locks were resolved for (see requirements.lock's header).
LOCKED_PYTHON = (3, 11)
LOCKED_PLATFORM = ("linux", "x86_64")


def requirements_for_this_machine(lock: pathlib.Path, unlocked: pathlib.Path) -> pathlib.Path:
    """``lock`` where it was resolved for this interpreter and machine, else ``unlocked``."""
    machine = (sys.platform, platform.machine())
    if sys.version_info[:2] == LOCKED_PYTHON and machine == LOCKED_PLATFORM:
        return lock
    print(
        f"{lock.name} is for Python {'.'.join(map(str, LOCKED_PYTHON))} on "
        f"{'/'.join(LOCKED_PLATFORM)}; installing the unlocked {unlocked.name} instead "
        "(versions may differ from the tested ones)"
    )
    return unlocked


def ensure_venv(
    requirements: pathlib.Path, argv: Sequence[str], covers: Sequence[pathlib.Path] = ()
) -> None:
    """Make sure .venv holds ``requirements``, then re-run ``argv`` inside it if we are not.

    ``covers`` names other requirements files that ``requirements`` includes at the same
    versions (the runtime's lock, for the tests' lock): installing it marks them installed too.

    Returns only when the current interpreter is the venv's. pip's own progress lines are
    shown: a first install downloads several hundred MB and takes minutes. With the
    environment variable ``USE_CURRENT_PYTHON`` set to 1, only checks that the packages are there.
    """
    if os.environ.get(USE_CURRENT_PYTHON) == "1":
        require_venv()
        return
    if _stamp(requirements) != _digest(requirements):
        print(f"Installing {requirements.name} into {VENV_DIR} (a minute or two the first time)")
        if not VENV_PYTHON.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
        # --no-compile: pip byte-compiles one module after another (torch and transformers
        # alone hold thousands), which was most of the install; compileall below does it on
        # every core.
        pip = [str(VENV_PYTHON), "-m", "pip", "install", "--progress-bar", "off", "--no-compile"]
        if requirements.suffix == ".lock":
            pip.append("--require-hashes")
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        _compile_installed_packages()
        for installed in (requirements, *covers):
            _stamp_path(installed).write_text(_digest(installed) + "\n")
    if pathlib.Path(sys.prefix).resolve() != VENV_DIR.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *argv])


def _compile_installed_packages() -> None:
    """Byte-compile the venv's packages once, on every core.

    Python writes a module's compiled form when it first imports it, unless
    PYTHONDONTWRITEBYTECODE is set, as on this project's CI machines: there every runtime,
    script and test process compiled torch, transformers and caikit anew, and a runtime took
    twice as long to start. compileall writes them whatever that variable says. A module
    it cannot compile (a package's Python 2 template) is compiled at import, as before.
    """
    print("Compiling the installed packages (once; about 20 s)")
    subprocess.run(
        [str(VENV_PYTHON), "-m", "compileall", "-q", "-j", "0", str(VENV_DIR / "lib")],
        stdout=subprocess.DEVNULL,
        check=False,
    )


def _stamp_path(requirements: pathlib.Path) -> pathlib.Path:
    return VENV_DIR / f"{requirements.name}.sha256"


def _stamp(requirements: pathlib.Path) -> str:
    stamp = _stamp_path(requirements)
    return stamp.read_text().strip() if stamp.is_file() else ""


def _digest(requirements: pathlib.Path) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def require_venv(modules: Sequence[str] = REQUIRED_MODULES) -> None:
    """Exit with one line that says what to do when one of ``modules`` is not installed.

    Each script calls it first, before it imports anything outside the standard library.
    """
    missing = [name for name in modules if _find_spec(name) is None]
    if missing:
        sys.exit(
            f"{', '.join(missing)} not installed for {sys.executable}: run `python3 demo.py` once "
            f"(it creates .venv), then `. .venv/bin/activate` or use .venv/bin/python"
        )


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:  # the parent package of a dotted name is missing
        return None
