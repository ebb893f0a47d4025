"""Start the caikit runtime that serves caikit_computer_vision models over gRPC and HTTP.

    python3 launch_vision_runtime.py --purge_dirs   # (re)create the example's model, data, protos
    python3 launch_vision_runtime.py                # reuse them

Runs in the foreground; Ctrl-C or SIGTERM stops it cleanly.
"""

# Standard
from typing import List, Optional
import argparse
import os
import sys

# OpenMP reads these when torch loads. PASSIVE: when the process's OpenMP threads outnumber the
# cores, idle ones sleep at once instead of spinning, which on a machine with other work made
# training steps many times slower (docs/training.md, "What did not work"). GOMP_SPINCOUNT:
# otherwise (one team, batching._OpenMpTeam) they spin briefly between a pass's operations
# instead of sleeping at each of them (docs/performance.md, "Threads follow the load").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

# Local
from example_tools.venv import require_venv  # noqa: E402

require_venv()  # first: outside .venv it exits with one line that says what to do

# Local
from example_tools import launcher_console as console  # noqa: E402
from example_tools import ports as port_checks  # noqa: E402
from example_tools import workspace  # noqa: E402
import common  # noqa: E402
import create_models_dir  # noqa: E402
import create_train_data  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ports = common.runtime_ports()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=(
            f"Ports (runtime_config.yaml, after overrides): gRPC {ports['grpc']} "
            f"(RUNTIME_GRPC_PORT), HTTP {ports['http']} (RUNTIME_HTTP_PORT), metrics "
            f"{ports['metrics']} (RUNTIME_METRICS_PORT); e.g. RUNTIME_GRPC_PORT=9000 python3 "
            "launch_vision_runtime.py. More log detail: LOG_LEVEL=info (or debug)."
        ),
    )
    parser.add_argument(
        "--purge_dirs",
        "--purge-dirs",
        action="store_true",
        help=f"recreate what this example generated before starting: models/{common.BASE_MODEL_ID} "
        "(and models the demo trained), the generated files of train_data/ and protos/. Your own "
        "models and data are never deleted (the lists are in "
        f"{workspace.manifest_path(common.MODELS_DIR).name} and "
        f"{workspace.manifest_path(common.TRAIN_DATA_DIR).name}); refused while another runtime "
        "serves models/",
    )
    parser.add_argument(
        "--host",
        default=common.HOST,
        help="interface to listen on (default: %(default)s, this machine only; "
        "0.0.0.0 for every interface)",
    )
    return parser.parse_args(argv)


def check_purge() -> None:
    """Everything --purge_dirs would replace is the example's own (workspace.NotGenerated)."""
    workspace.check_replaceable(common.MODELS_DIR, [common.BASE_MODEL_ID], "--purge_dirs")
    workspace.check_replaceable(
        common.TRAIN_DATA_DIR, common.GENERATED_TRAIN_DATA, "--purge_dirs"
    )
    workspace.check_dump_target(common.PROTOS_DIR)


def main() -> int:
    args = parse_args()
    ports = common.runtime_ports()
    busy = port_checks.busy_ports(args.host, ports)
    if busy:
        print(port_checks.busy_ports_message(args.host, busy), file=sys.stderr)
        return 2
    if args.purge_dirs:
        try:
            # Held until this process exits; shared once the purge is done (workspace).
            lock = workspace.hold_models_dir(common.MODELS_DIR, alone=True)
            check_purge()
        except (workspace.ModelsDirBusy, workspace.NotGenerated) as err:
            print(err, file=sys.stderr)
            return 2
    common.configure_caikit()
    console.quiet_start_up(common.QUIET_STARTUP_LOG)
    # Imported after configuring caikit: the library reads the config when it is imported.
    # First Party
    from caikit_computer_vision.atomic_dirs import remove_leftovers
    from caikit_computer_vision.runtime_server import serve

    # Local
    from example_tools import demo_assets
    from example_tools.proto_dump import dump_interfaces

    if not args.purge_dirs:
        missing = demo_assets.missing_demo_assets(
            common.MODELS_DIR, common.BASE_MODEL_ID, common.TRAIN_DATA_DIR, common.PROTOS_DIR
        )
        for problem in missing:
            print(f"Missing: {problem}", file=sys.stderr)
        if not common.MODELS_DIR.is_dir():
            print("Run with --purge_dirs to create everything.", file=sys.stderr)
            return 2
        if missing:
            print("Starting anyway; run with --purge_dirs to recreate them.", file=sys.stderr)
        try:
            lock = workspace.hold_models_dir(common.MODELS_DIR, alone=False)  # noqa: F841
        except workspace.ModelsDirBusy as err:
            print(err, file=sys.stderr)
            return 2
    else:
        removed = workspace.remove_generated(common.MODELS_DIR)
        if removed:
            names = ", ".join(path.name for path in removed)
            where = common.MODELS_DIR.absolute()
            print(f"Removed from {where} (generated by this example): {names}")
        create_models_dir.create()
        create_train_data.create()
        print(f"Dumping the generated interfaces to {common.PROTOS_DIR.absolute()}")
        dump_interfaces(common.PROTOS_DIR)
        workspace.downgrade(lock)

    for leftover in remove_leftovers(common.MODELS_DIR):
        print(f"Removed {leftover}, left by an interrupted save")

    console.announce_when_serving(os.getpid(), args.host, ports, common.MODELS_DIR.absolute())
    try:
        serve(args.host)
    except ValueError as err:
        # A setting the runtime refuses before it serves (thread pool, open files, a limit):
        # the message names the key to change.
        print(f"The runtime did not start: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
