"""What the example's scripts may delete, and who is serving a models directory.

Standard library only. Everything the scripts generate in a directory the user shares with them
(``models/``, ``train_data/``) is listed by name in that directory's manifest, a hidden file
beside it (``.models.generated.json``), written before the entry itself. A script replaces or
removes an entry only when the manifest lists it: a model the user trained, or data the user
put in ``train_data/``, is never listed, so never touched. An entry in the way that the
manifest does not list is refused with one line that says what to do.

Every runtime the launcher starts holds a shared ``flock`` on ``.models.serving.lock`` (beside
``models/``) while it serves; ``--purge_dirs`` needs the lock alone, so it refuses while
another runtime serves the same ``models/``. The kernel drops the lock when a runtime exits,
however it exits.
"""

# Standard
from typing import Iterable, List, Set
import fcntl
import json
import os
import pathlib
import shutil
import tempfile

# Beside the directory, not in it: the runtime tries to load every entry of models/ as a model.
MANIFEST_SUFFIX = ".generated.json"
LOCK_SUFFIX = ".serving.lock"
# What a dump directory (protos/) holds: anything else in it is not ours to replace.
DUMP_SUFFIXES = (".proto", ".json")


class NotGenerated(Exception):
    """An entry is in the way that the example did not generate; the message says what to do."""


class ModelsDirBusy(Exception):
    """Another runtime serves (or another launcher is recreating) the same models directory."""


def generated_names(directory: pathlib.Path) -> Set[str]:
    """The names of ``directory`` that the example generated (empty without a manifest)."""
    manifest = manifest_path(directory)
    if not manifest.is_file():
        return set()
    return set(json.loads(manifest.read_text())["generated"])


def record_generated(directory: pathlib.Path, names: Iterable[str]) -> None:
    """Add ``names`` to ``directory``'s manifest (written atomically)."""
    _write_manifest(directory, generated_names(directory) | set(names))


def forget_generated(directory: pathlib.Path, names: Iterable[str]) -> None:
    """Take ``names`` off ``directory``'s manifest (entries that were never made)."""
    _write_manifest(directory, generated_names(directory) - set(names))


def check_replaceable(directory: pathlib.Path, names: Iterable[str], script: str) -> None:
    """Raise NotGenerated when one of ``names`` exists in ``directory`` but is not generated."""
    directory = pathlib.Path(directory).absolute()
    ours = generated_names(directory)
    foreign = [name for name in names if name not in ours and _exists(directory / name)]
    if foreign:
        paths = ", ".join(str(directory / name) for name in foreign)
        raise NotGenerated(
            f"{script} would replace {paths}, which this example did not generate (not listed in "
            f"{manifest_path(directory)}): move {'it' if len(foreign) == 1 else 'them'} "
            "elsewhere, or delete it yourself, then run again"
        )


def remove_generated(directory: pathlib.Path, names: Iterable[str] = None) -> List[pathlib.Path]:
    """Delete the generated entries ``names`` (default: every one the manifest lists) and take
    them off the manifest. Raises NotGenerated, deleting nothing, when one of ``names`` exists
    but is not listed. Returns the paths removed.
    """
    directory = pathlib.Path(directory)
    names = sorted(generated_names(directory) if names is None else names)
    check_replaceable(directory, names, "this script")
    removed = []
    for name in names:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif _exists(path):
            path.unlink()
        else:
            continue
        removed.append(path)
    if names and manifest_path(directory).is_file():
        forget_generated(directory, names)
    return removed


def publish_generated(directory: pathlib.Path, staging: pathlib.Path) -> List[pathlib.Path]:
    """Move every entry of ``staging`` into ``directory``, replacing generated ones of the same
    name; raise NotGenerated, moving nothing, when one is in the way that is not generated.

    Each entry is listed in the manifest before it appears, so an interrupted run leaves
    nothing that a later run would take for the user's. Returns the paths that were replaced.
    """
    directory, staging = pathlib.Path(directory), pathlib.Path(staging)
    names = sorted(entry.name for entry in staging.iterdir())
    replaced = remove_generated(directory, names)
    record_generated(directory, names)
    for name in names:
        os.replace(staging / name, directory / name)
    return replaced


