"""Write the interfaces caikit generates for this library: ``.proto`` files and ``openapi.json``.

The ``.proto`` files are exactly what caikit's ``dump_grpc_services`` produces, and
``openapi.json`` is the document caikit's HTTP server serves once started (caikit 0.29's
``dump_http_services`` writes one with dangling ``$ref``s, see ``_dump_openapi``); clients
compile the ``.proto`` files with ``grpc_tools.protoc``. This module adds two things caikit's
own dump CLI lacks: the directory is replaced atomically (``atomic_dirs``: a failed dump leaves
the previous one untouched), and the calling process keeps its caikit config, signal handlers
and model manager, so a launcher can dump in-process and then start the runtime.
"""

# Standard
from typing import Any, Dict, Iterator, List
import contextlib
import copy
import json
import pathlib
import signal
import threading

# First Party
from caikit.config import get_config
from caikit.core.data_model.dataobject import get_generated_proto_classes
from caikit.runtime.dump_services import dump_grpc_services
import caikit

# Local
from caikit_computer_vision.atomic_dirs import staged_directory
from caikit_computer_vision.caikit_workarounds import (
    current_model_manager,
    forget_model_manager,
    openapi_document,
)

# Config in force only while dumping. _dump_openapi builds the whole HTTP app just to read
# its OpenAPI document: without these overrides that app would load (or, with
# lazy_load_local_models, demand) the models directory and bind the metrics port, which fails
# while a runtime is already serving on it.
DUMP_CONFIG_OVERRIDES: Dict[str, Any] = {
    "runtime": {
        "local_models_dir": "",
        "lazy_load_local_models": False,
        "metrics": {"enabled": False},
    }
}

# Package prefix of the request wrappers that caikit's HTTP app generates for itself (see
# caikit/runtime/http_server/http_server.py). They are no part of the gRPC interface.
HTTP_APP_PROTO_PACKAGE_PREFIX = "caikit.http."


def dump_interfaces(output_dir: pathlib.Path) -> List[pathlib.Path]:
    """Replace ``output_dir`` with caikit's gRPC and HTTP interfaces for the configured library.

    Contract:
      * Before calling, configure caikit for the runtime (``runtime.library``,
        ``runtime.service_generation.package``, ...), e.g. ``common.configure_caikit()``: the
        dump describes the services a runtime with that config would serve. Every module
        registered with caikit under ``runtime.library`` is included.
      * Call it once per process, before a runtime (a caikit HTTP app) is built in it. caikit
        writes a .proto file for every message class generated in the process, and an HTTP app
        adds request wrappers of its own, which a later dump would include (RuntimeError).
      * Everything is written into a new temporary directory beside ``output_dir``, which then
        takes the place of ``output_dir`` (created with its parents if missing). If the dump
        raises, the temporary directory is removed and ``output_dir`` is left as it was. Files
        there that caikit no longer generates do not survive a successful dump.
      * The process is left as it was found: the caikit config values in
        ``DUMP_CONFIG_OVERRIDES``, the SIGINT/SIGTERM handlers and the absence of a
        ``ModelManager`` are restored, so a runtime started afterwards in the same process
        behaves as configured. What stays: the generated message classes (the same ones a
        runtime registers) and alog, which the HTTP app configures from the caikit config.

    Returns:
        The files written (every ``.proto`` file and ``openapi.json``), sorted by name, as paths
        inside ``output_dir``.
    """
    _check_no_http_app_protos()
    target = pathlib.Path(output_dir).absolute()
    with staged_directory(target) as staging:
        with _process_state_kept(), _caikit_config(DUMP_CONFIG_OVERRIDES):
            dump_grpc_services(str(staging), write_modules_file=False)
            _dump_openapi(staging / "openapi.json")
    return sorted(path for path in target.iterdir() if path.is_file())


def _dump_openapi(path: pathlib.Path) -> None:
    """Write the OpenAPI document that a started caikit HTTP server serves.

    caikit 0.29's ``dump_http_services`` reads ``/openapi.json`` from a server it never starts;
    the request and response schemas are added in ``start()``, so its document refers to
    ``#/$defs/...`` schemas that it does not contain. Here caikit's own patch step runs first
    (``caikit_workarounds.openapi_document``).
    """
    # First Party
    from caikit.runtime.http_server import (  # pylint: disable=import-outside-toplevel
        RuntimeHTTPServer,
    )

    document = openapi_document(RuntimeHTTPServer())
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")


def _check_no_http_app_protos() -> None:
    http_packages = sorted(
        {
            proto_class.DESCRIPTOR.file.package
            for proto_class in get_generated_proto_classes()
            if proto_class.DESCRIPTOR.file.package.startswith(HTTP_APP_PROTO_PACKAGE_PREFIX)
        }
    )
    if http_packages:
        raise RuntimeError(
            f"a caikit HTTP app was already built in this process (messages in {http_packages}),"
            " so the dump would contain its private request wrappers: dump the interfaces "
            "before starting a runtime, or in a fresh process (python3 dump_protos.py)"
        )


@contextlib.contextmanager
def _caikit_config(overrides: Dict[str, Any]) -> Iterator[None]:
    """Apply ``overrides`` to caikit's global config, then put the previous values back."""
    previous = _values_at(overrides, get_config())
    caikit.configure(config_dict=copy.deepcopy(overrides))
    try:
        yield
    finally:
        caikit.configure(config_dict=previous)


def _values_at(shape: Dict[str, Any], config: Dict[str, Any]) -> Dict[str, Any]:
    """The values ``config`` holds at the keys of the nested dict ``shape`` (None if unset)."""
    values = {}
    for key, value in shape.items():
        current = (config or {}).get(key)
        values[key] = _values_at(value, current) if isinstance(value, dict) else current
    return values


@contextlib.contextmanager
def _process_state_kept() -> Iterator[None]:
    """Undo what building caikit's HTTP app does to the process, besides registering protos.

    The app installs SIGINT/SIGTERM handlers that stop it (and replace KeyboardInterrupt), and
    creates the process-wide ModelManager from the dump-time config; a runtime started later in
    this process would reuse that manager, with model loading switched off.
    """
    signals = (signal.SIGINT, signal.SIGTERM)
    # Handlers can only be read and set from the main thread; elsewhere caikit sets none either.
    in_main_thread = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.getsignal(sig) for sig in signals} if in_main_thread else {}
    had_model_manager = current_model_manager() is not None
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        manager = current_model_manager()
        if manager is not None and not had_model_manager:
            manager.shut_down()
            forget_model_manager()
