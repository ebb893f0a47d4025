"""Write a directory somewhere else first, then swap it into place with renames.

A reader of the target (the runtime's lazy model loader, a user's editor) either sees the old
complete directory or the new complete one, never a half-written mix. Staging directories are
created beside the target so that the final rename stays on one file system.
"""

# Standard
from contextlib import contextmanager
from typing import Iterator, List
import os
import pathlib
import shutil
import tempfile

# Name parts of the hidden directories these functions leave only if the process dies mid-way.
STAGING_MARK = ".staging-"
RETIRED_MARK = ".old-"


@contextmanager
def staged_directory(target: os.PathLike) -> Iterator[pathlib.Path]:
    """Yield an empty staging directory beside ``target``; on success it replaces ``target``.

    If the body raises, the staging directory is deleted and ``target`` is left as it was.
    """
    target = pathlib.Path(os.path.abspath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(
        tempfile.mkdtemp(prefix=f".{target.name}{STAGING_MARK}", dir=target.parent)
    )
    # mkdtemp makes the directory private (0700); the result should read like any other.
    os.chmod(staging, 0o755)
    try:
        yield staging
        replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_directory(source: pathlib.Path, target: pathlib.Path) -> None:
    """Rename ``source`` to ``target``; an existing ``target`` is moved aside, then deleted."""
    if not os.path.exists(target):
        os.rename(source, target)
        return
    retired = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}{RETIRED_MARK}", dir=target.parent))
    os.rename(target, retired / "previous")
    os.rename(source, target)
    shutil.rmtree(retired, ignore_errors=True)


def remove_leftovers(parent: os.PathLike) -> List[pathlib.Path]:
    """Delete staging/retired directories in ``parent`` left by a process that was killed.

    Only for a moment when nothing else writes into ``parent`` (e.g. before a runtime starts).
    """
    removed = []
    for entry in pathlib.Path(parent).glob(".*"):
        if entry.is_dir() and (STAGING_MARK in entry.name or RETIRED_MARK in entry.name):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
