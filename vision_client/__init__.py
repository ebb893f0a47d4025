"""A plain gRPC client of the vision runtime, built only on the stubs compiled from protos/.

It deliberately imports neither caikit nor torch, nor the library's data model: caikit
registers the same proto files in protobuf's global descriptor pool, and a process holding both
fails with "duplicate file name". A real client has only the .proto files, and so does this one.
It scores models with ``example_tools.evaluation`` (pycocotools and the library's pure COCO
reader, which import no caikit); tests/test_imports.py starts the client with caikit and torch
hidden.
"""