def check_dump_target(directory: pathlib.Path) -> None:
    """Raise NotGenerated when ``directory`` holds something a proto dump would not write."""
    directory = pathlib.Path(directory).absolute()
    if not directory.exists():
        return
    if not directory.is_dir():
        raise NotGenerated(f"{directory} is not a directory: choose another --output-dir")
    others = [p.name for p in directory.iterdir() if p.suffix not in DUMP_SUFFIXES or p.is_dir()]
    if others:
        raise NotGenerated(
            f"{directory} holds {', '.join(sorted(others)[:3])}{' ...' if len(others) > 3 else ''}"
            ", which a dump of .proto files would delete: choose another --output-dir, or move "
            "those files away"
        )


def hold_models_dir(models_dir: pathlib.Path, alone: bool):
    """Lock ``models_dir`` for this process's lifetime: shared to serve, ``alone`` to purge.

    Returns the open lock file: keep a reference for as long as the lock must hold (closing it,
    or exiting, releases it); None, to serve, where nothing beside ``models_dir`` can be
    written. ``downgrade`` turns a lock held alone into a shared one. Raises ModelsDirBusy with
    the one line to show when the lock cannot be had at once.
    """
    models_dir = pathlib.Path(models_dir).absolute()
    lock_path = _beside(models_dir, LOCK_SUFFIX)
    try:
        lock_file = open(lock_path, "a+")  # pylint: disable=consider-using-with
    except OSError as err:
        if not alone:
            # Nothing beside models/ can be written (a container whose only writable directory
            # is models/): no purge can run from here either, so there is nothing to guard.
            return None
        raise ModelsDirBusy(
            f"cannot write {lock_path} ({err.strerror}): run --purge_dirs from a directory you "
            "can write to"
        ) from None
    try:
        fcntl.flock(lock_file, (fcntl.LOCK_EX if alone else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        if alone:
            raise ModelsDirBusy(
                f"another runtime serves {models_dir}: stop it (Ctrl-C in its terminal) before "
                "--purge_dirs, or start this one without --purge_dirs to share its models"
            ) from None
        raise ModelsDirBusy(
            f"another launcher is recreating {models_dir} (--purge_dirs): wait until it serves, "
            "then run again"
        ) from None
    return lock_file


def check_not_served(models_dir: pathlib.Path) -> None:
    """Raise ModelsDirBusy when a runtime serves ``models_dir`` now; creates nothing."""
    if _beside(models_dir, LOCK_SUFFIX).exists():
        hold_models_dir(models_dir, alone=True).close()


def downgrade(lock_file) -> None:
    """Let other runtimes share ``models/`` from now on (see hold_models_dir)."""
    fcntl.flock(lock_file, fcntl.LOCK_SH)


def manifest_path(directory: pathlib.Path) -> pathlib.Path:
    """Where the manifest of ``directory`` lives: ``models/`` -> ``.models.generated.json``."""
    return _beside(directory, MANIFEST_SUFFIX)


def _beside(directory: pathlib.Path, suffix: str) -> pathlib.Path:
    directory = pathlib.Path(directory).absolute()
    return directory.parent / f".{directory.name}{suffix}"


def _exists(path: pathlib.Path) -> bool:
    return path.exists() or path.is_symlink()


def _write_manifest(directory: pathlib.Path, names: Set[str]) -> None:
    text = json.dumps(
        {
            "about": "Entries of this directory that the caikit vision example generated and "
            "may replace; anything not listed here is never deleted by its scripts.",
            "generated": sorted(names),
        },
        indent=2,
    )
    target = manifest_path(directory)
    with tempfile.NamedTemporaryFile(
        "w", dir=target.parent, prefix=f"{target.name}.", suffix=".tmp", delete=False
    ) as staging:
        staging.write(text + "\n")
    os.replace(staging.name, target)
