"""Dump the gRPC .proto files and openapi.json that caikit generates for caikit_computer_vision.

    python3 dump_protos.py                  # replace ./protos
    python3 dump_protos.py --show-conflict  # the same with a conflicting demo module registered

The dump uses runtime_config.yaml, so the files describe exactly what launch_vision_runtime.py
serves. The logic lives in example_tools.proto_dump; this script only wires it up.
"""

# Standard
import argparse
import pathlib
import sys

# Local
from example_tools.venv import require_venv

require_venv()  # first: outside .venv it exits with one line that says what to do

# Local
from example_tools import workspace  # noqa: E402
import common  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Delete and recreate the protos directory with the gRPC .proto files and the "
            "openapi.json that caikit generates for caikit_computer_vision (configured by "
            "runtime_config.yaml). The new files are written beside it first, so a failed dump "
            "leaves the old directory as it was."
        ),
        epilog=(
            "Only warnings and errors are logged (LOG_LEVEL=info shows more). Compile the "
            "result with: python3 -m grpc_tools.protoc -I protos --python_out=generated "
            "--grpc_python_out=generated protos/*.proto"
        ),
    )
    parser.add_argument(
        "--output-dir",
        type=pathlib.Path,
        default=common.PROTOS_DIR,
        help="directory to replace with the dump (default: protos/ in the current directory); "
        "refused when it holds anything but .proto and .json files",
    )
    parser.add_argument(
        "--show-conflict",
        action="store_true",
        help=(
            "also register a demo module whose run() declares threshold: str where the real "
            "module has float (caikit_computer_vision/conflict_demo.py), and switch inference "
            "jobs off (caikit 0.29 raises instead of warning when they are on). caikit then "
            "warns 'Conflicting value types for arg threshold' and leaves "
            "ccv.objectdetectiontaskrequest.proto out. The broken dump replaces --output-dir "
            "(protos/ unless given): run again without the flag to restore it"
        ),
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    try:
        workspace.check_dump_target(args.output_dir.absolute())
    except workspace.NotGenerated as err:
        print(err, file=sys.stderr)
        return 2
    # Imported after the arguments are read: caikit takes seconds to import (--help does not).
    # First Party
    import caikit
    import caikit.core.toolkit.logging

    # Local
    from example_tools.proto_dump import dump_interfaces

    common.configure_caikit()
    caikit.configure(config_dict={"log": {"level": common.DUMP_LOG_LEVEL}})
    caikit.core.toolkit.logging.configure()

    if args.show_conflict:
        # Local
        # The library's own module first (the package registers it on first access), then the
        # demo module that conflicts with it.
        from caikit_computer_vision import TransformersObjectDetector  # noqa: F401
        from caikit_computer_vision import conflict_demo  # registers the demo module

        caikit.configure(config_dict=conflict_demo.DEMO_CONFIG_OVERRIDES)

    written = dump_interfaces(args.output_dir)
    protos = [path for path in written if path.suffix == ".proto"]
    others = ", ".join(path.name for path in written if path.suffix != ".proto")
    print(f"Wrote {len(protos)} .proto files and {others} to {args.output_dir.absolute()}")
    if args.show_conflict:
        print(conflict_demo.check_outcome(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
