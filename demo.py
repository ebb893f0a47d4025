"""The whole example in one command: set up, serve, train, predict, stop.

    python3 demo.py

Creates .venv from requirements.txt if needed (once, a few minutes), starts the runtime with
--purge_dirs in the background, runs run_train_and_inference.py against it, prints its results
and stops the runtime. Exit code 0 means every step worked. Extra arguments are passed to the
client, e.g. ``python3 demo.py --num-epochs 100``.
"""

# Standard
import hashlib
import os
import pathlib
import subprocess
import sys
import time

REPO_DIR = pathlib.Path(__file__).resolve().parent
VENV_DIR = REPO_DIR / ".venv"
VENV_PYTHON = VENV_DIR / "bin" / "python"
REQUIREMENTS = REPO_DIR / "requirements.txt"
# Written after a complete install: a half-finished one is redone on the next run.
INSTALLED_STAMP = VENV_DIR / "requirements.sha256"


def ensure_environment() -> None:
    """Re-run this script inside .venv, creating and filling it first when needed."""
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    installed = INSTALLED_STAMP.read_text().strip() if INSTALLED_STAMP.is_file() else None
    if installed != wanted:
        print(f"Setting up {VENV_DIR} from {REQUIREMENTS.name} (only needed once)...", flush=True)
        if not VENV_PYTHON.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
        subprocess.run(
            [str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
            check=True,
        )
        INSTALLED_STAMP.write_text(wanted + "\n")
    if pathlib.Path(sys.prefix).resolve() != VENV_DIR.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(pathlib.Path(__file__)), *sys.argv[1:]])


def main() -> int:
    ensure_environment()
    sys.path.insert(0, str(REPO_DIR))
    # Local
    from vision_client.local_runtime import CLIENT, start_runtime
    import common

    started = time.monotonic()
    print("Starting the runtime (launch_vision_runtime.py --purge_dirs)...", flush=True)
    runtime = start_runtime(common.WORK_DIR, ["--purge_dirs"], ports=common.runtime_ports())
    try:
        print(f"Runtime ready in {time.monotonic() - started:.1f} s (log: {runtime.log_path})")
        client = subprocess.run(
            [sys.executable, str(CLIENT), "--port", str(runtime.ports["grpc"]), *sys.argv[1:]],
            cwd=common.WORK_DIR,
            env=runtime.env,
        )
    finally:
        stopped = runtime.stop()
    if client.returncode != 0 or stopped != 0:
        print(f"Demo failed: client exit {client.returncode}, runtime exit {stopped}")
        print(f"Runtime log: {runtime.log_path}")
        return 1
    print(f"Demo finished in {time.monotonic() - started:.1f} s; the runtime is stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
