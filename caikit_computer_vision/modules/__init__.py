"""Modules (model implementations) of caikit_computer_vision."""

# Local
from . import object_detection
