"""Train a new model through the runtime's gRPC API, wait for it, and predict with it.

Start the runtime first (python3 launch_vision_runtime.py --purge_dirs), then, from the same
directory:

    python3 run_train_and_inference.py
    python3 run_train_and_inference.py --images-dir train_data/my_data/images \\
        --labels-file train_data/my_data/annotations.json --model-id my_detector

Ctrl-C while it trains cancels that training in the runtime.
"""

# Standard
from typing import List, Optional
import argparse
import pathlib
import sys
import time

# Local
from example_tools.venv import CLIENT_MODULES, require_venv

# First: outside .venv it exits with one line that says what to do. The client needs neither
# caikit nor torch (vision_client), so it checks only for its own packages.
require_venv(CLIENT_MODULES)

# Third Party
import grpc  # noqa: E402

# Local
import common  # noqa: E402

# Local
from example_tools.evaluation import coco_scores, read_coco_ground_truth  # noqa: E402
from vision_client import annotate, calls, inputs, stubs  # noqa: E402

# Exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The client's flags, checked: every mistake is one line (exit 2) before any call."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Paths are read by the runtime, relative to the directory both are started from.",
    )
    parser.add_argument("--host", default=common.HOST, help="runtime host (default: %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="runtime gRPC port (default: runtime_config.yaml's, after RUNTIME_GRPC_PORT: "
        f"{common.runtime_grpc_port()})",
    )
    parser.add_argument(
        "--base-model",
        default=common.BASE_MODEL_ID,
        help="model to fine-tune (default: %(default)s)",
    )
    parser.add_argument(
        "--model-id",
        default=common.TRAINED_MODEL_ID,
        help="id of the new model (default: %(default)s)",
    )
    parser.add_argument(
        "--num-epochs",
        type=int,
        default=common.DEFAULT_NUM_EPOCHS,
        help=f"training epochs (default: %(default)s; {common.QUICK_NUM_EPOCHS} for a quicker, "
        "rougher model)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=common.DEFAULT_LEARNING_RATE,
        help="peak learning rate of the one-cycle schedule (default: %(default)s)",
    )
    parser.add_argument(
        "--images-dir",
        type=pathlib.Path,
        default=common.TRAIN_IMAGES_DIR,
        help="training images, inside train_data/ (default: the generated set, "
        f"{common.for_runtime(common.TRAIN_IMAGES_DIR)})",
    )
    parser.add_argument(
        "--labels-file",
        type=pathlib.Path,
        default=common.TRAIN_LABELS_FILE,
        help="their labels, inside train_data/: a COCO annotations JSON, or the example's "
        f"labels.txt format (default: {common.for_runtime(common.TRAIN_LABELS_FILE)})",
    )
    parser.add_argument(
        "--image",
        default=str(common.QUERY_IMAGE),
        help=f"JPEG/PNG to predict on (default: {common.for_runtime(common.QUERY_IMAGE)})",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="minimum score of a printed detection (default: the model's own, 0.5)",
    )
    parser.add_argument(
        "--save-annotated",
        metavar="PATH",
        help="also save the image with the expected and the predicted boxes drawn (.png or .jpg)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=common.TRAINING_TIMEOUT_S,
        help="seconds to wait for training (default: %(default)s)",
    )
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(inputs.unknown_flags_message(unknown, list(parser._option_string_actions)))
    if args.num_epochs < 1:
        parser.error("--num-epochs must be at least 1")
    if not 0 < args.learning_rate < 1:
        parser.error(
            f"--learning-rate must be between 0 and 1, e.g. {common.DEFAULT_LEARNING_RATE}"
        )
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        parser.error("--threshold must be between 0 and 1")
    # Checked before training starts, not after it has finished.
    if args.save_annotated:
        try:
            annotate.image_format_for(args.save_annotated)
        except ValueError as err:
            parser.error(f"--save-annotated: {err}")
    # The generated defaults appear once the runtime's --purge_dirs has run: checked in main().
    if args.image != str(common.QUERY_IMAGE):
        _fail_on(parser, inputs.image_problem(args.image))
    if args.images_dir != common.TRAIN_IMAGES_DIR or args.labels_file != common.TRAIN_LABELS_FILE:
        _fail_on(parser, _train_data_problem(args))
    return args


def main() -> int:
    args = parse_args()
    port = args.port or common.runtime_grpc_port()
    try:
        reason = stubs.why_stale(common.PROTOS_DIR, common.GENERATED_DIR)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 1
    problem = inputs.image_problem(args.image) or _train_data_problem(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if reason:
        print(f"Compiling {common.PROTOS_DIR}/*.proto into {common.GENERATED_DIR}/ ({reason})")
        stubs.compile_stubs(common.PROTOS_DIR, common.GENERATED_DIR)
    api = stubs.load_stubs(common.GENERATED_DIR)
    image = pathlib.Path(args.image).read_bytes()

    channel = grpc.insecure_channel(f"{args.host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
    except grpc.FutureTimeoutError:
        print(
            f"No runtime answers on {args.host}:{port}: start launch_vision_runtime.py, or pass "
            "its port (--port, or the same RUNTIME_GRPC_PORT)",
            file=sys.stderr,
        )
        return 1

    print(
        f"Training '{args.model_id}' from '{args.base_model}' on {args.images_dir} "
        f"({args.num_epochs} epochs, learning rate {args.learning_rate})"
    )
    try:
        training_id = calls.start_training(
            api,
            channel,
            model_name=args.model_id,
            model_path=common.for_runtime(common.MODELS_DIR / args.base_model),
            img_dir_path=common.for_runtime(args.images_dir.absolute()),
            labels_file=common.for_runtime(args.labels_file.absolute()),
            num_epochs=args.num_epochs,
            learning_rate=args.learning_rate,
        )
    except grpc.RpcError as err:
        print(f"Train request refused ({err.code().name}): {err.details()}")
        return 1
    try:
        # Inside the try: from here on, Ctrl-C cancels the training this client started.
        # caikit 0.29's training status holds a state and timestamps only; the runtime logs
        # the loss.
        print("  (each epoch's loss is in the runtime's log: CCVTRAIN ... epoch i/n: loss ...)")
        with calls.RememberedCtrlC() as ctrl_c:
            outcome = calls.wait_for_training(
                api,
                channel,
                training_id,
                args.timeout,
                common.STATUS_POLL_INTERVAL_S,
                interrupted=ctrl_c.pressed,
            )
    except KeyboardInterrupt:
        print(_cancel_on_interrupt(api, channel, training_id, args.model_id), file=sys.stderr)
        return INTERRUPTED
    except calls.TrainingFailed as err:
        print(f"Training failed: {err}")
        return 1
    except grpc.RpcError as err:
        print(
            f"The runtime on {args.host}:{port} stopped answering during the training "
            f"({err.code().name}): start it again; a training it did not finish saved nothing",
            file=sys.stderr,
        )
        return 1
    print(f"Training finished in {outcome.seconds:.1f} s")

    try:
        result = calls.predict(
            api, channel, args.model_id, image, args.threshold, common.SERVABLE_TIMEOUT_S
        )
    except grpc.RpcError as err:
        print(f"Predict refused ({err.code().name}): {err.details()}", file=sys.stderr)
        return 1
    servable_s = time.monotonic() - outcome.completed_at
    print(f"First prediction from '{args.model_id}' {servable_s:.2f} s after training completed:")
    expected = _expected_objects(args.image)
    if expected is None:
        print("\n".join(calls.format_detections(result)))
    else:
        print("\n".join(calls.format_expected_beside_predicted(expected, result)))
    _print_held_out_scores(api, channel, [args.base_model, args.model_id])
    if args.save_annotated:
        saved = annotate.save_annotated(
            image, result.detected_objects, args.save_annotated, expected=expected or ()
        )
        print(
            f"Saved {saved} with {len(result.detected_objects)} predicted"
            + (f" and {len(expected)} expected" if expected else "")
            + " boxes drawn"
        )
    return 0


def _fail_on(parser: argparse.ArgumentParser, problem: Optional[str]) -> None:
    if problem:
        parser.exit(2, f"{problem}\n")


def _train_data_problem(args: argparse.Namespace) -> Optional[str]:
    return inputs.train_path_problem(
        args.images_dir, common.TRAIN_DATA_DIR, "--images-dir", want_dir=True
    ) or inputs.train_path_problem(
        args.labels_file, common.TRAIN_DATA_DIR, "--labels-file", want_dir=False
    )


def _cancel_on_interrupt(api, channel, training_id: str, model_id: str) -> str:
    """Cancel the training this client started; the one line that says how it ended."""
    try:
        state = calls.cancel_training(api, channel, training_id)
    except grpc.RpcError as err:
        return (
            f"Interrupted; could not cancel training {training_id} ({err.code().name}): it may "
            f"go on and save models/{model_id}; cancel it with: curl -X DELETE "
            f"'http://{common.HOST}:{common.runtime_ports()['http']}/management/trainings"
            f"?training_id={training_id}'"
        )
    return (
        f"Interrupted: training {training_id} {state} in the runtime; "
        f"models/{model_id} was not saved"
    )


def _expected_objects(image_path: str):
    """The query image's expected boxes, when it is the generated one (None otherwise)."""
    if pathlib.Path(image_path).resolve() != common.QUERY_IMAGE.resolve():
        return None
    if not common.QUERY_ANNOTATIONS.is_file():
        return None
    return read_coco_ground_truth(str(common.QUERY_ANNOTATIONS))[common.QUERY_IMAGE.name]


def _print_held_out_scores(api, channel, model_ids) -> None:
    """Held-out mAP of each model, predictions through gRPC (a few seconds for the demo)."""
    if not common.HELD_OUT_ANNOTATIONS.is_file():
        print(f"(no held-out set at {common.HELD_OUT_ANNOTATIONS}: mAP not measured; "
              "python3 create_train_data.py writes one)")
        return
    ground_truth = read_coco_ground_truth(str(common.HELD_OUT_ANNOTATIONS))
    images = {
        name: (common.HELD_OUT_IMAGES_DIR / name).read_bytes() for name in ground_truth
    }
    started = time.monotonic()
    scores = {
        model_id: coco_scores(ground_truth, calls.predict_each(api, channel, model_id, images))
        for model_id in model_ids
    }
    print(
        f"Held-out mAP ({len(images)} images never trained on, "
        f"{time.monotonic() - started:.1f} s through gRPC):"
    )
    for model_id, score in scores.items():
        print(
            f"  {model_id:<12} mAP@0.5 {score.map_50:.3f}   "
            f"COCO mAP@[.5:.95] {score.map_50_95:.3f}"
        )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(INTERRUPTED)
