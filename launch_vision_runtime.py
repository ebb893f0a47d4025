"""Start the caikit runtime that serves caikit_computer_vision models over gRPC and HTTP.

    python3 launch_vision_runtime.py --purge_dirs   # (re)create models/, train_data/, protos/
    python3 launch_vision_runtime.py                # reuse them

Runs in the foreground; Ctrl-C or SIGTERM stops it cleanly.
"""

# Standard
import argparse
import shutil
import sys

# Local
import common


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


def main() -> int:
    args = parse_args()
    common.configure_caikit()
    # Imported after configuring caikit: the library reads the config when it is imported.
    # First Party
    from caikit_computer_vision.atomic_dirs import remove_leftovers
    from caikit_computer_vision.runtime_server import serve

    # Local
    from example_tools import demo_assets
    from example_tools.proto_dump import dump_interfaces

    if args.purge_dirs:
        shutil.rmtree(common.MODELS_DIR, ignore_errors=True)
        common.MODELS_DIR.mkdir(parents=True)
        print(f"Creating {common.MODELS_DIR / common.BASE_MODEL_ID} (a random tiny YOLOS)")
        demo_assets.create_base_model(common.MODELS_DIR / common.BASE_MODEL_ID)
        print(f"Generating {common.NUM_TRAIN_IMAGES} training images in {common.TRAIN_DATA_DIR}")
        demo_assets.create_train_data(
            common.TRAIN_DATA_DIR,
            common.NUM_TRAIN_IMAGES,
            query_image_name=common.QUERY_IMAGE.name,
            query_label=common.QUERY_LABEL,
        )
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

    ports = common.runtime_ports()
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
