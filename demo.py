"""The whole example in one command: set up, serve, train, predict, stop.

    python3 demo.py [flags of run_train_and_inference.py, e.g. --num-epochs 60]

Creates .venv from requirements.lock if needed (once), then checks its flags, its ports and
models/ before it starts anything. It runs its own runtime (launch_vision_runtime.py
--purge_dirs) in the background, talks only to that process, trains new_model through gRPC,
predicts, prints the results, and stops the runtime. Exit code 0 means every step worked.

What it replaces, in the current directory: models/my_model and the model it trained last time,
the generated files of train_data/ and protos/, all listed in .models.generated.json and
.train_data.generated.json. Your own models and data there are never touched.
"""

# Standard
from typing import List, Optional
import pathlib
import subprocess
import sys
import time

# Local
from example_tools.venv import REPO_DIR, VENV_PYTHON, ensure_venv, requirements_for_this_machine

HELP_FLAGS = ("-h", "--help")
INTERRUPTED = 130


def print_help() -> None:
    """The demo's own help and, once .venv exists, the client's flags; nothing is set up."""
    print(__doc__.strip())
    if VENV_PYTHON.exists():
        print("\nFlags of run_train_and_inference.py, which the demo passes on:\n")
        subprocess.run([str(VENV_PYTHON), str(REPO_DIR / "run_train_and_inference.py"), "--help"])
    else:
        print("\n(The client's flags are listed here once .venv exists: run the demo once.)")


def why_not_start(argv: List[str]) -> Optional[str]:
    """Every check the demo makes before starting anything: None, or the one line to print."""
    # Local
    from example_tools import ports, workspace
    from launch_vision_runtime import check_purge
    from run_train_and_inference import parse_args
    import common

    client_args = parse_args(argv)  # a bad flag exits here, with argparse's message
    if client_args.port is not None or client_args.host != common.HOST:
        return (
            "the demo runs its own runtime on runtime_config.yaml's ports: instead of --host/"
            "--port, set RUNTIME_GRPC_PORT=<port> (and RUNTIME_HTTP_PORT, RUNTIME_METRICS_PORT)"
        )
    busy = ports.busy_ports(common.HOST, common.runtime_ports())
    if busy:
        return ports.busy_ports_message(common.HOST, busy)
    try:
        workspace.check_not_served(common.MODELS_DIR)
        check_purge()
        workspace.check_replaceable(common.MODELS_DIR, [client_args.model_id], "the demo")
    except (workspace.ModelsDirBusy, workspace.NotGenerated) as err:
        return str(err)
    return None


def main() -> int:
    if any(flag in sys.argv[1:] for flag in HELP_FLAGS):
        print_help()
        return 0
    requirements = requirements_for_this_machine(
        REPO_DIR / "requirements.lock", REPO_DIR / "requirements.txt"
    )
    ensure_venv(requirements, [str(pathlib.Path(__file__).resolve()), *sys.argv[1:]])
    # Local
    from example_tools import workspace
    from example_tools.runtime_harness import CLIENT, start_runtime
    from run_train_and_inference import parse_args
    import common

    argv = sys.argv[1:]
    problem = why_not_start(argv)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    model_id = parse_args(argv).model_id

    started = time.monotonic()
    print("Starting the runtime (launch_vision_runtime.py --purge_dirs)...", flush=True)
    try:
        runtime = start_runtime(pathlib.Path.cwd(), ["--purge_dirs"], ports=common.runtime_ports())
    except RuntimeError as err:
        # The launcher's last line says why (e.g. which port is in use and how to pick another).
        print(f"The runtime did not start: {str(err).strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted while the runtime started; it is stopped.", file=sys.stderr)
        return INTERRUPTED
    try:
        print(f"Runtime ready in {time.monotonic() - started:.1f} s (log: {runtime.log_path})")
        for line in runtime.log().splitlines():
            if line.startswith(("Removed ", "Replaced ")):
                print(f"  {line}")
        # Listed before it exists: the next demo may replace it, the user's models it never does.
        workspace.record_generated(common.MODELS_DIR, [model_id])
        client = subprocess.run(
            [sys.executable, str(CLIENT), "--port", str(runtime.ports["grpc"]), *argv],
            env=runtime.env,
        )
    except KeyboardInterrupt:
        print(
            "Interrupted: the runtime is stopped, and a training it had not finished saved "
            "nothing.",
            file=sys.stderr,
        )
        return INTERRUPTED
    finally:
        stopped = runtime.stop()
        if not (common.MODELS_DIR / model_id).exists():
            workspace.forget_generated(common.MODELS_DIR, [model_id])
    if client.returncode != 0 or stopped != 0:
        print(f"Demo failed: client exit {client.returncode}, runtime exit {stopped}")
        print(f"Runtime log: {runtime.log_path}")
        return 1
    print(f"Demo finished in {time.monotonic() - started:.1f} s; the runtime is stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
