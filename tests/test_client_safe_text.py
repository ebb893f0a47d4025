"""What goes back to a client names no server path, process id or host name."""

# Standard
import os
import socket

# First Party
from caikit.core.model_management.job_base import JobInfo, JobStatus
from caikit.core.model_management.local_model_trainer import LocalModelTrainer

# Local
from caikit_computer_vision.atomic_dirs import STAGING_MARK
from caikit_computer_vision.caikit_workarounds import KeepSavedModelFuture
from caikit_computer_vision.guards.paths import client_safe

STAGING = f".new_model{STAGING_MARK}{os.getpid()}@{socket.gethostname()}-k2j4"


def test_paths_in_the_working_directory_become_what_the_client_named():
    message = f"[Errno 28] No space left on device: '{os.getcwd()}/models/{STAGING}/hf_model'"
    safe = client_safe(message)
    assert safe == "[Errno 28] No space left on device: 'models/new_model/hf_model'"


def test_other_absolute_paths_keep_only_their_last_part():
    safe = client_safe("cannot read /opt/secret/weights.bin (from '/srv/models/a.json')")
    assert "/opt" not in safe and "/srv" not in safe
    assert "weights.bin" in safe and "a.json" in safe


def test_a_relative_path_the_client_sent_is_kept():
    message = "train_data/labels.txt:3: box lies outside image 'a.jpg'"
    assert client_safe(message) == message


def test_an_errored_trainings_reasons_are_client_safe(monkeypatch):
    raw = OSError(28, "No space left on device", f"{os.getcwd()}/models/{STAGING}")
    monkeypatch.setattr(
        LocalModelTrainer.LocalModelTrainFuture,
        "get_info",
        lambda self: JobInfo(status=JobStatus.ERRORED, errors=[raw]),
    )
    future = object.__new__(KeepSavedModelFuture)
    reasons = [str(err) for err in future.get_info().errors]
    assert reasons == ["[Errno 28] No space left on device: 'models/new_model'"]
