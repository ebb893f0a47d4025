"""Write a directory (or a file) somewhere else first, then publish it with one atomic rename.

The library's one "write beside, then rename" helper: saved models, generated data sets and
dumped protos use ``staged_directory``, label files ``write_file_atomically``.

A reader of the target (the runtime's lazy model loader, a user's editor) sees either no
directory / the old complete one, or the new complete one, never a half-written mix. Staging
directories are created beside the target so that the final rename stays on one file system.

Two ways to publish:

* ``replace=False`` (saved models): the target must not exist, and the check is the rename
  itself, not a check-then-rename: two processes (two runtimes on one ``models/``) saving the
  same name cannot both succeed, and the loser gets ``DirectoryExistsError`` with the existing
  directory untouched. On Linux this is ``renameat2(RENAME_NOREPLACE)``. Where that is missing
  (other systems, file systems that answer EINVAL such as some NFS), the fallback is
  ``mkdir(target)`` (atomic, fails if *anything* has that name, even an empty directory), then
  ``rename(staging, target)`` onto that empty directory of ours, which POSIX allows only while it
  is empty: anything another process puts into it in between makes the rename fail instead. The
  fallback's limits: for that instant the target is an empty directory (a loader finds no model
  there and retries), and a process killed between the two steps leaves an empty directory that
  blocks the name until someone removes it. It never replaces a directory it did not create,
  nor one with content.
* ``replace=True`` (generated data, proto dumps): an existing target is swapped out with
  ``renameat2(RENAME_EXCHANGE)`` (no moment without a target) or, where missing, moved aside
  then replaced (a moment without one), and deleted afterwards.
"""

# Standard
from contextlib import contextmanager, suppress
from typing import Iterator, List
import ctypes
import errno
import os
import pathlib
import shutil
import socket
import tempfile

# Name parts of the hidden directories these functions leave only if the process dies mid-way.
STAGING_MARK = ".staging-"
RETIRED_MARK = ".old-"

# renameat2(2) flags and "relative to the working directory" (linux/fcntl.h, linux/fs.h).
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
# What renameat2 answers where the kernel or the file system does not support the flags.
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def _load_renameat2():
    """glibc's renameat2 (2.28+), or None: musl, macOS and old glibc take the fallback."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


# Module-level so that tests can set it to None and exercise the fallback.
_renameat2 = _load_renameat2()


class DirectoryExistsError(FileExistsError):
    """The target of a no-replace publish exists: nothing was changed."""


@contextmanager
def staged_directory(target: os.PathLike, replace: bool = True) -> Iterator[pathlib.Path]:
    """Yield an empty staging directory beside ``target``; on success it becomes ``target``.

    ``replace`` says what happens when ``target`` exists by the end: swapped out (True) or left
    untouched with ``DirectoryExistsError`` raised (False). If the body raises, or publishing
    fails, the staging directory is deleted and ``target`` is left as it was.
    """
    target = pathlib.Path(os.path.abspath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(
        tempfile.mkdtemp(prefix=_hidden_prefix(target, STAGING_MARK), dir=target.parent)
    )
    # mkdtemp makes the directory private (0700); the result should read like any other.
    os.chmod(staging, 0o755)
    try:
        yield staging
        if replace:
            replace_directory(staging, target)
        else:
            publish_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish_directory(source: pathlib.Path, target: pathlib.Path) -> None:
    """Rename ``source`` to ``target`` only if nothing named ``target`` exists, atomically.

    Raises ``DirectoryExistsError`` (``source`` left in place) when ``target`` exists, whether
    it was there before or another process published it a moment earlier.
    """
    if not _rename_with_flags(source, target, _RENAME_NOREPLACE):
        _publish_by_claim(source, target)


def _publish_by_claim(source: pathlib.Path, target: pathlib.Path) -> None:
    """The fallback of ``publish_directory``: claim the name with mkdir, then rename onto it."""
    try:
        os.mkdir(target)
    except FileExistsError as err:
        raise _exists_error(target) from err
    try:
        # Replaces only the empty directory made just above; fails if anything was put in it.
        os.rename(source, target)
    except OSError as err:
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise _exists_error(target) from err
        with suppress(OSError):
            os.rmdir(target)  # our claim, still empty: give the name back
        raise


def replace_directory(source: pathlib.Path, target: pathlib.Path) -> None:
    """Rename ``source`` to ``target``; an existing ``target`` is swapped out, then deleted."""
    if not os.path.lexists(target):
        try:
            publish_directory(source, target)
            return
        except DirectoryExistsError:
            pass  # created meanwhile: replace it like any existing target
    if _rename_with_flags(source, target, _RENAME_EXCHANGE):
        # ``source`` now holds the previous target.
        shutil.rmtree(source, ignore_errors=True)
        return
    retired = pathlib.Path(
        tempfile.mkdtemp(prefix=_hidden_prefix(target, RETIRED_MARK), dir=target.parent)
    )
    os.rename(target, retired / "previous")
    os.rename(source, target)
    shutil.rmtree(retired, ignore_errors=True)


def remove_leftovers(parent: os.PathLike) -> List[pathlib.Path]:
    """Delete staging/retired directories in ``parent`` whose writer is gone.

    A directory's name records the host and process that made it: one of a process still
    running on this host (another runtime saving into a shared ``models/``) is kept, as is one
    made on another host, which this process cannot check.
    """
    removed = []
    for entry in pathlib.Path(parent).glob(".*"):
        if not entry.is_dir() or entry.is_symlink():
            continue
        if STAGING_MARK not in entry.name and RETIRED_MARK not in entry.name:
            continue
        if _writer_may_be_alive(entry.name):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _hidden_prefix(target: pathlib.Path, mark: str) -> str:
    """``.<name><mark><pid>@<host>-``: what ``remove_leftovers`` reads to find the writer."""
    # The name is only a hint for a human: cut so that a long one stays within NAME_MAX.
    return f".{target.name[:64]}{mark}{os.getpid()}@{socket.gethostname()}-"


def _writer_may_be_alive(name: str) -> bool:
    mark = STAGING_MARK if STAGING_MARK in name else RETIRED_MARK
    owner = name.rsplit(mark, 1)[1]
    pid_text, at, rest = owner.partition("@")
    if not at or not pid_text.isdigit():
        return False  # no owner recorded (an older version's leftover)
    host = rest.rsplit("-", 1)[0]
    if host != socket.gethostname():
        return True
    return _process_exists(int(pid_text))


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _rename_with_flags(source: pathlib.Path, target: pathlib.Path, flags: int) -> bool:
    """renameat2 with ``flags``: True when done, False when unsupported here (use a fallback)."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    if code == errno.EEXIST:
        raise _exists_error(target)
    raise OSError(code, os.strerror(code), str(source), None, str(target))


def _exists_error(target: pathlib.Path) -> DirectoryExistsError:
    return DirectoryExistsError(
        f"{target} already exists and is never replaced: choose another name, or delete it first"
    )


def write_file_atomically(path: str, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` beside it first, then rename over it."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temp_path = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as temp_file:
            temp_file.write(text)
        # mkstemp creates the file private to its owner; a label file is ordinary data.
        os.chmod(temp_path, 0o644)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise
