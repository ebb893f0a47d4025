"""Run the example's commands inside .venv, creating or updating it first when needed.

Standard library only: this runs under whatever ``python3`` the user has, before any of the
example's requirements are installed. A venv the user already has is updated in place, never
deleted; a stamp file records which requirements file (by content) was installed completely, so
an interrupted install is redone next time.
"""

# Standard
from typing import Sequence
import hashlib
import importlib.util
import os
import pathlib
import subprocess
import sys

REPO_DIR = pathlib.Path(__file__).resolve().parents[1]
VENV_DIR = REPO_DIR / ".venv"
VENV_PYTHON = VENV_DIR / "bin" / "python"
# Packages every script needs; missing ones mean "not running inside the venv".
REQUIRED_MODULES = ("caikit", "grpc", "torch", "yaml")


def ensure_venv(requirements: pathlib.Path, argv: Sequence[str]) -> None:
    """Make sure .venv holds ``requirements``, then re-run ``argv`` inside it if we are not.

    Returns only when the current interpreter is the venv's. pip's own progress lines are
    shown: a first install downloads several hundred MB and takes minutes.
    """
    stamp = VENV_DIR / f"{requirements.stem}.sha256"
    wanted = hashlib.sha256(requirements.read_bytes()).hexdigest()
    installed = stamp.read_text().strip() if stamp.is_file() else None
    if installed != wanted:
        print(f"Installing {requirements.name} into {VENV_DIR} (a few minutes the first time)")
        if not VENV_PYTHON.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
        pip = [str(VENV_PYTHON), "-m", "pip", "install", "--progress-bar", "off"]
        subprocess.run([*pip, "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        stamp.write_text(wanted + "\n")
    if pathlib.Path(sys.prefix).resolve() != VENV_DIR.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *argv])


def require_venv() -> None:
    """Exit with one line that says what to do when the example's packages are missing."""
    missing = [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(
            f"{', '.join(missing)} not installed for {sys.executable}: run `python3 demo.py` once "
            f"(it creates .venv), then `. .venv/bin/activate` or use .venv/bin/python"
        )
