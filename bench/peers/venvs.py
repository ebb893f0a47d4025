"""One virtual environment per peer, built from bench/peer_requirements/<peer>.txt and reused.

A peer's file pins the peer and includes model.txt (the model call's packages at the runtime's
versions); ``<peer>.constraints.txt`` pins every other package at the version measured.
A venv lives in bench/.peer_venvs/<peer> (git-ignored). A stamp file in it holds the digest of
the requirements it was built from (those three files); a venv
whose stamp differs, or that has none (an interrupted build), is built again from scratch. pip's
output goes to bench/.peer_venvs/<peer>.log. Built with the interpreter .venv was made from
(``sys.base_prefix``), so that every server runs the same CPython.

    .venv/bin/python -m bench.peers.venvs            # build or check every peer's venv
"""

# Standard
from typing import Dict, List, Sequence
import hashlib
import pathlib
import shutil
import subprocess
import sys

BENCH_DIR = pathlib.Path(__file__).resolve().parents[1]
REQUIREMENTS_DIR = BENCH_DIR / "peer_requirements"
VENVS_DIR = BENCH_DIR / ".peer_venvs"
# Included by every peer's file: the model call's packages at requirements.lock's versions.
MODEL_REQUIREMENTS = REQUIREMENTS_DIR / "model.txt"
PEERS = ("kserve", "litserve", "pytriton")
STAMP_NAME = "requirements.sha256"
BUILD_TIMEOUT_S = 1800


def requirements_file(peer: str) -> pathlib.Path:
    return REQUIREMENTS_DIR / f"{peer}.txt"


def venv_dir(peer: str) -> pathlib.Path:
    return VENVS_DIR / peer


def venv_python(peer: str) -> pathlib.Path:
    return venv_dir(peer) / "bin" / "python"


def base_python() -> pathlib.Path:
    """The interpreter this venv was created from (a venv's own python is a link to it)."""
    return (
        pathlib.Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    )


def constraints_file(peer: str) -> pathlib.Path:
    return REQUIREMENTS_DIR / f"{peer}.constraints.txt"


def requirements_digest(peer: str) -> str:
    """The digest of every file ``peer``'s venv is built from."""
    digest = hashlib.sha256()
    for path in (requirements_file(peer), MODEL_REQUIREMENTS, constraints_file(peer)):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def is_current(peer: str) -> bool:
    stamp = venv_dir(peer) / STAMP_NAME
    return (
        venv_python(peer).exists()
        and stamp.is_file()
        and stamp.read_text().strip() == requirements_digest(peer)
    )


def ensure_venv(peer: str) -> pathlib.Path:
    """The python of ``peer``'s venv, built first unless its stamp matches its requirements."""
    if is_current(peer):
        return venv_python(peer)
    target, log_path = venv_dir(peer), VENVS_DIR / f"{peer}.log"
    print(
        f"building {target} from {requirements_file(peer).name} (pip log: {log_path}) ...",
        file=sys.stderr,
        flush=True,
    )
    if target.exists():
        shutil.rmtree(target)
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        for command in (
            [str(base_python()), "-m", "venv", str(target)],
            [
                str(venv_python(peer)),
                "-m",
                "pip",
                "install",
                "--progress-bar",
                "off",
                "--no-compile",
                "-r",
                str(requirements_file(peer)),
            ],
        ):
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            status = subprocess.run(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REQUIREMENTS_DIR,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            ).returncode
            if status != 0:
                raise RuntimeError(
                    f"building the {peer} venv failed (exit {status}) at: {' '.join(command)}; "
                    f"see {log_path}"
                )
    (target / STAMP_NAME).write_text(requirements_digest(peer) + "\n")
    return venv_python(peer)


def ensure_all(peers: Sequence[str] = PEERS) -> Dict[str, pathlib.Path]:
    return {peer: ensure_venv(peer) for peer in peers}


def main(argv: List[str]) -> int:
    for peer, python in ensure_all(argv or PEERS).items():
        print(f"{peer}: {python}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
