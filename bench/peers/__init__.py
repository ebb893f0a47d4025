"""The peers figure group: our runtime against KServe, LitServe, PyTriton and plain FastAPI and
grpcio servers, on the same saved models (bench/peers/rounds.py says how).

The servers of the peers import this package from their own venvs, without caikit or the
bench's other modules: ``run`` imports the orchestration only when it is called.
"""

# Standard
from typing import List


def run(quick: bool) -> List:
    """The figure group's entry point (bench/__main__.py): ``rounds.run``."""
    # Local
    from bench.peers.rounds import run as run_rounds

    return run_rounds(quick)
