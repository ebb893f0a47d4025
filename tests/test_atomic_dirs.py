"""atomic_dirs: a no-replace publish is atomic, in both of its implementations, across processes.

Each behaviour runs twice: with renameat2 (Linux, glibc) and with the mkdir-then-rename
fallback used where renameat2 is missing or the file system refuses its flags.
"""

# Standard
import multiprocessing
import os
import pathlib
import socket
import subprocess
import sys

# Third Party
import pytest

# Local
from caikit_computer_vision import atomic_dirs
from caikit_computer_vision.atomic_dirs import (
    DirectoryExistsError,
    publish_directory,
    remove_leftovers,
    staged_directory,
)

RACERS = 6
ROUNDS = 20


@pytest.fixture(params=["renameat2", "fallback"])
def mode(request, monkeypatch):
    if request.param == "fallback":
        monkeypatch.setattr(atomic_dirs, "_renameat2", None)
    else:
        assert atomic_dirs._renameat2 is not None, "this Linux/glibc should have renameat2"

        def no_fallback(*args, **kwargs):
            raise AssertionError("the fallback ran although renameat2 is available")

        monkeypatch.setattr(atomic_dirs, "_publish_by_claim", no_fallback)
    return request.param


def _stage(parent: pathlib.Path, owner: str) -> pathlib.Path:
    source = parent / f".src-{owner}"
    source.mkdir()
    (source / "owner").write_text(owner)
    return source


def test_publish_creates_the_target(tmp_path, mode):
    source = _stage(tmp_path, "a")
    publish_directory(source, tmp_path / "model")
    assert (tmp_path / "model" / "owner").read_text() == "a"
    assert not source.exists()


@pytest.mark.parametrize("existing", ["model", "empty-directory", "file", "dangling-symlink"])
def test_publish_never_replaces_anything(tmp_path, mode, existing):
    target = tmp_path / "model"
    if existing == "model":
        target.mkdir()
        (target / "owner").write_text("first")
    elif existing == "empty-directory":
        target.mkdir()
    elif existing == "file":
        target.write_text("first")
    else:
        target.symlink_to(tmp_path / "nowhere")
    before = sorted(os.listdir(tmp_path))
    source = _stage(tmp_path, "second")
    with pytest.raises(DirectoryExistsError, match="never replaced"):
        publish_directory(source, target)
    assert (source / "owner").read_text() == "second"  # the caller decides what to do with it
    assert sorted(os.listdir(tmp_path)) == sorted(before + [source.name])
    if existing == "model":
        assert (target / "owner").read_text() == "first"
    elif existing == "empty-directory":
        assert list(target.iterdir()) == []
    elif existing == "file":
        assert target.read_text() == "first"
    else:
        assert target.is_symlink()


def test_refused_staged_directory_leaves_only_the_existing_one(tmp_path, mode):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "owner").write_text("first")
    with pytest.raises(DirectoryExistsError):
        with staged_directory(tmp_path / "model", replace=False) as staging:
            (staging / "owner").write_text("second")
    assert os.listdir(tmp_path) == ["model"]
    assert (tmp_path / "model" / "owner").read_text() == "first"


def test_failed_body_leaves_nothing(tmp_path, mode):
    with pytest.raises(RuntimeError, match="disk full"):
        with staged_directory(tmp_path / "model", replace=False) as staging:
            (staging / "half").write_text("x")
            raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == []


def test_replace_swaps_an_existing_directory(tmp_path, monkeypatch):
    for use_renameat2 in (True, False):
        if not use_renameat2:
            monkeypatch.setattr(atomic_dirs, "_renameat2", None)
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / "old-only").write_text("old")
        with staged_directory(tmp_path / "data", replace=True) as staging:
            (staging / "new-only").write_text("new")
        assert os.listdir(tmp_path / "data") == ["new-only"]
        assert os.listdir(tmp_path) == ["data"]


def _race(barrier, parent: str, owner: int, results: str) -> None:
    """One racer: each round, stage a directory of its own and publish it to round_<n>."""
    lines = []
    for round_number in range(ROUNDS):
        barrier.wait(timeout=30)
        try:
            with staged_directory(
                pathlib.Path(parent) / f"round_{round_number}", replace=False
            ) as staging:
                for part in ("owner", "config", "weights"):
                    (staging / part).write_text(str(owner))
            lines.append(f"{round_number} won")
        except DirectoryExistsError:
            lines.append(f"{round_number} lost")
    pathlib.Path(results).write_text("\n".join(lines))


def test_racing_processes_publish_exactly_one_whole_directory(tmp_path, mode):
    context = multiprocessing.get_context("fork")  # keeps the fallback's monkeypatch
    barrier = context.Barrier(RACERS)
    models = tmp_path / "models"
    models.mkdir()
    racers = [
        context.Process(target=_race, args=(barrier, str(models), owner, str(tmp_path / f"r{owner}")))
        for owner in range(RACERS)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=120)
    assert [racer.exitcode for racer in racers] == [0] * RACERS
    outcomes = {
        owner: dict(line.split() for line in (tmp_path / f"r{owner}").read_text().splitlines())
        for owner in range(RACERS)
    }
    for round_number in map(str, range(ROUNDS)):
        winners = [owner for owner in outcomes if outcomes[owner][round_number] == "won"]
        assert len(winners) == 1, (round_number, outcomes)
        published = models / f"round_{round_number}"
        # Whole and from one writer: no file of a loser mixed in.
        assert {p.name: p.read_text() for p in published.iterdir()} == {
            part: str(winners[0]) for part in ("owner", "config", "weights")
        }
    assert sorted(os.listdir(models)) == sorted(f"round_{n}" for n in range(ROUNDS))


def _staging_of(parent: pathlib.Path, pid: int, host: str) -> pathlib.Path:
    path = parent / f".model{atomic_dirs.STAGING_MARK}{pid}@{host}-abc123"
    path.mkdir()
    return path


def test_remove_leftovers_keeps_directories_of_live_writers(tmp_path):
    host = socket.gethostname()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead = _staging_of(tmp_path, int(gone.stdout), host)
    alive = _staging_of(tmp_path, os.getppid(), host)
    mine = _staging_of(tmp_path, os.getpid(), host)
    elsewhere = _staging_of(tmp_path, 1, "another-host")
    legacy = tmp_path / f".model{atomic_dirs.STAGING_MARK}abc123"
    legacy.mkdir()
    retired = tmp_path / f".model{atomic_dirs.RETIRED_MARK}abc123"
    retired.mkdir()
    (tmp_path / "model").mkdir()
    assert sorted(remove_leftovers(tmp_path)) == sorted([dead, legacy, retired])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (alive, mine, elsewhere, tmp_path / "model")
    )


def test_staging_directories_name_their_writer(tmp_path):
    with staged_directory(tmp_path / "model", replace=False) as staging:
        assert staging.name.startswith(f".model{atomic_dirs.STAGING_MARK}{os.getpid()}@")
        assert remove_leftovers(tmp_path) == []  # a save in progress is not a leftover
        assert staging.is_dir()
