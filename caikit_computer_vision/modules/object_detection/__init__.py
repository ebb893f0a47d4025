"""Object detection modules."""

# Local
from .transformers import TransformersObjectDetector
