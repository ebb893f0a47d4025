"""Train a new model through the runtime's gRPC API, wait for it, and predict with it.

Start the runtime first (python3 launch_vision_runtime.py --purge_dirs), then, from the same
directory:

    python3 run_train_and_inference.py
"""

# Standard
import argparse
import pathlib
import sys
import time

# Third Party
import grpc

# Local
from example_tools.coco_evaluation import coco_scores, read_coco_ground_truth
from vision_client import annotate, calls, stubs
import common


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=common.HOST, help="runtime host (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=None, help="runtime gRPC port (default: runtime_config.yaml)"
    )
    parser.add_argument("--base-model", default=common.BASE_MODEL_ID, help="model to fine-tune")
    parser.add_argument("--model-id", default=common.TRAINED_MODEL_ID, help="id of the new model")
    parser.add_argument("--num-epochs", type=int, default=common.DEFAULT_NUM_EPOCHS)
    parser.add_argument("--learning-rate", type=float, default=common.DEFAULT_LEARNING_RATE)
    parser.add_argument(
        "--image", default=str(common.QUERY_IMAGE), help="JPEG/PNG to predict on (%(default)s)"
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
        help="also save the image with the predicted boxes and labels drawn (.png or .jpg)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=common.TRAINING_TIMEOUT_S,
        help="seconds to wait for training (default: %(default)s)",
    )
    args = parser.parse_args()
    if args.save_annotated:
        # Checked before training starts, not after it has finished.
        try:
            annotate.image_format_for(args.save_annotated)
        except ValueError as err:
            parser.error(f"--save-annotated: {err}")
    return args


def main() -> int:
    args = parse_args()
    port = args.port or common.runtime_grpc_port()

    try:
        reason = stubs.why_stale(common.PROTOS_DIR, common.GENERATED_DIR)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 1
    if reason:
        print(f"Compiling {common.PROTOS_DIR}/*.proto into {common.GENERATED_DIR}/ ({reason})")
        stubs.compile_stubs(common.PROTOS_DIR, common.GENERATED_DIR)
    api = stubs.load_stubs(common.GENERATED_DIR)
    with open(args.image, "rb") as image_file:
        image = image_file.read()

    channel = grpc.insecure_channel(f"{args.host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
    except grpc.FutureTimeoutError:
        print(f"No runtime answers on {args.host}:{port}: is launch_vision_runtime.py running?")
        return 1

    print(
        f"Training '{args.model_id}' from '{args.base_model}' on {common.TRAIN_IMAGES_DIR} "
        f"({args.num_epochs} epochs, learning rate {args.learning_rate})"
    )
    try:
        training_id = calls.start_training(
            api,
            channel,
            model_name=args.model_id,
            model_path=common.for_runtime(common.MODELS_DIR / args.base_model),
            img_dir_path=common.for_runtime(common.TRAIN_IMAGES_DIR),
            labels_file=common.for_runtime(common.TRAIN_LABELS_FILE),
            num_epochs=args.num_epochs,
            learning_rate=args.learning_rate,
        )
    except grpc.RpcError as err:
        print(f"Train request refused ({err.code().name}): {err.details()}")
        return 1
    # caikit 0.29's training status holds a state and timestamps only; the runtime logs the loss.
    print("  (each epoch's loss is in the runtime's log: CCVTRAIN ... epoch i/n: loss ...)")
    try:
        outcome = calls.wait_for_training(
            api, channel, training_id, args.timeout, common.STATUS_POLL_INTERVAL_S
        )
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

    result = calls.predict(
        api, channel, args.model_id, image, args.threshold, common.SERVABLE_TIMEOUT_S
    )
    servable_s = time.monotonic() - outcome.completed_at
    print(f"First prediction from '{args.model_id}' {servable_s:.2f} s after training completed:")
    expected = _expected_objects(args.image)
    if expected is None:
        print("\n".join(calls.format_detections(result)))
    else:
        print("\n".join(calls.format_expected_beside_predicted(expected, result)))
    _print_held_out_scores(api, channel, [args.base_model, args.model_id])
    if args.save_annotated:
        saved = annotate.save_annotated(image, result.detected_objects, args.save_annotated)
        print(f"Saved {saved} with {len(result.detected_objects)} boxes drawn")
    return 0


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
    sys.exit(main())
