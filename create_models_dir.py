"""Step 1a of the walkthrough: create models/ with the demo's base model, my_model.

    python3 create_models_dir.py

my_model is a randomly initialised tiny YOLOS (labels cat and dog), checked with one prediction
before it is saved. An existing models/ is replaced. ``launch_vision_runtime.py --purge_dirs``
runs this step, create_train_data.py and dump_protos.py for you.
"""

# Standard
import argparse
import shutil
import sys

# Local
import common


def create() -> None:
    """Replace models/ with one holding a fresh my_model (caikit must be configured)."""
    # Local
    from example_tools import demo_assets  # imports the library: after configuring caikit

    shutil.rmtree(common.MODELS_DIR, ignore_errors=True)
    common.MODELS_DIR.mkdir(parents=True)
    print(f"Creating {common.MODELS_DIR / common.BASE_MODEL_ID} (a random tiny YOLOS)")
    demo_assets.create_base_model(common.MODELS_DIR / common.BASE_MODEL_ID)


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    common.configure_caikit()
    create()
    return 0


if __name__ == "__main__":
    sys.exit(main())
