"""Start the caikit runtime that serves caikit_computer_vision models over gRPC and HTTP.

    python3 launch_vision_runtime.py --purge_dirs   # (re)create models/, train_data/, protos/
    python3 launch_vision_runtime.py                # reuse them

Runs in the foreground; Ctrl-C or SIGTERM stops it cleanly.
"""

# Standard
from typing import Dict, List, Tuple
import argparse
import os
import socket
import sys

# OpenMP reads this when torch loads: with caikit_computer_vision.torch_threads above 1, idle
# worker threads sleep instead of spinning, which on a machine with other work made training
# steps up to 30x slower (docs/training.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Local
import common  # noqa: E402
import create_models_dir  # noqa: E402
import create_train_data  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--purge_dirs",
        action="store_true",
        help=f"delete and recreate models/ (with a fresh '{common.BASE_MODEL_ID}'), "
        "train_data/ and protos/ before starting",
    )
    parser.add_argument(
        "--host",
        default=common.BIND_HOST,
        help="interface to listen on (default: %(default)s, this machine only; "
        "0.0.0.0 for every interface)",
    )
    return parser.parse_args()


def busy_ports(host: str, ports: Dict[str, int]) -> List[Tuple[str, int]]:
    """The (server, port) pairs that something else already listens on at ``host``.

    Checked before the servers start so that a busy port is one line naming the port and the
    override, not a traceback from deep inside grpc or uvicorn.
    """
    busy = []
    for server, port in ports.items():
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As the servers do: a port whose old connections linger in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                busy.append((server, port))
    return busy


def main() -> int:
    args = parse_args()
    ports = common.runtime_ports()
    busy = busy_ports(args.host, ports)
    if busy:
        server, port = busy[0]
        print(
            f"port {port} ({server}) is already in use on {args.host}: stop the program that "
            f"holds it, or choose another port with RUNTIME_{server.upper()}_PORT=<port>",
            file=sys.stderr,
        )
        return 2
    common.configure_caikit()
    # Imported after configuring caikit: the library reads the config when it is imported.
    # First Party
    from caikit_computer_vision.atomic_dirs import remove_leftovers
    from caikit_computer_vision.runtime_server import serve

    # Local
    from example_tools import demo_assets
    from example_tools.proto_dump import dump_interfaces

    if args.purge_dirs:
        create_models_dir.create()
        create_train_data.create()
        print(f"Dumping the generated interfaces to {common.PROTOS_DIR}")
        dump_interfaces(common.PROTOS_DIR)
    else:
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

    for leftover in remove_leftovers(common.MODELS_DIR):
        print(f"Removed {leftover}, left by an interrupted save")

    print(
        f"Serving models from {common.MODELS_DIR}: gRPC on {args.host}:{ports['grpc']}, "
        f"HTTP on http://{args.host}:{ports['http']}, metrics on :{ports['metrics']}. "
        "Ctrl-C to stop.",
        flush=True,
    )
    serve(args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
