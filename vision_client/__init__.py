"""A plain gRPC client of the vision runtime, built only on the stubs compiled from protos/.

It deliberately imports neither caikit nor caikit_computer_vision: caikit registers the same
proto files in protobuf's global descriptor pool, and a process holding both fails with
"duplicate file name". A real client has only the .proto files, and so does this one.
"""
