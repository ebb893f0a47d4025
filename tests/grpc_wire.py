"""Call the runtime's gRPC API from a test process that has caikit imported.

Such a process cannot import stubs compiled from protos/ (caikit already registered the same
.proto files), so the predict request is encoded by hand (it is two fields) and the result is
decoded with caikit's own class for the same message.
"""

# Standard
from typing import Optional, Sequence, Tuple
import struct

# Third Party
import grpc

# Local
from caikit_computer_vision.data_model import ObjectDetectionResult

PREDICT_METHOD = "/ccv.ComputerVisionService/ObjectDetectionTaskPredict"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_predict_request(inputs: bytes, threshold: Optional[float] = None) -> bytes:
    """``ccv.ObjectDetectionTaskRequest {bytes inputs = 1; optional double threshold = 2;}``"""
    message = b"\x0a" + _varint(len(inputs)) + inputs  # field 1, wire type 2 (length-delimited)
    if threshold is not None:
        message += b"\x11" + struct.pack("<d", threshold)  # field 2, wire type 1 (64-bit)
    return message


def predict_callable(channel: grpc.Channel):
    """A unary callable taking the encoded request and returning an ObjectDetectionResult."""
    result_class = ObjectDetectionResult.get_proto_class()
    call = channel.unary_unary(
        PREDICT_METHOD,
        request_serializer=lambda message: message,
        response_deserializer=result_class.FromString,
    )

    def predict(
        inputs: bytes,
        threshold: Optional[float] = None,
        model_id: str = "my_model",
        timeout: float = 30.0,
        metadata: Sequence[Tuple[str, str]] = (),
    ):
        return call(
            encode_predict_request(inputs, threshold),
            metadata=[("mm-model-id", model_id), *metadata],
            timeout=timeout,
        )

    return predict
