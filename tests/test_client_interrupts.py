"""Ctrl-C in run_train_and_inference.py's wait for a training: a KeyboardInterrupt that a
blocking gRPC call lost still ends the wait (vision_client/calls.py ``RememberedCtrlC``)."""

# Standard
from types import SimpleNamespace
import io
import os
import signal

# Third Party
import pytest

# Local
from vision_client import calls


class _Status:
    """GetTrainingStatus answering RUNNING; ``on_call`` runs inside each call."""

    def __init__(self, on_call):
        self.calls = 0
        self.on_call = on_call

    def GetTrainingStatus(self, request):  # noqa: N802 (the RPC's name)
        self.calls += 1
        self.on_call()
        return SimpleNamespace(state="RUNNING")


def _stubs(status: _Status) -> SimpleNamespace:
    return SimpleNamespace(
        training_management=SimpleNamespace(TrainingManagementStub=lambda channel: status),
        training_info=SimpleNamespace(TrainingInfoRequest=lambda training_id: training_id),
        job_status=SimpleNamespace(JobStatus=SimpleNamespace(Name=lambda state: state)),
    )


def test_a_ctrl_c_lost_by_a_call_still_ends_the_wait():
    with calls.RememberedCtrlC() as ctrl_c:

        def ctrl_c_that_the_call_loses():
            try:
                os.kill(os.getpid(), signal.SIGINT)  # its handler runs before the next line
                signal.getsignal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # lost, as grpc's wait can lose it

        status = _Status(ctrl_c_that_the_call_loses)
        output = io.StringIO()
        with pytest.raises(KeyboardInterrupt):
            calls.wait_for_training(
                _stubs(status), None, "t1", timeout_s=2, poll_interval_s=0.01,
                progress=calls.ProgressLine(output), interrupted=ctrl_c.pressed,
            )
    assert status.calls == 1 and ctrl_c.pressed()
    assert output.getvalue().strip().endswith("training t1: interrupted")


def test_without_ctrl_c_the_wait_goes_on_and_the_previous_handler_comes_back():
    before = signal.getsignal(signal.SIGINT)
    with calls.RememberedCtrlC() as ctrl_c:
        assert signal.getsignal(signal.SIGINT) != before
        status = _Status(lambda: None)
        with pytest.raises(calls.TrainingFailed):
            calls.wait_for_training(
                _stubs(status), None, "t2", timeout_s=0.05, poll_interval_s=0.01,
                progress=calls.ProgressLine(io.StringIO()), interrupted=ctrl_c.pressed,
            )
    assert status.calls >= 2 and not ctrl_c.pressed()
    assert signal.getsignal(signal.SIGINT) == before
