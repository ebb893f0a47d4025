"""Step 1b of the walkthrough: generate train_data/ (labelled JPEGs and a query image).

    python3 create_train_data.py

Writes train_data/images/, train_data/labels.txt and train_data/query.jpg, replacing what was
there. Every label has its own shape and colour family, so training has something to learn.
"""

# Standard
import argparse
import sys

# Local
import common


def create(num_images: int = common.NUM_TRAIN_IMAGES) -> None:
    """Replace train_data/ with ``num_images`` generated images and the query image."""
    # Local
    from example_tools import demo_assets  # imports the library: after configuring caikit

    print(f"Generating {num_images} training images in {common.TRAIN_DATA_DIR}")
    demo_assets.create_train_data(
        common.TRAIN_DATA_DIR,
        num_images,
        query_image_name=common.QUERY_IMAGE.name,
        query_label=common.QUERY_LABEL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--num-images",
        type=int,
        default=common.NUM_TRAIN_IMAGES,
        help="how many training images to generate (default: %(default)s)",
    )
    args = parser.parse_args()
    common.configure_caikit()
    create(args.num_images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
