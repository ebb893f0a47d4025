"""What launch_vision_runtime.py shows a person while it starts: caikit's start-up chatter kept
down, and one block at the end that says what is served, where, and how to stop it.

The block is printed from a thread once the launcher's own process listens on its gRPC and HTTP
ports (``ports.listens_on``), i.e. after caikit's servers have started, whatever they log.
"""

# Standard
from typing import Dict
import os
import pathlib
import threading
import time

# Local
from example_tools.ports import listens_on
import common

RULE = "-" * 72


def quiet_start_up(levels: Dict[str, str]) -> None:
    """Add ``levels`` (log channel -> lowest level shown) to caikit's ``log.filters``, unless the
    environment sets LOG_LEVEL or LOG_FILTERS. Call after configuring caikit, before serving."""
    if {"LOG_LEVEL", "LOG_FILTERS"} & os.environ.keys():
        return
    # First Party
    from caikit.config import get_config  # pylint: disable=import-outside-toplevel
    import caikit  # pylint: disable=import-outside-toplevel

    filters = ",".join(f"{channel}:{level}" for channel, level in levels.items())
    current = get_config().log.filters
    combined = f"{current},{filters}" if current else filters
    caikit.configure(config_dict={"log": {"filters": combined}})


def announce_when_serving(
    pid: int, host: str, ports: Dict[str, int], models_dir: pathlib.Path, timeout_s: float = 600.0
) -> threading.Thread:
    """Start a daemon thread that prints ``serving_block`` once ``pid`` holds its gRPC and HTTP
    ports (nothing if it does not within ``timeout_s``)."""

    def wait_then_print() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(listens_on(pid, ports[name]) is not False for name in ("grpc", "http")):
                print(serving_block(pid, host, ports, models_dir), flush=True)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=wait_then_print, name="announce-when-serving", daemon=True)
    thread.start()
    return thread


def serving_block(pid: int, host: str, ports: Dict[str, int], models_dir: pathlib.Path) -> str:
    """The lines that end the launcher's start-up: models, addresses, how to stop."""
    models = sorted(
        path.name
        for path in pathlib.Path(models_dir).iterdir()
        if path.is_dir() and not path.name.startswith(".")
    )
    shown = common.HOST if host in ("0.0.0.0", "::") else host
    return "\n".join(
        [
            RULE,
            f"Serving {len(models)} model(s) from {models_dir}: {', '.join(models)}",
            f"  gRPC     {host}:{ports['grpc']}",
            f"  HTTP     http://{shown}:{ports['http']}  (routes: /docs, /openapi.json)",
            f"  metrics  http://{shown}:{ports['metrics']}/metrics",
            f"Stop: Ctrl-C here, or kill {pid} (SIGTERM)",
            RULE,
        ]
    )
