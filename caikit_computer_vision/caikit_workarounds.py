"""Every place where this library works around caikit 0.29.0, and nothing else.

Each workaround names the caikit behaviour it replaces (file and function, as of caikit 0.29.0)
so that it can be deleted once caikit offers the hook or the fix. Everything else in the library
uses caikit's public extension points (model finder and trainer in the config, the FastAPI app of
``RuntimeHTTPServer``).
"""

# Standard
from contextlib import contextmanager
from typing import Iterator, Sequence, Type
import functools
import uuid

# Third Party
import grpc

# First Party
from caikit.core.data_model import DataBase
from caikit.core.model_management.job_base import JobFutureBase
from caikit.core.model_management.local_model_trainer import LocalModelTrainer
from caikit.core.toolkit.reversible_hasher import ReversibleHasher
import alog

log = alog.use_channel("CCVWORK")

_CAIKIT_GRPC_ADDRESS_PREFIX = "[::]:"


@contextmanager
def build_servers_with(
    host: str, interceptors: Sequence[grpc.ServerInterceptor] = ()
) -> Iterator[None]:
    """While caikit builds its servers: bind ``host`` and put ``interceptors`` in front.

    Replaces, in caikit/runtime/grpc_server.py ``RuntimeGRPCServer.__init__``:
    ``grpc.server(..., interceptors=(PROMETHEUS_METRICS_INTERCEPTOR,))`` (no way to add an
    interceptor) and ``add_insecure_port`` / ``add_secure_port(f"[::]:{port}")`` (every
    interface); in caikit/runtime/server_base.py ``RuntimeServerBase._start_metrics_server``:
    ``start_http_server(port)`` (every interface). Our interceptors go first, so a call they
    refuse never reaches the Prometheus interceptor, and leaves no metric label behind.
    """
    # First Party
    import caikit.runtime.server_base as server_base

    original_grpc_server = grpc.server
    original_metrics_server = server_base.start_http_server

    def grpc_server_on_host(*args, **kwargs):
        kwargs["interceptors"] = (*interceptors, *(kwargs.get("interceptors") or ()))
        server = original_grpc_server(*args, **kwargs)
        for method_name in ("add_insecure_port", "add_secure_port"):
            setattr(server, method_name, _rebind(getattr(server, method_name), host))
        return server

    grpc.server = grpc_server_on_host
    server_base.start_http_server = functools.partial(original_metrics_server, addr=host)
    try:
        yield
    finally:
        grpc.server = original_grpc_server
        server_base.start_http_server = original_metrics_server


def _rebind(add_port, host: str):
    grpc_host = f"[{host}]" if ":" in host else host

    def add_port_on_host(address: str, *args):
        if address.startswith(_CAIKIT_GRPC_ADDRESS_PREFIX):
            address = f"{grpc_host}:{address[len(_CAIKIT_GRPC_ADDRESS_PREFIX):]}"
        return add_port(address, *args)

    return add_port_on_host


def cancel_running_trainings(trainer) -> int:
    """Cancel ``trainer``'s trainings that still run, wait for them, return how many.

    Replaces the missing shutdown step of caikit/runtime/grpc_server.py
    ``RuntimeGRPCServer.stop`` and http_server.py ``RuntimeHTTPServer.stop``: caikit 0.29
    trains in non-daemon threads (core/model_management/local_model_trainer.py) and does not
    stop them, so SIGTERM during a training leaves the process running until it ends. Reads the
    trainer's ``_futures`` (LocalJobBase keeps its futures there and has no public listing).
    """
    futures = getattr(trainer, "_futures", {})
    running = [f for f in list(futures.values()) if not f.get_info().status.is_terminal]
    for future in running:
        log.info("<CCV84210378I>", "cancelling training %s at shutdown", future.id)
        future.cancel()
    for future in running:
        future.wait()
    return len(running)


class KeepSavedModelFuture(LocalModelTrainer.LocalModelTrainFuture):
    """caikit's training future, except that forgetting a training keeps what it saved.

    Replaces caikit/core/model_management/local_job_base.py ``LocalJobFuture._delete_result``,
    which ``LocalJobBase._purge_old_futures`` calls for every training older than the trainer's
    ``retention_duration`` (a day by default) on the next status or Train call: it runs
    ``shutil.rmtree(save_path)``. A training's save path is ``models/<model_name>``, the model
    being served, and for a save refused because the name was taken (a second runtime on the
    same models/), another runtime's model. The record may go; the model stays.
    """

    def _delete_result(self) -> None:
        log.debug("<CCV84210380D>", "training %s forgotten; its saved model is kept", self.id)


def routable_training_id(trainer_instance_name: str) -> str:
    """A new training id that caikit's ``ModelManager.get_model_future`` can route.

    caikit/core/model_management/local_model_trainer.py ``LocalModelTrainer.train`` always
    passes ``future_id`` to its future, and local_job_base.py ``LocalJobFuture.__init__`` then
    leaves out the reversible hash of the trainer's name (``use_reversible_hash=future_id is
    None``). core/model_manager.py ``get_model_future`` un-hashes the id's first part as a
    trainer name, which fails (``error.value_check`` logs an ERRR line with a stack trace) before
    it falls back to the default trainer: one error line per GetTrainingStatus poll. An id in the
    format caikit expects, passed as ``external_training_id``, routes without an error.
    """
    return JobFutureBase.ID_DELIMITER.join(
        [ReversibleHasher.hash(trainer_instance_name), str(uuid.uuid4())]
    )


def trainer_name_of(training_id: str) -> str:
    """The trainer instance name that ``ModelManager.get_model_future`` will look up.

    Mirrors caikit/core/model_management/job_base.py ``JobBase.get_job_name``, so that the
    front door refuses ids naming no configured trainer before caikit logs an error for them.
    """
    return ReversibleHasher.reverse_hash(training_id.split(JobFutureBase.ID_DELIMITER)[0])


def http_request_class(rpc) -> Type[DataBase]:
    """The data model class that caikit's HTTP route for ``rpc`` validates a JSON body with.

    caikit/runtime/http_server/http_server.py ``_get_request_dataobject`` names a predict
    route's request ``<request name>HttpRequest`` and a train route's request is the RPC's own
    request; neither is exposed. pydantic_wrapper.py ``dataobject_to_pydantic`` caches the
    pydantic model it built for the route, so the front door validates with that same model,
    in pydantic's strict mode (caikit's is lax: ``"0.5"`` and ``true`` pass as numbers).
    """
    # First Party
    from caikit.runtime.service_generation.rpcs import TaskPredictRPC

    name = rpc.request.name + ("HttpRequest" if isinstance(rpc, TaskPredictRPC) else "")
    return DataBase.get_class_for_name(name)
