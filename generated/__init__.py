"""Python gRPC stubs compiled from protos/ by run_train_and_inference.py (not committed)."""
