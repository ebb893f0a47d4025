"""The whole example in one command: set up, serve, train, predict, stop.

    python3 demo.py

Creates .venv from requirements.txt if needed (once, a few minutes), starts the runtime with
--purge_dirs in the background, runs run_train_and_inference.py against it, prints its results
and stops the runtime. Exit code 0 means every step worked. Extra arguments are passed to the
client, e.g. ``python3 demo.py --num-epochs 100``.
"""

# Standard
import pathlib
import subprocess
import sys
import time

# Local
from example_tools.venv import REPO_DIR, VENV_PYTHON, ensure_venv

REQUIREMENTS = REPO_DIR / "requirements.txt"
HELP_FLAGS = ("-h", "--help")


def print_help() -> None:
    """The demo's own help and, once .venv exists, the client's flags; nothing is set up."""
    print(__doc__.strip())
    if VENV_PYTHON.exists():
        print("\nFlags of run_train_and_inference.py, which the demo passes on:\n")
        subprocess.run([str(VENV_PYTHON), str(REPO_DIR / "run_train_and_inference.py"), "--help"])
    else:
        print("\n(The client's flags are listed here once .venv exists: run the demo once.)")


def main() -> int:
    if any(flag in sys.argv[1:] for flag in HELP_FLAGS):
        print_help()
        return 0
    ensure_venv(REQUIREMENTS, [str(pathlib.Path(__file__).resolve()), *sys.argv[1:]])
    # Local
    from example_tools.runtime_harness import CLIENT, start_runtime
    import common

    started = time.monotonic()
    print("Starting the runtime (launch_vision_runtime.py --purge_dirs)...", flush=True)
    try:
        runtime = start_runtime(common.WORK_DIR, ["--purge_dirs"], ports=common.runtime_ports())
    except RuntimeError as err:
        # The launcher's last line says why (e.g. which port is in use and how to pick another).
        print(f"The runtime did not start: {str(err).strip().splitlines()[-1]}", file=sys.stderr)
        return 1
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
